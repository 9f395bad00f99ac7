package batch

import (
	"regexp"
	"strings"
)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// IsEnvName reports whether s may be exported as a shell variable.
func IsEnvName(s string) bool { return envName.MatchString(s) }

// ShellQuote quotes one word for a POSIX shell: safe words as they are,
// anything else in single quotes, each embedded quote written as the four
// characters quote, backslash, quote, quote. Job scripts write every
// environment value and command word through it.
func ShellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
