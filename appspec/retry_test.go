package appspec

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseRetryRulesSpecExamples(t *testing.T) {
	t.Parallel()
	// spec §4.3 / §10.3: ['1:3','2:2','*'] → 1:3, 2:2, other non-zero: 1.
	r, err := ParseRetryRules("['1:3','2:2','*']")
	require.NoError(t, err)
	require.Equal(t, 3, r.MaxRetries(1))
	require.Equal(t, 2, r.MaxRetries(2))
	require.Equal(t, 1, r.MaxRetries(5))
	require.Equal(t, 1, r.MaxRetries(124))
	require.Equal(t, 0, r.MaxRetries(0))

	// ['91','92:3'] → 91 once, 92 three times, nothing else.
	r, err = ParseRetryRules("['91','92:3']")
	require.NoError(t, err)
	require.Equal(t, 1, r.MaxRetries(91))
	require.Equal(t, 3, r.MaxRetries(92))
	require.Equal(t, 0, r.MaxRetries(1))
	require.False(t, r.HasDefault)

	// ['*:3','134:9'] → exact codes win over '*'.
	r, err = ParseRetryRules("['*:3','134:9','135:9','139:9']")
	require.NoError(t, err)
	require.Equal(t, 9, r.MaxRetries(134))
	require.Equal(t, 9, r.MaxRetries(139))
	require.Equal(t, 3, r.MaxRetries(1))
	require.Equal(t, 3, r.MaxRetries(-100))

	// Old retry_test variant ['1','2:3'].
	r, err = ParseRetryRules("['1','2:3']")
	require.NoError(t, err)
	require.Equal(t, RetryRules{Exact: map[int]int{1: 1, 2: 3}}, r)
}

func TestParseRetryRulesForms(t *testing.T) {
	t.Parallel()
	want := RetryRules{Exact: map[int]int{1: 3, 2: 2}, Default: 1, HasDefault: true}
	for _, s := range []string{
		"['1:3','2:2','*']",
		`["1:3","2:2","*:1"]`,
		"[ '1:3' , '2:2', '*' , ]",
		"1:3,2:2,*",
		`{"1":3,"2":2,"*":1}`,
		`{1: 3, '2': 2, "*": 1}`,
		`  ['*', '2:2', '1:3']  `,
	} {
		r, err := ParseRetryRules(s)
		require.NoError(t, err, s)
		require.Equal(t, want, r, s)
	}
	// Real production rules: negative system codes and spaces.
	r, err := ParseRetryRules("['2:2','13:3','14:3','-100:3','124:2', '10:2']")
	require.NoError(t, err)
	require.Equal(t, 3, r.MaxRetries(-100))
	require.Equal(t, 2, r.MaxRetries(124))
	// JSON list with numbers.
	r, err = ParseRetryRules(`[91, "92:3"]`)
	require.NoError(t, err)
	require.Equal(t, RetryRules{Exact: map[int]int{91: 1, 92: 3}}, r)

	for _, s := range []string{"", "  ", "[]", "{}"} {
		r, err := ParseRetryRules(s)
		require.NoError(t, err, s)
		require.True(t, r.IsZero(), s)
		require.Nil(t, r.Exact, s)
	}
}

func TestParseRetryRulesErrors(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]string{
		"['x:y']":     `bad rule "x:y": exit code must be "*" or an integer`,
		"['1:x']":     `bad rule "1:x": count must be an integer in [0, 65535]`,
		"['1:-1']":    `bad rule "1:-1": count must be`,
		"['1:70000']": `count must be`,
		"['99999']":   `exit code must be`,
		"['0:3']":     `exit code 0 means success`,
		"['1','1:2']": `exit code 1 given twice`,
		"['*','*:2']": `"*" given twice`,
		"['1:3'":      `missing closing ']'`,
		`{"1":3`:      `missing closing '}'`,
		"['1:3]":      `unterminated ' quote`,
		`{"1"}`:       `want "code": count`,
		`{"1":}`:      `missing count`,
		"['1:2:3']":   `count must be`,
	} {
		_, err := ParseRetryRules(s)
		require.ErrorContains(t, err, want, s)
	}
}

func TestRetryRulesStringAndJSON(t *testing.T) {
	t.Parallel()
	r, err := ParseRetryRules("['*:3','134:9','-100','2:2']")
	require.NoError(t, err)
	require.Equal(t, "['-100:1','2:2','134:9','*:3']", r.String())
	back, err := ParseRetryRules(r.String())
	require.NoError(t, err)
	require.Equal(t, r, back)

	b, err := json.Marshal(r)
	require.NoError(t, err)
	require.Equal(t, `{"-100":1,"2":2,"134":9,"*":3}`, string(b))
	var dec RetryRules
	require.NoError(t, json.Unmarshal(b, &dec))
	require.Equal(t, r, dec)

	b, err = json.Marshal(RetryRules{})
	require.NoError(t, err)
	require.Equal(t, `{}`, string(b))
	dec = RetryRules{HasDefault: true}
	require.NoError(t, json.Unmarshal(b, &dec))
	require.Equal(t, RetryRules{}, dec)

	// Also accepted: a JSON string in any Scalebox form, and null.
	require.NoError(t, json.Unmarshal([]byte(`"['1:3','*']"`), &dec))
	require.Equal(t, RetryRules{Exact: map[int]int{1: 3}, Default: 1, HasDefault: true}, dec)
	require.NoError(t, json.Unmarshal([]byte(`null`), &dec))
	require.True(t, dec.IsZero())
	require.Error(t, json.Unmarshal([]byte(`{"1":"x"}`), &dec))
	require.Error(t, json.Unmarshal([]byte(`"['x']"`), &dec))
	require.NoError(t, json.Unmarshal([]byte(`["1"]`), &dec))
	require.Equal(t, RetryRules{Exact: map[int]int{1: 1}}, dec)
	require.Error(t, json.Unmarshal([]byte(`true`), &dec))
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Base: 10 * time.Second, Max: time.Minute}
	var got []time.Duration
	for n := 0; n <= 5; n++ {
		got = append(got, b.Delay(n))
	}
	require.Equal(t, []time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}, got)
	require.Equal(t, DefaultBackoffMax, Backoff{Base: time.Second}.Delay(1000), "doubling stops at the default cap")
	require.Zero(t, Backoff{}.Delay(3))

	for in, want := range map[string]time.Duration{"30s": 30 * time.Second, "45": 45 * time.Second, "0.5": 500 * time.Millisecond, " 1h30m ": 90 * time.Minute} {
		d, err := ParseDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, d, in)
	}
	for _, in := range []string{"", "-1", "-5s", "8d", "NaN", "1e300", "700000"} {
		_, err := ParseDuration(in)
		require.Error(t, err, in)
	}
}
