package appspec

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one problem found in an app definition or a variable file.
type Error struct {
	File   string // file name as given to Parse / Load
	Line   int    // 1-based; 0 if unknown
	Column int    // 1-based; 0 if unknown
	Path   string // key path as written in the file, e.g. modules.calc.slots[0]
	Msg    string
}

// Error formats the error as file:line:col: path: msg.
func (e *Error) Error() string {
	var sb strings.Builder
	sb.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&sb, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&sb, ":%d", e.Column)
		}
	}
	if e.Path != "" {
		sb.WriteString(": ")
		sb.WriteString(e.Path)
	}
	sb.WriteString(": ")
	sb.WriteString(e.Msg)
	return sb.String()
}

// ErrorList is every problem found in one file, ordered by position.
type ErrorList []*Error

// Error joins the errors with newlines.
func (l ErrorList) Error() string {
	parts := make([]string, len(l))
	for i, e := range l {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// Unwrap lets errors.As find the individual *Error values.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// sortErrors orders errors by position (stable, so equal positions keep
// the order in which they were found).
func sortErrors(l ErrorList) {
	sort.SliceStable(l, func(i, j int) bool {
		if l[i].Line != l[j].Line {
			return l[i].Line < l[j].Line
		}
		return l[i].Column < l[j].Column
	})
}

// suggest returns " (did you mean "x"?)" for the candidate closest to s, or
// "" when none is close enough. Close means a small edit distance or, for
// inputs of three or more characters, a prefix relation (mem → memory).
// Ties go to the longer common prefix, then alphabetical order.
func suggest(s string, candidates []string) string {
	ls := strings.ToLower(s)
	best, bestDist, bestPrefix := "", -1, 0
	limit := max(2, len(s)/3)
	for _, c := range candidates {
		lc := strings.ToLower(c)
		d := editDistance(ls, lc)
		if d > limit {
			if len(ls) < 3 || !(strings.HasPrefix(lc, ls) || strings.HasPrefix(ls, lc)) {
				continue
			}
			d = limit + 1 // a prefix match ranks after every close match
		}
		pre := commonPrefix(ls, lc)
		if bestDist < 0 || d < bestDist || (d == bestDist && (pre > bestPrefix || (pre == bestPrefix && c < best))) {
			best, bestDist, bestPrefix = c, d, pre
		}
	}
	if bestDist < 0 {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// editDistance is the optimal-string-alignment distance (Levenshtein plus
// adjacent transpositions) between a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 { // keys are short; bound the work
		if a == b {
			return 0
		}
		return max(len(ra), len(rb))
	}
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
