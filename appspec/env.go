package appspec

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// ReadEnvFile parses a scalebox.env style file: KEY=VALUE lines, blank
// lines and # comments, an optional leading "export ", and values that may
// be 'single quoted' (literal), "double quoted" (with \" \\ \n \t \$
// escapes) or bare (trimmed; " #" starts a comment). Values are not
// expanded: ${X} inside a value stays literal. A later line for the same
// key wins. Syntax errors are reported for every bad line as an
// [ErrorList] naming file:line.
func ReadEnvFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read env file: %w", err)
	}
	return parseEnv(path, data)
}

func parseEnv(file string, data []byte) (map[string]string, error) {
	vars := map[string]string{}
	var errs ErrorList
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := strings.TrimSpace(strings.TrimPrefix(sc.Text(), "\ufeff"))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fail := func(format string, args ...any) {
			errs = append(errs, &Error{File: file, Line: lineNo, Msg: fmt.Sprintf(format, args...)})
		}
		if rest, ok := strings.CutPrefix(line, "export"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			line = strings.TrimSpace(rest)
		}
		key, raw, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok {
			fail("expected KEY=VALUE, got %q", truncate(line, 40))
			continue
		}
		if !isVarName(key) {
			fail("bad variable name %q", truncate(key, 40))
			continue
		}
		val, err := envValue(strings.TrimSpace(raw))
		if err != nil {
			fail("%s: %v", key, err)
			continue
		}
		vars[key] = val
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read env file %s: %w", file, err)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return vars, nil
}

// envValue decodes the right-hand side of an env-file assignment.
func envValue(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	switch s[0] {
	case '\'':
		end := strings.IndexByte(s[1:], '\'')
		if end < 0 {
			return "", fmt.Errorf("unterminated single quote")
		}
		if err := trailing(s[end+2:]); err != nil {
			return "", err
		}
		return s[1 : end+1], nil
	case '"':
		var sb strings.Builder
		for i := 1; i < len(s); i++ {
			c := s[i]
			switch {
			case c == '"':
				if err := trailing(s[i+1:]); err != nil {
					return "", err
				}
				return sb.String(), nil
			case c == '\\' && i+1 < len(s):
				i++
				switch s[i] {
				case 'n':
					sb.WriteByte('\n')
				case 't':
					sb.WriteByte('\t')
				case '"', '\\', '$', '`':
					sb.WriteByte(s[i])
				default:
					sb.WriteByte('\\')
					sb.WriteByte(s[i])
				}
			default:
				sb.WriteByte(c)
			}
		}
		return "", fmt.Errorf("unterminated double quote")
	}
	// Bare value: a '#' preceded by white space starts a comment.
	for i := 1; i < len(s); i++ {
		if s[i] == '#' && (s[i-1] == ' ' || s[i-1] == '\t') {
			s = s[:i]
			break
		}
	}
	return strings.TrimSpace(s), nil
}

// trailing accepts only white space or a comment after a closing quote.
func trailing(s string) error {
	s = strings.TrimSpace(s)
	if s == "" || s[0] == '#' {
		return nil
	}
	return fmt.Errorf("unexpected %q after closing quote", truncate(s, 20))
}

func isVarName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// virtualVars are left untouched when undefined: the engine resolves them
// per module later (spec §2.1: CLUSTER_DATA_DIR = the module's cluster
// base_data_dir).
var virtualVars = map[string]bool{"CLUSTER_DATA_DIR": true}

// expand replaces ${NAME} in s with vars[NAME]. "$${" is an escape for a
// literal "${". A lone "$" or "$NAME" is left as is (only the braced form is
// a template, so shell snippets such as $HOME or $1 pass through). The
// expansion is single-pass: a value that itself contains ${X} is not
// expanded again. It returns the names of undefined variables, and a
// syntax error for an unterminated or malformed reference.
func expand(s string, vars map[string]string) (out string, undefined []string, err error) {
	if !strings.Contains(s, "${") {
		return s, nil, nil
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' {
			sb.WriteByte(c)
			continue
		}
		if strings.HasPrefix(s[i:], "$${") {
			sb.WriteString("${")
			i += 2
			continue
		}
		if i+1 >= len(s) || s[i+1] != '{' {
			sb.WriteByte(c)
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", nil, fmt.Errorf("unterminated variable reference %q", truncate(s[i:], 30))
		}
		name := s[i+2 : i+2+end]
		if !isVarName(name) {
			return "", nil, fmt.Errorf("bad variable reference %q (only ${NAME} is supported)", truncate(s[i:i+3+end], 40))
		}
		v, ok := vars[name]
		switch {
		case ok:
			sb.WriteString(v)
		case virtualVars[name]:
			sb.WriteString(s[i : i+3+end])
		default:
			undefined = append(undefined, name)
		}
		i += 2 + end
	}
	return sb.String(), undefined, nil
}
