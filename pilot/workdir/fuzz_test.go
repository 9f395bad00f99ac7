package workdir

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/scalebox-hpc/scalebox/pilot/textcap"
)

func FuzzTimestamps(f *testing.F) {
	for _, s := range []string{
		"2008-03-19T18:35:03-08:00\n2012-11-17T08:52:21,963572856+08:00,label\n# c\n",
		"2023-10-24T18:00:00.123456+0800,a,b",
		"Tue, 24 Oct 2023 18:00:00 +0800,x",
		"1698141600.123456789,epoch",
		"2023-10-24 18:00:00.25 +0800 CST",
		"Mon Jan  2 15:04:05 MST 2006",
		"9999-12-31T23:59:59.999999999-23:59",
		",,,,\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p problems
		lts := parseTimestamps(data, Timestamps, time.UTC, &p)
		if len(p.result()) > maxProblems+1 {
			t.Fatalf("%d problems", len(p.result()))
		}
		for _, lt := range lts {
			if lt.Time.IsZero() && !strings.Contains(string(data), "0001") {
				t.Fatalf("zero time from %q", data)
			}
			if _, err := json.Marshal(lt.Time); err != nil {
				t.Fatalf("time %v from %q does not marshal: %v", lt.Time, data, err)
			}
		}
	})
}

func FuzzTaskExec(f *testing.F) {
	f.Add([]byte(`{"statusCode":0,"inputBytes":9999,"outputBytes":999,"userText":"a\nb","timestamps":["2018-03-19T18:35:03-08:00","2022-11-17T08:52:21,963572856+08:00"],"sinkJob":"task-perspective","messageBody":"1"}`), false)
	f.Add([]byte(`{"statusCode":"3","inputFiles":["/etc/passwd","/x,12"],"outputFiles":"/etc/hosts","sinkModule":"m","messageBody":[1,{"a":2},""]}`), false)
	f.Add([]byte(`{"statusCode":1e400,"inputBytes":-1} trailing`), false)
	f.Add([]byte(`[{"statusCode":0}]`), false)
	f.Add([]byte("statusCode: 2\ninputBytes: 10\nuserText: |\n  hi\nsinkModule: m\nmessageBody: b\ntimestamps: [2023-10-24T18:00:00Z]\n"), true)
	f.Add([]byte("a: &a [*a]\n"), true)
	f.Add([]byte("? [1, 2]\n: .nan\n"), true)
	f.Fuzz(func(t *testing.T, data []byte, isYAML bool) {
		name := TaskExecJSON
		if isYAML {
			name = TaskExecYAML
		}
		var p problems
		te := parseTaskExec(data, name, time.UTC, &p)
		for _, m := range te.messages {
			if m.Body == "" {
				t.Fatalf("empty body from %q", data)
			}
		}
		if te.inputBytes != nil && *te.inputBytes < 0 || te.outputBytes != nil && *te.outputBytes < 0 {
			t.Fatalf("negative bytes from %q", data)
		}
		for _, lt := range te.timestamps {
			if _, err := json.Marshal(lt.Time); err != nil {
				t.Fatalf("time does not marshal: %v", err)
			}
		}
		for _, pr := range p.result() {
			if !strings.HasPrefix(pr, name+": ") {
				t.Fatalf("problem %q does not name %s", pr, name)
			}
		}
	})
}

func FuzzExtra(f *testing.F) {
	for _, s := range []string{
		"a=1\nb: two\n# c\n=x\nnone\nq=\"x\\\"y\"\n",
		`{"n": 1, "o": {"x": [1, "y"]}}`,
		`{"a":}`,
		"a: 1\nb: [x, 2.5]\nc: {1: .inf}\nd: 2001-12-14t21:59:43.10-05:00\n",
		"- just\n- a list\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, parse := range []func([]byte, string, *problems) map[string]any{parseExtra, parseExtraYAML} {
			var p problems
			m := parse(data, ExtraAttributes, &p)
			if _, err := json.Marshal(m); err != nil {
				t.Fatalf("extra from %q does not marshal: %v", data, err)
			}
		}
	})
}

func FuzzTruncate(f *testing.F) {
	f.Add([]byte("héllo wörld, ünïcode"), uint16(10), int64(0), false)
	f.Add([]byte(strings.Repeat("x", 300)), uint16(50), int64(1000), true)
	f.Fuzz(func(t *testing.T, kept []byte, limit uint16, extra int64, keepHead bool) {
		if limit == 0 || extra < 0 {
			return
		}
		total := int64(len(kept)) + extra%(1<<40)
		out := textcap.Truncate(kept, total, int(limit), keepHead)
		if len(out) > int(limit) {
			t.Fatalf("%d bytes out, limit %d", len(out), limit)
		}
		if utf8.Valid(kept) && int(limit) >= 40 && !utf8.ValidString(out) {
			t.Fatalf("valid UTF-8 in, invalid out: %q", out)
		}
	})
}
