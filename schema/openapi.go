package schema

import _ "embed"

//go:embed openapi.yaml
var openAPI []byte

// OpenAPI returns the OpenAPI 3.1 document (YAML) of the broker's REST API.
// The returned slice is a copy; callers may modify it.
func OpenAPI() []byte {
	out := make([]byte, len(openAPI))
	copy(out, openAPI)
	return out
}
