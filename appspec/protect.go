package appspec

import (
	"bytes"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Scalebox substituted ${VAR} in the file text before parsing YAML, so
// templates were also written unquoted inside flow collections
// ("arguments: {code_path: ${PWD}/code}", "environments: [A=${A}]"), where
// '{' and '}' are YAML indicators. We expand after parsing instead (to keep
// positions and to treat values as data), so before parsing every ${NAME}
// is rewritten to $⦃NAME⦄ — the same number of characters, so lines and
// columns do not move — and the brackets are put back in every scalar of
// the parsed tree. Input that already contains ⦃ or ⦄ is left alone.
const (
	openMark  = "⦃" // U+2983 WHITE CURLY BRACKET
	closeMark = "⦄" // U+2984
)

var templateRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// protectTemplates hides ${NAME} from the YAML parser. It reports whether
// anything was rewritten.
func protectTemplates(data []byte) ([]byte, bool) {
	if !bytes.Contains(data, []byte("${")) || bytes.Contains(data, []byte(openMark)) || bytes.Contains(data, []byte(closeMark)) {
		return data, false
	}
	return templateRE.ReplaceAll(data, []byte("$"+openMark+"${1}"+closeMark)), true
}

var unprotector = strings.NewReplacer("$"+openMark, "${", closeMark, "}")

// restoreTemplates undoes protectTemplates in every scalar and key.
func restoreTemplates(n *yaml.Node, depth int) {
	if n == nil || depth > 10*maxDepth {
		return
	}
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, openMark) {
		n.Value = unprotector.Replace(n.Value)
	}
	for _, c := range n.Content {
		restoreTemplates(c, depth+1)
	}
}
