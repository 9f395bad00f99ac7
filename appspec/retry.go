package appspec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Exit-code and retry-count bounds accepted in retry rules. Task status
// codes are 16-bit in Scalebox (spec §4.1).
const (
	minExitCode = -32768
	maxExitCode = 32767
	maxRetries  = 65535
)

// RetryRules says how often a failed task is retried, by exit code
// (spec §4.3). A retry is an additional attempt: total attempts = 1 + n.
type RetryRules struct {
	Exact      map[int]int // exit code → retries; nil when there are none
	Default    int         // retries for any other non-zero code ("*")
	HasDefault bool        // a "*" rule is present
}

// ParseRetryRules parses the retry_rules parameter. Accepted forms:
//
//	"['1:3','2:2','*']"    Scalebox list (quotes optional, count defaults to 1)
//	"['91','92:3']"        91 → 1 retry, 92 → 3
//	"['*:3','134:9']"      exact codes win over "*"
//	"[91, \"92:3\"]"       JSON list
//	"1:3,2:2"              bare list
//	"{\"1\":3,\"2\":2}"    JSON map (the planned Scalebox format)
//	""                     no rules
//
// Codes are integers in [-32768, 32767] (negative system codes such as -100
// are allowed) or "*"; counts are integers in [0, 65535]. A code given
// twice is an error.
func ParseRetryRules(s string) (RetryRules, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return RetryRules{}, nil
	}
	isMap := false
	switch {
	case strings.HasPrefix(s, "["):
		if !strings.HasSuffix(s, "]") {
			return RetryRules{}, fmt.Errorf("parse retry rules: missing closing ']'")
		}
		s = s[1 : len(s)-1]
	case strings.HasPrefix(s, "{"):
		if !strings.HasSuffix(s, "}") {
			return RetryRules{}, fmt.Errorf("parse retry rules: missing closing '}'")
		}
		s, isMap = s[1:len(s)-1], true
	}
	items, err := splitItems(s)
	if err != nil {
		return RetryRules{}, fmt.Errorf("parse retry rules: %w", err)
	}
	var r RetryRules
	for _, it := range items {
		var code, count string
		shown := it
		if isMap {
			k, v, ok := cutUnquoted(it, ':')
			if !ok {
				return RetryRules{}, fmt.Errorf("bad rule %q: want \"code\": count", it)
			}
			code, count = unquote(k), unquote(v)
			if count == "" {
				return RetryRules{}, fmt.Errorf("bad rule %q: missing count", it)
			}
		} else {
			rule := unquote(it)
			shown = rule
			var ok bool
			code, count, ok = strings.Cut(rule, ":")
			if !ok {
				count = "1"
			}
			code, count = strings.TrimSpace(code), strings.TrimSpace(count)
		}
		if err := r.add(shown, code, count); err != nil {
			return RetryRules{}, err
		}
	}
	return r, nil
}

func (r *RetryRules) add(item, code, count string) error {
	c, codeErr := strconv.Atoi(code)
	if code != "*" && (codeErr != nil || c < minExitCode || c > maxExitCode) {
		return fmt.Errorf("bad rule %q: exit code must be \"*\" or an integer in [%d, %d]", item, minExitCode, maxExitCode)
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 0 || n > maxRetries {
		return fmt.Errorf("bad rule %q: count must be an integer in [0, %d]", item, maxRetries)
	}
	if code == "*" {
		if r.HasDefault {
			return fmt.Errorf("bad rule %q: \"*\" given twice", item)
		}
		r.Default, r.HasDefault = n, true
		return nil
	}
	if c == 0 {
		return fmt.Errorf("bad rule %q: exit code 0 means success and is never retried", item)
	}
	if _, dup := r.Exact[c]; dup {
		return fmt.Errorf("bad rule %q: exit code %d given twice", item, c)
	}
	if r.Exact == nil {
		r.Exact = map[int]int{}
	}
	r.Exact[c] = n
	return nil
}

// MaxRetries returns how many retries a task that exited with code gets:
// the exact rule if there is one, else the "*" rule, else 0. Code 0
// (success) always gets 0.
func (r RetryRules) MaxRetries(code int) int {
	if code == 0 {
		return 0
	}
	if n, ok := r.Exact[code]; ok {
		return n
	}
	if r.HasDefault {
		return r.Default
	}
	return 0
}

// IsZero reports whether there are no rules at all.
func (r RetryRules) IsZero() bool { return len(r.Exact) == 0 && !r.HasDefault }

// String renders the rules in Scalebox form, e.g. ['1:3','2:2','*:1'].
func (r RetryRules) String() string {
	parts := make([]string, 0, len(r.Exact)+1)
	for _, c := range r.codes() {
		parts = append(parts, fmt.Sprintf("'%d:%d'", c, r.Exact[c]))
	}
	if r.HasDefault {
		parts = append(parts, fmt.Sprintf("'*:%d'", r.Default))
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func (r RetryRules) codes() []int {
	codes := make([]int, 0, len(r.Exact))
	for c := range r.Exact {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	return codes
}

// MarshalJSON encodes the rules as the JSON map form, codes ascending and
// "*" last: {"1":3,"2":2,"*":1}.
func (r RetryRules) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, c := range r.codes() {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%d", strconv.Itoa(c), r.Exact[c])
	}
	if r.HasDefault {
		if len(r.Exact) > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "\"*\":%d", r.Default)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON accepts the map form written by MarshalJSON, a JSON string
// holding any form ParseRetryRules accepts, or null.
func (r *RetryRules) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if bytes.Equal(data, []byte("null")) {
		*r = RetryRules{}
		return nil
	}
	src := string(data)
	if len(data) > 0 && data[0] == '"' {
		if err := json.Unmarshal(data, &src); err != nil {
			return fmt.Errorf("decode retry rules: %w", err)
		}
	} else if len(data) > 0 && data[0] == '{' {
		var m map[string]int
		if err := json.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("decode retry rules: %w", err)
		}
	}
	rr, err := ParseRetryRules(src)
	if err != nil {
		return fmt.Errorf("decode retry rules: %w", err)
	}
	*r = rr
	return nil
}

// splitItems splits a comma-separated list, honouring '…' and "…" quotes
// (a backslash escapes the next character inside double quotes). Empty
// items (e.g. a trailing comma) are dropped.
func splitItems(s string) ([]string, error) {
	var items []string
	var quote byte
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == ',':
			items = appendItem(items, s[start:i])
			start = i + 1
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	return appendItem(items, s[start:]), nil
}

func appendItem(items []string, it string) []string {
	if it = strings.TrimSpace(it); it != "" {
		items = append(items, it)
	}
	return items
}

// cutUnquoted splits s at the first sep outside quotes.
func cutUnquoted(s string, sep byte) (before, after string, ok bool) {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == sep:
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// unquote trims s and removes one pair of matching surrounding quotes.
func unquote(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && (s[0] == '\'' || s[0] == '"') && s[len(s)-1] == s[0] {
		if s[0] == '"' {
			if u, err := strconv.Unquote(s); err == nil {
				return strings.TrimSpace(u)
			}
		}
		return strings.TrimSpace(s[1 : len(s)-1])
	}
	return s
}
