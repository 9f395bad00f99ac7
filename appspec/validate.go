package appspec

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/scalebox-hpc/scalebox/schema"
)

var compiled struct {
	once sync.Once
	sch  *jsonschema.Schema
	err  error
}

// appSchema compiles schema/app.schema.json once.
func appSchema() (*jsonschema.Schema, error) {
	compiled.once.Do(func() {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema.AppSchema()))
		if err != nil {
			compiled.err = fmt.Errorf("decode app schema: %w", err)
			return
		}
		c := jsonschema.NewCompiler()
		if err := c.AddResource(schema.AppSchemaURL, doc); err != nil {
			compiled.err = fmt.Errorf("add app schema: %w", err)
			return
		}
		compiled.sch, compiled.err = c.Compile(schema.AppSchemaURL)
		if compiled.err != nil {
			compiled.err = fmt.Errorf("compile app schema: %w", compiled.err)
		}
	})
	return compiled.sch, compiled.err
}

// schemaIssue is one leaf violation found by the JSON Schema validator.
type schemaIssue struct {
	ptr string
	msg string
}

// validate checks doc against the schema and reports every violation at
// the YAML position of the offending value. It returns the JSON pointers
// that had violations, and their ancestors, so semantic checks can skip
// those values.
func (p *parser) validate(sch *jsonschema.Schema, doc any) map[string]bool {
	bad := map[string]bool{}
	err := sch.Validate(doc)
	if err == nil {
		return bad
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		p.errorf(nil, "", "validate: %v", err)
		return bad
	}
	var issues []schemaIssue
	collectIssues(ve, &issues)
	for _, is := range issues {
		// Mark the value and all its ancestors, so that builder.failed is
		// a single lookup.
		for ptr := is.ptr; !bad[ptr]; {
			bad[ptr] = true
			i := strings.LastIndexByte(ptr, '/')
			if i < 0 {
				break
			}
			ptr = ptr[:i]
		}
		n := p.nodeAt(is.ptr)
		if n == nil {
			p.errorf(nil, "", "%s", is.msg)
			continue
		}
		p.errorf(n.pos(), n.path, "%s", is.msg)
	}
	return bad
}

// nodeAt finds the node of a JSON pointer, or of its nearest ancestor.
func (p *parser) nodeAt(ptr string) *node {
	for {
		if n, ok := p.byPtr[ptr]; ok {
			return n
		}
		i := strings.LastIndexByte(ptr, '/')
		if i < 0 {
			return nil
		}
		ptr = ptr[:i]
	}
}

// collectIssues flattens the validator's error tree into leaf issues.
// anyOf/oneOf failures become one issue listing the alternatives. Issues
// that the walker or the semantic checks report better are dropped:
// unknown keys (with a "did you mean"), module names and "no modules".
func collectIssues(ve *jsonschema.ValidationError, out *[]schemaIssue) {
	ptr := pointer(ve.InstanceLocation)
	switch k := ve.ErrorKind.(type) {
	case *kind.AdditionalProperties:
		return
	case *kind.PropertyNames:
		if ptr == "/"+keyModules {
			return
		}
		*out = append(*out, schemaIssue{ptr, message(ve.ErrorKind)})
		return
	case *kind.Required:
		if ptr == "" && len(k.Missing) == 1 && k.Missing[0] == keyModules {
			return
		}
	case *kind.MinProperties:
		if ptr == "/"+keyModules {
			return
		}
	case *kind.AnyOf, *kind.OneOf:
		var alts []string
		for _, c := range ve.Causes {
			var sub []schemaIssue
			collectIssues(c, &sub)
			for _, s := range sub {
				alts = append(alts, s.msg)
			}
		}
		msg := message(ve.ErrorKind)
		if len(alts) > 0 {
			msg = "matches none of the allowed forms: " + strings.Join(alts, "; ")
		}
		*out = append(*out, schemaIssue{ptr, msg})
		return
	}
	if len(ve.Causes) > 0 {
		for _, c := range ve.Causes {
			collectIssues(c, out)
		}
		return
	}
	*out = append(*out, schemaIssue{ptr, message(ve.ErrorKind)})
}

// message renders an error kind without its instance location.
func message(k jsonschema.ErrorKind) string {
	s := (&jsonschema.ValidationError{ErrorKind: k}).Error()
	return strings.TrimPrefix(s, "at '': ")
}

func pointer(tokens []string) string {
	var sb strings.Builder
	for _, t := range tokens {
		sb.WriteByte('/')
		sb.WriteString(escapePtr(t))
	}
	return sb.String()
}
