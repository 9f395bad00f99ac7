package workdir

import (
	"bytes"
	"strconv"
	"strings"
)

// parseExtra parses extra-attributes.txt: a JSON object (values keep their
// JSON types), or lines "key=value" / "key: value" (values are strings;
// surrounding quotes are removed; blank lines and "#" comments skipped).
// A repeated key keeps its last value.
func parseExtra(data []byte, name string, p *problems) map[string]any {
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		return decodeJSONObject(t, name, p)
	}
	var out map[string]any
	eachLine(data, func(n int, line string) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			return
		}
		i := strings.IndexAny(line, "=:")
		if i < 0 {
			p.addf(name, n, "want key=value or key: value, got %q", clip(line, 60))
			return
		}
		k, v := strings.TrimSpace(line[:i]), strings.TrimSpace(line[i+1:])
		if k == "" {
			p.addf(name, n, "empty key")
			return
		}
		if out == nil {
			out = map[string]any{}
		}
		out[k] = unquote(v)
	})
	return out
}

// unquote strips one pair of matching surrounding quotes; "…" is unquoted
// with Go/JSON escapes when it can be.
func unquote(v string) string {
	if len(v) < 2 || v[0] != v[len(v)-1] || (v[0] != '"' && v[0] != '\'') {
		return v
	}
	if v[0] == '"' {
		if s, err := strconv.Unquote(v); err == nil {
			return s
		}
	}
	return v[1 : len(v)-1]
}

// parseExtraYAML parses extra-attrs.yaml, a YAML mapping.
func parseExtraYAML(data []byte, name string, p *problems) map[string]any {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	return decodeYAMLObject(data, name, p)
}

func mergeExtra(dst, src map[string]any) map[string]any {
	if dst == nil {
		return src
	}
	for k, v := range src {
		dst[k] = v
	}
	return dst
}
