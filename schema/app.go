package schema

import _ "embed"

//go:embed app.schema.json
var appSchema []byte

// AppSchemaURL is the $id of the app.yaml JSON Schema.
const AppSchemaURL = "https://github.com/scalebox-hpc/scalebox/schema/app.schema.json"

// AppSchema returns the JSON Schema (draft 2020-12) of the canonical
// app.yaml format. The returned slice is a copy; callers may modify it.
func AppSchema() []byte {
	out := make([]byte, len(appSchema))
	copy(out, appSchema)
	return out
}

//go:embed site.schema.json
var siteSchema []byte

// SiteSchemaURL is the $id of the site definition's JSON Schema.
const SiteSchemaURL = "https://github.com/scalebox-hpc/scalebox/schema/site.schema.json"

// SiteSchema returns the JSON Schema of site definitions (a copy).
func SiteSchema() []byte { return append([]byte(nil), siteSchema...) }
