package appspec

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// Limits that keep hostile input (alias bombs, deep nesting) cheap.
const (
	maxNodes = 200_000
	maxDepth = 100
)

// node is one value of the app document after expansion, alias rewriting
// and type coercion, with the YAML position it came from.
type node struct {
	y    *yaml.Node // value node (position of the value)
	key  *yaml.Node // key node; nil for the root and sequence items
	path string     // key path as written, e.g. jobs.calc.hosts[0]
	ptr  string     // JSON pointer in the canonical document

	kind  yaml.Kind // ScalarNode, MappingNode or SequenceNode
	raw   string    // scalar: text after expansion (JSON text for converted collections)
	val   any       // scalar: coerced value; nil means unset (null or empty)
	keys  []string  // mapping: canonical keys in file order
	m     map[string]*node
	items []*node
}

// pos returns the best position to report a problem with n: the key for
// collections (the value of a block collection starts on the next line),
// the value for scalars, unless the value is empty.
func (n *node) pos() *yaml.Node {
	if n.key != nil && (n.kind != yaml.ScalarNode || n.val == nil) {
		return n.key
	}
	return n.y
}

// child returns the member key of a mapping node, or nil.
func (n *node) child(key string) *node {
	if n == nil || n.kind != yaml.MappingNode {
		return nil
	}
	return n.m[key]
}

// unset reports whether n is absent, null or empty.
func (n *node) unset() bool {
	return n == nil || (n.kind == yaml.ScalarNode && n.val == nil)
}

// toAny converts n to the JSON-like value validated by the schema, leaving
// out unset members and items.
func (n *node) toAny() any {
	switch n.kind {
	case yaml.MappingNode:
		out := make(map[string]any, len(n.keys))
		for _, k := range n.keys {
			if c := n.m[k]; !c.unset() {
				out[k] = c.toAny()
			}
		}
		return out
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.items))
		for _, c := range n.items {
			if !c.unset() {
				out = append(out, c.toAny())
			}
		}
		return out
	default:
		return n.val
	}
}

// rawString is n as a Scalebox parameter string: the scalar text, or the
// compact JSON of a collection.
func (n *node) rawString() string {
	if n.kind == yaml.ScalarNode {
		return n.raw
	}
	b, err := json.Marshal(n.toAny())
	if err != nil {
		return ""
	}
	return string(b)
}

// parser holds the state of one Parse call.
type parser struct {
	file     string
	vars     map[string]string
	errs     ErrorList
	budget   int  // values left to visit (alias expansion guard)
	tooLarge bool // the budget ran out and that was reported
	byPtr    map[string]*node
}

func (p *parser) errorf(at *yaml.Node, path, format string, args ...any) {
	e := &Error{File: p.file, Path: path, Msg: fmt.Sprintf(format, args...)}
	if at != nil {
		e.Line, e.Column = at.Line, at.Column
	}
	p.errs = append(p.errs, e)
}

// walk converts y (found under key, described by schema sch, which may be
// nil for free-form data) into a node. It returns nil when y cannot be
// represented; the problem has then been reported.
func (p *parser) walk(y, key *yaml.Node, sch *jsonschema.Schema, path, ptr string, depth int) *node {
	p.budget--
	if p.budget < 0 {
		if !p.tooLarge {
			p.tooLarge = true
			p.errorf(y, path, "document too large (more than %d values after alias expansion)", maxNodes)
		}
		return nil
	}
	if depth > maxDepth {
		p.errorf(y, path, "nesting deeper than %d levels", maxDepth)
		return nil
	}
	y = deref(y)
	if y == nil {
		p.errorf(key, path, "bad YAML alias")
		return nil
	}
	sch = resolveRef(sch)
	want := typesOf(sch)
	var n *node
	switch y.Kind {
	case yaml.ScalarNode:
		if want.has("array") && !want.has("string") && !p.isEmptyScalar(y) {
			// A single value where a list is expected (hosts: h0:4).
			n = &node{y: y, key: key, path: path, ptr: ptr, kind: yaml.SequenceNode}
			if it := p.walk(y, nil, itemsOf(sch), path+"[0]", ptr+"/0", depth+1); it != nil {
				n.items = append(n.items, it)
			}
		} else {
			n = p.scalar(y, key, want, path, ptr)
		}
	case yaml.MappingNode:
		n = p.mapping(y, key, sch, path, ptr, depth)
		// Module environments may be written as a map {K: V}; the schema
		// (the only array-typed property called environments) wants [K=V].
		if n != nil && want.has("array") && !want.has("object") && strings.HasSuffix(ptr, "/"+keyEnvironments) {
			n = envMapToList(n)
		}
	case yaml.SequenceNode:
		n = &node{y: y, key: key, path: path, ptr: ptr, kind: yaml.SequenceNode}
		items := itemsOf(sch)
		for i, c := range y.Content {
			it := p.walk(c, nil, items, fmt.Sprintf("%s[%d]", path, i), ptr+"/"+strconv.Itoa(len(n.items)), depth+1)
			if it != nil && !(it.kind == yaml.ScalarNode && it.val == nil) {
				n.items = append(n.items, it)
			}
		}
	default:
		p.errorf(y, path, "unsupported YAML node")
		return nil
	}
	if n == nil {
		return nil
	}
	p.byPtr[ptr] = n
	return n
}

// isEmptyScalar reports whether y expands to nothing.
func (p *parser) isEmptyScalar(y *yaml.Node) bool {
	s, _, err := expand(y.Value, p.vars)
	return err == nil && strings.TrimSpace(s) == "" || (y.Style == 0 && y.ShortTag() == "!!null")
}

// scalar expands and coerces one scalar.
func (p *parser) scalar(y, key *yaml.Node, want typeSet, path, ptr string) *node {
	text := p.expandText(y, path)
	tag := y.ShortTag()
	if text != y.Value && y.Style == 0 {
		// Re-resolve the expanded text of a plain scalar as YAML would.
		tag = (&yaml.Node{Kind: yaml.ScalarNode, Value: text}).ShortTag()
	}
	n := &node{y: y, key: key, path: path, ptr: ptr, kind: yaml.ScalarNode, raw: text}
	if tag == "!!null" {
		n.raw = ""
	}
	n.val = coerce(natural(tag, text), n.raw, want)
	return n
}

// expandText expands y.Value, reporting undefined variables.
func (p *parser) expandText(y *yaml.Node, path string) string {
	text, undefined, err := expand(y.Value, p.vars)
	if err != nil {
		p.errorf(y, path, "%v", err)
		return y.Value
	}
	for _, name := range undefined {
		p.errorf(y, path, "undefined variable ${%s}", name)
	}
	return text
}

// stringValued are the object kinds whose values Scalebox keeps as strings.
var stringValued = map[string]bool{kindAppParams: true, kindArgs: true, kindParams: true}

// pair is one key/value of a mapping after merge-key resolution.
type pair struct{ k, v *yaml.Node }

// mapping walks an object, rewriting aliases and rejecting unknown keys.
func (p *parser) mapping(y, key *yaml.Node, sch *jsonschema.Schema, path, ptr string, depth int) *node {
	n := &node{y: y, key: key, path: path, ptr: ptr, kind: yaml.MappingNode, m: map[string]*node{}}
	kind := schemaKind(sch)
	table := aliases[kind]
	firstKey := map[string]*yaml.Node{} // canonical → key node that set it
	written := map[string]string{}      // canonical → key as written
	for _, kv := range p.pairs(y, path, 0) {
		k := deref(kv.k)
		if k == nil || k.Kind != yaml.ScalarNode {
			p.errorf(kv.k, path, "mapping key must be a scalar")
			continue
		}
		name := p.expandText(k, path)
		if name == "" {
			p.errorf(k, path, "empty key")
			continue
		}
		childPath := name
		if path != "" {
			childPath = path + "." + name
		}
		canon := name
		if a, ok := table[name]; ok {
			canon = a
		}
		if prev, dup := firstKey[canon]; dup {
			if written[canon] == name {
				p.errorf(k, childPath, "duplicate key %q (first at line %d)", name, prev.Line)
			} else {
				p.errorf(k, childPath, "%q and %q (line %d) are the same key: %s", name, written[canon], prev.Line, aliasNote(canon, name, written[canon]))
			}
			continue
		}
		childSch, known := propertySchema(sch, canon)
		if !known {
			p.errorf(k, childPath, "unknown key %q%s", name, suggest(name, knownKeys(sch, table)))
			continue
		}
		firstKey[canon], written[canon] = k, name
		c := p.walk(kv.v, k, childSch, childPath, ptr+"/"+escapePtr(canon), depth+1)
		if c == nil {
			continue
		}
		if want := typesOf(resolveRef(childSch)); stringValued[kind] && c.kind != yaml.ScalarNode &&
			want.has("string") && !want.has("array") && !want.has("object") {
			// Scalebox parameters and arguments are strings: an unquoted
			// JSON map such as node_progress_gap: {"n-[01]": 2} is kept as
			// its JSON text.
			c = &node{y: c.y, key: k, path: childPath, ptr: c.ptr, kind: yaml.ScalarNode, raw: c.rawString()}
			c.val = c.raw
			p.byPtr[c.ptr] = c
		}
		n.keys = append(n.keys, canon)
		n.m[canon] = c
	}
	return n
}

func aliasNote(canon, a, b string) string {
	old := a
	if a == canon {
		old = b
	}
	return fmt.Sprintf("%q is the old name of %q; give only one", old, canon)
}

// pairs lists the key/value pairs of a mapping, resolving YAML merge keys
// (<<: *anchor); explicit keys override merged ones.
func (p *parser) pairs(y *yaml.Node, path string, depth int) []pair {
	var merged, explicit []pair
	for i := 0; i+1 < len(y.Content); i += 2 {
		k, v := y.Content[i], y.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			if depth > maxDepth {
				p.errorf(k, path, "merge keys nested too deeply")
				continue
			}
			srcs := []*yaml.Node{deref(v)}
			if srcs[0] != nil && srcs[0].Kind == yaml.SequenceNode {
				srcs = srcs[0].Content
			}
			for _, s := range srcs {
				s = deref(s)
				if s == nil || s.Kind != yaml.MappingNode {
					p.errorf(k, path, "merge key << needs a mapping or a list of mappings")
					continue
				}
				p.budget -= len(s.Content) / 2
				if p.budget < 0 {
					if !p.tooLarge {
						p.tooLarge = true
						p.errorf(k, path, "document too large (more than %d values after alias expansion)", maxNodes)
					}
					return explicit
				}
				merged = append(merged, p.pairs(s, path, depth+1)...)
			}
			continue
		}
		explicit = append(explicit, pair{k, v})
	}
	if len(merged) == 0 {
		return explicit
	}
	seen := map[string]bool{}
	for _, kv := range explicit {
		if k := deref(kv.k); k != nil {
			seen[k.Value] = true
		}
	}
	out := make([]pair, 0, len(merged)+len(explicit))
	for _, kv := range merged {
		k := deref(kv.k)
		if k != nil && seen[k.Value] {
			continue
		}
		if k != nil {
			seen[k.Value] = true
		}
		out = append(out, kv)
	}
	return append(out, explicit...)
}

// envMapToList turns environments: {K: V} into the list form [K=V].
func envMapToList(n *node) *node {
	out := &node{y: n.y, key: n.key, path: n.path, ptr: n.ptr, kind: yaml.SequenceNode}
	for i, k := range n.keys {
		c := n.m[k]
		s := k + "=" + c.rawString()
		out.items = append(out.items, &node{
			y: c.y, key: c.key, path: c.path, ptr: n.ptr + "/" + strconv.Itoa(i),
			kind: yaml.ScalarNode, raw: s, val: s,
		})
	}
	return out
}

// deref follows YAML aliases.
func deref(y *yaml.Node) *yaml.Node {
	for i := 0; y != nil && y.Kind == yaml.AliasNode; i++ {
		if i > 100 {
			return nil
		}
		y = y.Alias
	}
	return y
}

// natural decodes scalar text by its resolved YAML tag. Integers become
// int64, floats float64 (non-finite ones stay text), booleans bool, null
// nil; everything else (timestamps, binary, strings) is the text.
func natural(tag, text string) any {
	switch tag {
	case "!!null":
		return nil
	case "!!bool", "!!int", "!!float":
		n := &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: text}
		switch tag {
		case "!!bool":
			var b bool
			if n.Decode(&b) == nil {
				return b
			}
		case "!!int":
			var i int64
			if n.Decode(&i) == nil {
				return i
			}
			var f float64
			if n.Decode(&f) == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
				return f
			}
		case "!!float":
			var f float64
			if n.Decode(&f) == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
				return f
			}
		}
	}
	return text
}

// coerce converts a scalar to the type the schema wants, using the raw
// text: any scalar becomes its text where only a string is allowed (so
// start_task: 0 is "0" and version: 1.0 is "1.0"), and numeric text
// becomes a number where only a number is allowed (task_batch_size:
// '${N}'). Empty text is unset.
func coerce(v any, raw string, want typeSet) any {
	if v == nil || raw == "" {
		return nil
	}
	if want == 0 || want.has(jsonType(v)) {
		return v
	}
	if want.has("string") {
		return raw
	}
	if s, ok := v.(string); ok {
		t := strings.TrimSpace(s)
		if want.has("integer") || want.has("number") {
			if i, err := strconv.ParseInt(t, 10, 64); err == nil {
				return i
			}
		}
		if want.has("number") {
			if f, err := strconv.ParseFloat(t, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
				return f
			}
		}
	}
	return v
}

func jsonType(v any) string {
	switch v := v.(type) {
	case bool:
		return "boolean"
	case int64:
		return "integer"
	case float64:
		if v == math.Trunc(v) {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	}
	return ""
}

// typeSet is a set of JSON Schema type names.
type typeSet uint8

var typeBits = map[string]typeSet{
	"null": 1, "boolean": 2, "integer": 4, "number": 8, "string": 16, "array": 32, "object": 64,
}

func (t typeSet) has(name string) bool {
	b := typeBits[name]
	if name == "integer" {
		b |= typeBits["number"] // an integer is also a number
	}
	return b != 0 && t&b != 0
}

func typesOf(s *jsonschema.Schema) typeSet {
	if s == nil || s.Types == nil {
		return 0
	}
	var t typeSet
	for _, name := range s.Types.ToStrings() {
		t |= typeBits[name]
	}
	return t
}

// resolveRef follows $ref chains. The app schema only uses $ref alone (plus
// annotations), so the referenced schema describes the value completely.
func resolveRef(s *jsonschema.Schema) *jsonschema.Schema {
	for i := 0; s != nil && s.Ref != nil && i < 32; i++ {
		s = s.Ref
	}
	return s
}

// itemsOf returns the schema of the items of an array schema.
func itemsOf(s *jsonschema.Schema) *jsonschema.Schema {
	if s == nil {
		return nil
	}
	if s.Items2020 != nil {
		return s.Items2020
	}
	if it, ok := s.Items.(*jsonschema.Schema); ok {
		return it
	}
	return nil
}

// propertySchema returns the schema of member key of object schema s and
// whether the key is allowed at all. A nil s allows anything.
func propertySchema(s *jsonschema.Schema, key string) (*jsonschema.Schema, bool) {
	if s == nil {
		return nil, true
	}
	if c, ok := s.Properties[key]; ok {
		return c, true
	}
	for re, c := range s.PatternProperties {
		if re.MatchString(key) {
			return c, true
		}
	}
	switch ap := s.AdditionalProperties.(type) {
	case *jsonschema.Schema:
		return ap, true
	case bool:
		return nil, ap
	}
	return nil, true
}

// knownKeys lists the canonical and alias keys of an object schema, for
// suggestions.
func knownKeys(s *jsonschema.Schema, table map[string]string) []string {
	var out []string
	if s != nil {
		for k := range s.Properties {
			out = append(out, k)
		}
	}
	for k := range table {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// schemaKind names the definition an object schema came from (the JSON
// pointer fragment of its location), to pick its alias table.
func schemaKind(s *jsonschema.Schema) string {
	if s == nil {
		return "-"
	}
	_, frag, ok := strings.Cut(s.Location, "#")
	if !ok {
		return ""
	}
	return frag
}

func escapePtr(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}
