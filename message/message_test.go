package message

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseLineSevenForms(t *testing.T) {
	t.Parallel()
	cases := []struct {
		line string
		want Message
	}{
		{`body1`, Message{Body: "body1"}},
		{`{"bh0":"a","body":"body2"}`, Message{Body: `{"bh0":"a","body":"body2"}`}},
		{`body3,{"h0":"a","h1":"b"}`, Message{Body: "body3", Headers: map[string]string{"h0": "a", "h1": "b"}}},
		{`{"bh0":"a","body":"body4"},{"h0":"a"}`, Message{Body: `{"bh0":"a","body":"body4"}`, Headers: map[string]string{"h0": "a"}}},
		{`sink-mod0,body5`, Message{Module: "sink-mod0", Body: "body5"}},
		{`sink_mod1,body6,{"h0":"a","h1":"b"}`, Message{Module: "sink_mod1", Body: "body6", Headers: map[string]string{"h0": "a", "h1": "b"}}},
		{`sink-mod2,{"bh0":"a","body":"body7"},{"h0":"a"}`, Message{Module: "sink-mod2", Body: `{"bh0":"a","body":"body7"}`, Headers: map[string]string{"h0": "a"}}},
		{`a\,b`, Message{Body: "a,b"}},
		{`my-module,000000001_000000100`, Message{Module: "my-module", Body: "000000001_000000100"}},
		{`b,{"n":1,"ok":true}`, Message{Body: "b", Headers: map[string]string{"n": "1", "ok": "true"}}},
		{`{"body":"x,}y"},{"h":"a\"}"}`, Message{Body: `{"body":"x,}y"}`, Headers: map[string]string{"h": `a"}`}}},
	}
	for _, c := range cases {
		got, err := ParseLine(c.line)
		require.NoError(t, err, c.line)
		require.Equal(t, c.want, got, c.line)
	}
}

func TestParseLineErrors(t *testing.T) {
	t.Parallel()
	for line, want := range map[string]string{
		``:                  "empty line",
		`a,b,c`:             "3 comma-separated fields",
		`{"a":1`:            "unterminated JSON",
		`{"a":1}x`:          "unexpected",
		`m,b,{"h":{"x":1}}`: "nested",
		`m,`:                "empty body",
		`{"a":1},body`:      "module name expected",
		`b,{bad}`:           "headers",
	} {
		_, err := ParseLine(line)
		require.Error(t, err, line)
		require.Contains(t, err.Error(), want, line)
	}
}

func TestParseAllNamesLines(t *testing.T) {
	t.Parallel()
	msgs, err := ParseAll(strings.NewReader("a\n\nb,{\"x\":\"1\"}\nx,y,z\n"), "sink-tasks.txt")
	require.Len(t, msgs, 2)
	require.ErrorContains(t, err, "sink-tasks.txt:4:")
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{`body1`, `{"a":"b"}`, `m,b,{"h":"1"}`, `a\,b`, `{"x":"}"},{"h":"v"}`, `,`, `{`, `\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		m, err := ParseLine(line)
		if err == nil && m.Body == "" {
			t.Fatalf("accepted an empty body from %q", line)
		}
	})
}
