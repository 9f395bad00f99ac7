package broker

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/schema"
	"github.com/scalebox-hpc/scalebox/store"
)

// The tests in this file keep schema/openapi.yaml and the router honest with
// each other: same routes, same path parameters, same roles, same wire
// types, and a document whose references all resolve.

var oaMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

// oaDoc parses the embedded OpenAPI document.
func oaDoc(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	require.NoError(t, yaml.Unmarshal(schema.OpenAPI(), &doc), "schema/openapi.yaml does not parse")
	require.NotEmpty(t, doc)
	v, _ := doc["openapi"].(string)
	require.True(t, strings.HasPrefix(v, "3.1."), "openapi version %q, want 3.1.x", v)
	return doc
}

func oaMap(t *testing.T, v any, what string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	require.True(t, ok, "%s: want a mapping, got %T", what, v)
	return m
}

func oaStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// oaOperation is one (method, path) of the document.
type oaOperation struct {
	method string // upper case
	path   string
	item   map[string]any // the path item (for path-level parameters)
	op     map[string]any
}

func (o oaOperation) key() string { return o.method + " " + o.path }

func oaOperations(t *testing.T, doc map[string]any) []oaOperation {
	t.Helper()
	var out []oaOperation
	for path, item := range oaMap(t, doc["paths"], "paths") {
		im := oaMap(t, item, path)
		for _, m := range oaMethods {
			if op, ok := im[m]; ok {
				out = append(out, oaOperation{method: strings.ToUpper(m), path: path, item: im, op: oaMap(t, op, m+" "+path)})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out
}

// oaResolve follows a local "$ref" (a JSON pointer into the document).
func oaResolve(doc map[string]any, ref string) (any, bool) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, false
	}
	var cur any = doc
	for _, tok := range strings.Split(ref[2:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[tok]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// oaDeref resolves a node that may be a {"$ref": …} to what it names.
func oaDeref(t *testing.T, doc map[string]any, v any) map[string]any {
	t.Helper()
	m := oaMap(t, v, "node")
	for range 10 {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		target, ok := oaResolve(doc, ref)
		require.True(t, ok, "unresolved $ref %q", ref)
		m = oaMap(t, target, ref)
	}
	t.Fatalf("$ref chain too long")
	return nil
}

// oaRouter is the broker's router without a store: enough to walk routes
// and to exercise authentication, which happens before any store access.
func oaRouter(t *testing.T, cfg Config) (*Broker, chi.Routes) {
	t.Helper()
	b := New(nil, cfg, nil)
	rs, ok := b.Handler().(chi.Routes)
	require.True(t, ok, "Handler() is not a chi router")
	return b, rs
}

func TestOpenAPIRoutesMatchRouter(t *testing.T) {
	doc := oaDoc(t)
	_, rs := oaRouter(t, Config{})

	var routed []string
	require.NoError(t, chi.Walk(rs, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routed = append(routed, method+" "+route)
		return nil
	}))
	require.NotEmpty(t, routed)

	var documented []string
	for _, o := range oaOperations(t, doc) {
		documented = append(documented, o.key())
	}
	sort.Strings(routed)
	sort.Strings(documented)

	for _, r := range routed {
		require.Contains(t, documented, r, "route %s is not in schema/openapi.yaml", r)
	}
	for _, d := range documented {
		require.Contains(t, routed, d, "schema/openapi.yaml documents %s, which the router does not serve", d)
	}
	require.Equal(t, routed, documented)
}

func TestOpenAPIRefsResolve(t *testing.T) {
	doc := oaDoc(t)
	used := map[string]bool{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch n := v.(type) {
		case map[string]any:
			for k, c := range n {
				if k == "$ref" {
					ref, ok := c.(string)
					require.True(t, ok, "%s: $ref is not a string", path)
					require.True(t, strings.HasPrefix(ref, "#/components/"), "%s: $ref %q is not a local component", path, ref)
					_, ok = oaResolve(doc, ref)
					require.True(t, ok, "%s: $ref %q does not resolve", path, ref)
					used[ref] = true
					continue
				}
				walk(path+"/"+k, c)
			}
		case []any:
			for i, c := range n {
				walk(path+"/"+strconv.Itoa(i), c)
			}
		}
	}
	walk("#", doc)
	require.NotEmpty(t, used)

	// Every component is used: no dead definitions.
	comps := oaMap(t, doc["components"], "components")
	for _, kind := range []string{"schemas", "responses", "parameters"} {
		for name := range oaMap(t, comps[kind], kind) {
			ref := "#/components/" + kind + "/" + name
			require.True(t, used[ref], "%s is never referenced", ref)
		}
	}
}

var oaParamRE = regexp.MustCompile(`\{([^}/]+)\}`)

func TestOpenAPIOperations(t *testing.T) {
	doc := oaDoc(t)
	comps := oaMap(t, doc["components"], "components")
	schemes := oaMap(t, comps["securitySchemes"], "securitySchemes")
	bearer := oaMap(t, schemes["bearerAuth"], "bearerAuth")
	require.Equal(t, "http", bearer["type"])
	require.Equal(t, "bearer", bearer["scheme"])
	require.NotEmpty(t, doc["security"], "document-level security must require bearerAuth")

	errorStatuses := map[int]bool{http.StatusInternalServerError: true}
	for _, s := range statusOf {
		errorStatuses[s] = true
	}

	ids := map[string]string{}
	for _, o := range oaOperations(t, doc) {
		what := o.key()

		id, _ := o.op["operationId"].(string)
		require.NotEmpty(t, id, "%s: no operationId", what)
		require.Empty(t, ids[id], "%s: operationId %q also used by %s", what, id, ids[id])
		ids[id] = what
		require.NotEmpty(t, o.op["summary"], "%s: no summary", what)

		// Path parameters: exactly the route's {names}, all required.
		want := map[string]bool{}
		for _, m := range oaParamRE.FindAllStringSubmatch(o.path, -1) {
			want[m[1]] = true
		}
		got := map[string]bool{}
		var params []any
		if l, ok := o.item["parameters"].([]any); ok {
			params = append(params, l...)
		}
		if l, ok := o.op["parameters"].([]any); ok {
			params = append(params, l...)
		}
		for _, p := range params {
			pm := oaDeref(t, doc, p)
			require.NotEmpty(t, pm["name"], "%s: parameter without a name", what)
			require.NotNil(t, pm["schema"], "%s: parameter %v without a schema", what, pm["name"])
			if pm["in"] == "path" {
				name := pm["name"].(string)
				require.Equal(t, true, pm["required"], "%s: path parameter %s must be required", what, name)
				got[name] = true
			}
		}
		require.Equal(t, want, got, "%s: path parameters", what)

		// Responses: one 2xx; error statuses are the ones writeError uses,
		// each with the ErrorBody schema.
		resps := oaMap(t, o.op["responses"], what+" responses")
		ok2xx := 0
		for code, r := range resps {
			n, err := strconv.Atoi(code)
			require.NoError(t, err, "%s: response code %q", what, code)
			rm := oaDeref(t, doc, r)
			require.NotEmpty(t, rm["description"], "%s %s: no description", what, code)
			if n < 300 {
				ok2xx++
				require.Contains(t, []int{http.StatusOK, http.StatusCreated}, n, "%s: success status %d", what, n)
				continue
			}
			require.True(t, errorStatuses[n], "%s: %d is not a status writeError produces", what, n)
			content := oaMap(t, rm["content"], what+" "+code+" content")
			js := oaMap(t, content["application/json"], what+" "+code+" json")
			require.Equal(t, "#/components/schemas/ErrorBody", oaMap(t, js["schema"], "schema")["$ref"], "%s %s: errors use ErrorBody", what, code)
		}
		require.Equal(t, 1, ok2xx, "%s: want exactly one success response", what)

		// Authentication and roles.
		if strings.HasPrefix(o.path, api.Prefix+"/") {
			roles := oaStrings(o.op["x-scalebox-roles"])
			require.NotEmpty(t, roles, "%s: x-scalebox-roles missing", what)
			for _, r := range roles {
				require.Contains(t, []string{store.RoleAdmin, store.RoleUser, store.RolePilot}, r, "%s: unknown role", what)
			}
			desc, _ := o.op["description"].(string)
			require.True(t, strings.HasPrefix(desc, "Roles: "), "%s: description must start with the roles", what)
			require.NotContains(t, o.op, "security", "%s: API routes use the document's bearerAuth", what)
			for _, c := range []string{"401", "403", "500"} {
				require.Contains(t, resps, c, "%s: every authenticated route can answer %s", what, c)
			}
		} else {
			sec, ok := o.op["security"].([]any)
			require.True(t, ok && len(sec) == 0, "%s: unauthenticated routes declare security: []", what)
		}
	}
}

// TestOpenAPIRolesMatchRouter checks each operation's x-scalebox-roles
// against what wrap actually lets through, with auth on and tokens cached
// (no store: allowed requests fail later, which is fine here).
func TestOpenAPIRolesMatchRouter(t *testing.T) {
	doc := oaDoc(t)
	b, _ := oaRouter(t, Config{Auth: true})
	secrets := map[string]string{store.RoleAdmin: "sbx_test_admin", store.RoleUser: "sbx_test_user", store.RolePilot: "sbx_test_pilot"}
	for role, secret := range secrets {
		tok := &store.Token{Hash: HashToken(secret), Name: "test " + role, Role: role}
		if role == store.RolePilot {
			tok.Site = "local"
		}
		b.tokens[tok.Hash] = tok
	}
	h := b.Handler()
	fill := strings.NewReplacer("{app}", "1", "{task}", "1", "{pilot}", "1", "{name}", "x", "{site}", "local")

	serve := func(o oaOperation, secret string) (int, api.Error) {
		var body *strings.Reader
		if _, ok := o.op["requestBody"]; ok {
			body = strings.NewReader(`{}`)
		} else {
			body = strings.NewReader(``)
		}
		req := httptest.NewRequest(o.method, fill.Replace(o.path), body)
		if secret != "" {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var eb api.ErrorBody
		if rec.Code >= 400 {
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &eb), "%s: error body %q", o.key(), rec.Body.String())
			require.NotNil(t, eb.Error, "%s: error body %q", o.key(), rec.Body.String())
			return rec.Code, *eb.Error
		}
		return rec.Code, api.Error{}
	}
	refused := func(code int, e api.Error) bool {
		return code == http.StatusForbidden && e.Code == api.CodeForbidden && strings.Contains(e.Message, "token may not do this")
	}

	for _, o := range oaOperations(t, doc) {
		if !strings.HasPrefix(o.path, api.Prefix+"/") {
			code, _ := serve(o, "")
			require.Equal(t, http.StatusOK, code, "%s must answer without a token", o.key())
			continue
		}
		code, e := serve(o, "")
		require.Equal(t, http.StatusUnauthorized, code, "%s without a token", o.key())
		require.Equal(t, api.CodeUnauthorized, e.Code)

		roles := oaStrings(o.op["x-scalebox-roles"])
		for _, role := range []string{store.RoleAdmin, store.RoleUser, store.RolePilot} {
			code, e := serve(o, secrets[role])
			if role == store.RoleAdmin || slices.Contains(roles, role) {
				require.False(t, refused(code, e), "%s: documented for %v, but a %s token is refused", o.key(), roles, role)
			} else {
				require.True(t, refused(code, e), "%s: documented for %v, but a %s token is let through (%d %s)", o.key(), roles, role, code, e.Code)
			}
		}
	}
}

// TestOpenAPIErrorCodes checks the ErrorCode enum against the API's codes.
func TestOpenAPIErrorCodes(t *testing.T) {
	doc := oaDoc(t)
	schemas := oaMap(t, oaMap(t, doc["components"], "components")["schemas"], "schemas")
	enum := oaStrings(oaMap(t, schemas["ErrorCode"], "ErrorCode")["enum"])
	want := []string{api.CodeInternal}
	for c := range statusOf {
		want = append(want, c)
	}
	require.ElementsMatch(t, want, enum)

	enumOf := func(name string) []string { return oaStrings(oaMap(t, schemas[name], name)["enum"]) }
	require.ElementsMatch(t, []string{store.AppInitial, store.AppRunning, store.AppPaused, store.AppFinished, store.AppCancelled}, enumOf("AppStatus"))
	require.ElementsMatch(t, []string{store.PilotActive, store.PilotDraining, store.PilotLost, store.PilotGone, store.PilotQuarantined}, enumOf("PilotStatus"))
	attempt := oaMap(t, oaMap(t, schemas["Attempt"], "Attempt")["properties"], "Attempt.properties")
	require.ElementsMatch(t, []string{store.KindApp, store.KindInfra, store.KindReleased, store.KindFenced}, oaStrings(oaMap(t, attempt["kind"], "kind")["enum"]))
	for _, name := range []string{"TokenRequest", "TokenResponse"} {
		props := oaMap(t, oaMap(t, schemas[name], name)["properties"], name)
		require.ElementsMatch(t, []string{store.RoleAdmin, store.RoleUser, store.RolePilot}, oaStrings(oaMap(t, props["role"], "role")["enum"]), name)
	}
}

// oaWireTypes are the component schemas that mirror api/types.go.
var oaWireTypes = map[string]reflect.Type{
	"Error":                  reflect.TypeFor[api.Error](),
	"ErrorBody":              reflect.TypeFor[api.ErrorBody](),
	"AppCreateRequest":       reflect.TypeFor[api.AppCreateRequest](),
	"App":                    reflect.TypeFor[api.App](),
	"Module":                 reflect.TypeFor[api.Module](),
	"AppStatusRequest":       reflect.TypeFor[api.AppStatusRequest](),
	"TaskInput":              reflect.TypeFor[api.TaskInput](),
	"TaskAddRequest":         reflect.TypeFor[api.TaskAddRequest](),
	"TaskAddResponse":        reflect.TypeFor[api.TaskAddResponse](),
	"TaskActivateRequest":    reflect.TypeFor[api.TaskActivateRequest](),
	"TaskActivateResponse":   reflect.TypeFor[api.TaskActivateResponse](),
	"Task":                   reflect.TypeFor[api.Task](),
	"TaskList":               reflect.TypeFor[api.TaskList](),
	"TaskDetail":             reflect.TypeFor[api.TaskDetail](),
	"LabeledTime":            reflect.TypeFor[api.LabeledTime](),
	"Attempt":                reflect.TypeFor[api.Attempt](),
	"PilotRegistration":      reflect.TypeFor[api.PilotRegistration](),
	"Pilot":                  reflect.TypeFor[api.Pilot](),
	"PilotRegistered":        reflect.TypeFor[api.PilotRegistered](),
	"SlotRequest":            reflect.TypeFor[api.SlotRequest](),
	"LeaseRequest":           reflect.TypeFor[api.LeaseRequest](),
	"LeasedTask":             reflect.TypeFor[api.LeasedTask](),
	"LeaseResponse":          reflect.TypeFor[api.LeaseResponse](),
	"TaskAttempt":            reflect.TypeFor[api.TaskAttempt](),
	"HeartbeatRequest":       reflect.TypeFor[api.HeartbeatRequest](),
	"HeartbeatResponse":      reflect.TypeFor[api.HeartbeatResponse](),
	"Message":                reflect.TypeFor[api.Message](),
	"Result":                 reflect.TypeFor[api.Result](),
	"CompleteRequest":        reflect.TypeFor[api.CompleteRequest](),
	"CompleteResult":         reflect.TypeFor[api.CompleteResult](),
	"CompleteResponse":       reflect.TypeFor[api.CompleteResponse](),
	"Semaphore":              reflect.TypeFor[api.Semaphore](),
	"SemaphoreCreateRequest": reflect.TypeFor[api.SemaphoreCreateRequest](),
	"SemaphoreValue":         reflect.TypeFor[api.SemaphoreValue](),
	"SemaphoreIncrement":     reflect.TypeFor[api.SemaphoreIncrement](),
	"Variable":               reflect.TypeFor[api.Variable](),
	"VariableValue":          reflect.TypeFor[api.VariableValue](),
	"Site":                   reflect.TypeFor[api.Site](),
	"SiteProvisioning":       reflect.TypeFor[api.SiteProvisioning](),
	"PilotJob":               reflect.TypeFor[api.PilotJob](),
	"SiteSubmitRequest":      reflect.TypeFor[api.SiteSubmitRequest](),
	"TokenRequest":           reflect.TypeFor[api.TokenRequest](),
	"TokenResponse":          reflect.TypeFor[api.TokenResponse](),
}

// TestOpenAPISchemasMirrorWireTypes checks every struct of api/types.go
// against its component schema: the same JSON names, required exactly when
// not omitempty/omitzero, and compatible types.
func TestOpenAPISchemasMirrorWireTypes(t *testing.T) {
	doc := oaDoc(t)
	schemas := oaMap(t, oaMap(t, doc["components"], "components")["schemas"], "schemas")

	// Every struct type declared in api/types.go is covered.
	f, err := parser.ParseFile(token.NewFileSet(), "../api/types.go", nil, parser.SkipObjectResolution)
	require.NoError(t, err)
	var declared []string
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, s := range gd.Specs {
			ts := s.(*ast.TypeSpec)
			if _, ok := ts.Type.(*ast.StructType); ok && ts.Name.IsExported() {
				declared = append(declared, ts.Name.Name)
			}
		}
	}
	var mapped []string
	for name := range oaWireTypes {
		mapped = append(mapped, name)
	}
	require.ElementsMatch(t, declared, mapped, "api/types.go structs vs oaWireTypes (add new wire types to openapi.yaml and here)")

	for name, typ := range oaWireTypes {
		s, ok := schemas[name]
		require.True(t, ok, "components.schemas.%s missing", name)
		oaCheckStruct(t, doc, name, typ, oaMap(t, s, name))
	}
}

func oaCheckStruct(t *testing.T, doc map[string]any, name string, typ reflect.Type, s map[string]any) {
	t.Helper()
	require.Equal(t, "object", s["type"], "%s: type", name)
	props := map[string]any{}
	if p, ok := s["properties"]; ok {
		props = oaMap(t, p, name+".properties")
	}
	wantProps := map[string]bool{}
	var wantReq []string
	for i := range typ.NumField() {
		fld := typ.Field(i)
		if !fld.IsExported() {
			continue
		}
		require.False(t, fld.Anonymous, "%s.%s: embedded fields are not handled", name, fld.Name)
		tag := fld.Tag.Get("json")
		if tag == "-" {
			continue
		}
		jname, opts, _ := strings.Cut(tag, ",")
		if jname == "" {
			jname = fld.Name
		}
		wantProps[jname] = true
		optional := false
		for _, o := range strings.Split(opts, ",") {
			optional = optional || o == "omitempty" || o == "omitzero"
		}
		if !optional {
			wantReq = append(wantReq, jname)
		}
		ps, ok := props[jname]
		require.True(t, ok, "%s: property %q (field %s) missing", name, jname, fld.Name)
		oaCheckType(t, doc, name+"."+jname, fld.Type, oaMap(t, ps, name+"."+jname))
	}
	for p := range props {
		require.True(t, wantProps[p], "%s: property %q is not in the Go type", name, p)
	}
	require.ElementsMatch(t, wantReq, oaStrings(s["required"]), "%s: required", name)
}

func oaTypes(s map[string]any) []string {
	switch v := s["type"].(type) {
	case string:
		return []string{v}
	case []any:
		return oaStrings(v)
	}
	return nil
}

var (
	oaRawMessage = reflect.TypeFor[json.RawMessage]()
	oaTime       = reflect.TypeFor[time.Time]()
)

func oaCheckType(t *testing.T, doc map[string]any, what string, typ reflect.Type, s map[string]any) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if ref, ok := s["$ref"].(string); ok {
		target := strings.TrimPrefix(ref, "#/components/schemas/")
		if typ.Kind() == reflect.Struct && typ != oaTime {
			require.Equal(t, typ.Name(), target, "%s: $ref", what)
			return
		}
		_, isWire := oaWireTypes[target]
		require.False(t, isWire, "%s: $ref %s for a non-struct %s", what, ref, typ)
		s = oaDeref(t, doc, s)
	}
	types := oaTypes(s)
	one := func(want string) {
		t.Helper()
		require.Equal(t, []string{want}, types, "%s: type for Go %s", what, typ)
	}
	switch {
	case typ == oaRawMessage:
		require.Empty(t, types, "%s: json.RawMessage is any JSON (no type)", what)
		return
	case typ == oaTime:
		one("string")
		require.Equal(t, "date-time", s["format"], "%s: time.Time format", what)
		return
	}
	switch typ.Kind() {
	case reflect.String:
		one("string")
	case reflect.Int64:
		one("integer")
		require.Equal(t, "int64", s["format"], "%s: int64 format", what)
	case reflect.Int, reflect.Int32:
		one("integer")
		require.NotEqual(t, "int32", s["format"], "%s: Go int is 64-bit", what)
	case reflect.Float64, reflect.Float32:
		one("number")
	case reflect.Bool:
		one("boolean")
	case reflect.Interface:
		require.Empty(t, types, "%s: any is any JSON (no type)", what)
	case reflect.Slice:
		require.Contains(t, types, "array", "%s: type for Go %s", what, typ)
		for _, x := range types {
			require.Contains(t, []string{"array", "null"}, x, "%s", what)
		}
		oaCheckType(t, doc, what+"[]", typ.Elem(), oaMap(t, s["items"], what+".items"))
	case reflect.Map:
		require.Contains(t, types, "object", "%s: type for Go %s", what, typ)
		for _, x := range types {
			require.Contains(t, []string{"object", "null"}, x, "%s", what)
		}
		require.Equal(t, reflect.String, typ.Key().Kind(), "%s: map keys", what)
		ap := s["additionalProperties"]
		if typ.Elem().Kind() == reflect.Interface {
			if b, ok := ap.(bool); ok {
				require.True(t, b, "%s: additionalProperties", what)
			} else {
				require.Empty(t, oaTypes(oaMap(t, ap, what+".additionalProperties")), "%s: values are any JSON", what)
			}
			return
		}
		oaCheckType(t, doc, what+"{}", typ.Elem(), oaMap(t, ap, what+".additionalProperties"))
	case reflect.Struct:
		t.Fatalf("%s: Go struct %s must be a $ref to its component", what, typ)
	default:
		t.Fatalf("%s: unhandled Go kind %s", what, typ.Kind())
	}
}
