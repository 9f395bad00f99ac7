package workdir

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/message"
)

func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
}

func collect(t *testing.T, files map[string]string, opt Options) *Files {
	t.Helper()
	dir := t.TempDir()
	write(t, dir, files)
	return Collect(dir, opt)
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	require.NoError(t, err)
	return st.Size()
}

var cst = time.FixedZone("", 8*3600)

func TestCollectEmpty(t *testing.T) {
	t.Parallel()
	f := Collect(t.TempDir(), Options{})
	require.Equal(t, &Files{Entries: []string{}}, f, "listed, nothing in it")
	f = Collect(filepath.Join(t.TempDir(), "missing"), Options{})
	require.Equal(t, &Files{}, f)
}

func TestMessages(t *testing.T) {
	t.Parallel()
	sink := strings.Join([]string{
		`body1`,
		`{"bh0":"a","body":"body2"}`,
		`body3,{"h0":"a","h1":"b"}`,
		``,
		`{"bh0":"a","body":"body4"},{"h0":"a"}`,
		`sink-mod0,body5`,
		"sink_mod1,body6,{\"h0\":\"a\",\"h1\":\"b\"}\r",
		`sink-mod2,{"bh0":"a","body":"body7"},{"h0":"a"}`,
		`a,b,c,d`,
		`esc\,aped`,
		`m,{"unterminated":`,
		`   `,
	}, "\n")
	f := collect(t, map[string]string{SinkTasks: sink}, Options{})
	require.Equal(t, []message.Message{
		{Body: "body1"},
		{Body: `{"bh0":"a","body":"body2"}`},
		{Body: "body3", Headers: map[string]string{"h0": "a", "h1": "b"}},
		{Body: `{"bh0":"a","body":"body4"}`, Headers: map[string]string{"h0": "a"}},
		{Module: "sink-mod0", Body: "body5"},
		{Module: "sink_mod1", Body: "body6", Headers: map[string]string{"h0": "a", "h1": "b"}},
		{Module: "sink-mod2", Body: `{"bh0":"a","body":"body7"}`, Headers: map[string]string{"h0": "a"}},
		{Body: "esc,aped"},
	}, f.Messages)
	require.Len(t, f.Problems, 2)
	require.True(t, strings.HasPrefix(f.Problems[0], "sink-tasks.txt:9: "), f.Problems[0])
	require.True(t, strings.HasPrefix(f.Problems[1], "sink-tasks.txt:11: "), f.Problems[1])
}

// A work dir too big to list is read file by file.
func TestBigWorkDir(t *testing.T) {
	t.Parallel()
	files := map[string]string{SinkTasks: "a\n", AuxOut: "text"}
	for i := range maxListed + 10 {
		files[fmt.Sprintf("out-%03d.dat", i)] = ""
	}
	dir := t.TempDir()
	write(t, dir, files)
	require.Nil(t, openWorkDir(dir).names)
	f := Collect(dir, Options{})
	require.Equal(t, []message.Message{{Body: "a"}}, f.Messages)
	require.Equal(t, "text", f.CustomText)
	require.Empty(t, f.Problems)
}

func TestMessagesGen1Files(t *testing.T) {
	t.Parallel()
	f := collect(t, map[string]string{
		SinkTasks:             "a\n",
		"messages.txt":        "b\n",
		"output-messages.txt": "mod,c\n",
		TaskExecJSON:          `{"statusCode":0,"sinkJob":"next","messageBody":"d"}`,
	}, Options{})
	require.Equal(t, []message.Message{{Body: "a"}, {Body: "b"}, {Module: "mod", Body: "c"}, {Module: "next", Body: "d"}}, f.Messages)
	require.Empty(t, f.Problems)
}

// Scalebox's feature test task-perspective (spec §5.2), message by message.
func TestTaskPerspective(t *testing.T) {
	t.Parallel()
	timestampsTxt := "2008-03-19T18:35:03-08:00\n" +
		"2009-11-05T17:50:20.154+08:00\n" +
		"2010-11-05T17:50:20.154918+08:00\n" +
		"2011-11-05T17:50:20.154918780+08:00\n" +
		"2012-11-17T08:52:21,963572856+08:00\n" +
		"2023-10-24T18:00:00,123456789+08:00\n" // date --iso-8601=ns
	userFile := "This is user-defined data in a file.\nMulti-line is supported.\n"
	wantTimes := []LabeledTime{
		{Time: time.Date(2008, 3, 19, 18, 35, 3, 0, time.FixedZone("", -8*3600))},
		{Time: time.Date(2009, 11, 5, 17, 50, 20, 154_000_000, cst)},
		{Time: time.Date(2010, 11, 5, 17, 50, 20, 154_918_000, cst)},
		{Time: time.Date(2011, 11, 5, 17, 50, 20, 154_918_780, cst)},
		{Time: time.Date(2012, 11, 17, 8, 52, 21, 963_572_856, cst)},
		{Time: time.Date(2023, 10, 24, 18, 0, 0, 123_456_789, cst)},
	}

	t.Run("m=0", func(t *testing.T) {
		t.Parallel()
		f := collect(t, map[string]string{TaskExecJSON: `{
    "statusCode":0,
    "inputBytes":9999,
    "outputBytes":999,
    "userText":"user-defined text\nHello scalebox in message-0",
    "timestamps":["2018-03-19T18:35:03-08:00","2019-11-05T17:50:20.154+08:00","2020-11-05T17:50:20.154918+08:00","2021-11-05T17:50:20.154918780+08:00","2022-11-17T08:52:21,963572856+08:00"],
    "sinkJob":"task-perspective",
    "messageBody":"1"
}
`}, Options{})
		require.Empty(t, f.Problems)
		require.NotNil(t, f.StatusCode)
		require.Equal(t, 0, *f.StatusCode)
		require.EqualValues(t, 9999, f.InputBytes)
		require.EqualValues(t, 999, f.OutputBytes)
		require.Equal(t, "user-defined text\nHello scalebox in message-0", f.CustomText)
		require.Equal(t, []message.Message{{Module: "task-perspective", Body: "1"}}, f.Messages)
		require.Len(t, f.UserTimes, 5)
		for i, lt := range f.UserTimes {
			require.Equal(t, 2018+i, lt.Time.Year())
			require.True(t, lt.Time.Equal(wantTimes[i].Time.AddDate(10, 0, 0)), "%d: %v", i, lt.Time)
		}
		require.Equal(t, map[string]int64{
			"input_bytes": 9999, "output_bytes": 999,
			"global_input": 0, "global_output": 0, "tmpfs_input": 0, "tmpfs_output": 0, "local_input": 0, "local_output": 0,
		}, f.IOBytes)
	})

	t.Run("m=1", func(t *testing.T) {
		t.Parallel()
		f := collect(t, map[string]string{
			TaskExecJSON: `{
    "statusCode":0,
    "inputFiles":["/etc/passwd","/etc/group"],
    "outputFiles":["/etc/fstab","/etc/hosts"],
    "sinkJob":"task-perspective",
    "messageBody":"2"
}`,
			Timestamps: timestampsTxt,
			UserFile:   userFile,
		}, Options{})
		require.Empty(t, f.Problems)
		require.Equal(t, 0, *f.StatusCode)
		in := size(t, "/etc/passwd") + size(t, "/etc/group")
		out := size(t, "/etc/fstab") + size(t, "/etc/hosts")
		require.Equal(t, in, f.InputBytes)
		require.Equal(t, out, f.OutputBytes)
		require.Equal(t, []string{"/etc/passwd", "/etc/group"}, f.InputFiles)
		require.Equal(t, []string{"/etc/fstab", "/etc/hosts"}, f.OutputFiles)
		require.Equal(t, in, f.IOBytes["local_input"])
		require.Equal(t, out, f.IOBytes["local_output"])
		require.Equal(t, userFile, f.CustomText)
		require.Equal(t, []message.Message{{Module: "task-perspective", Body: "2"}}, f.Messages)
		requireTimes(t, wantTimes, f.UserTimes)
	})

	t.Run("m=2", func(t *testing.T) {
		t.Parallel()
		f := collect(t, map[string]string{Timestamps: timestampsTxt, UserFile: userFile}, Options{})
		require.Empty(t, f.Problems)
		require.Nil(t, f.StatusCode)
		require.Empty(t, f.Messages)
		require.Nil(t, f.IOBytes)
		require.Equal(t, userFile, f.CustomText)
		requireTimes(t, wantTimes, f.UserTimes)
	})
}

func requireTimes(t *testing.T, want, got []LabeledTime) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		require.True(t, want[i].Time.Equal(got[i].Time), "%d: want %v, got %v", i, want[i].Time, got[i].Time)
		_, wo := want[i].Time.Zone()
		_, go_ := got[i].Time.Zone()
		require.Equal(t, wo, go_, "%d: zone offset", i)
		require.Equal(t, want[i].Label, got[i].Label, "%d", i)
	}
}

func TestTaskExec(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		files    map[string]string
		status   *int
		msgs     []message.Message
		text     string
		in, out  int64
		problems []string // substrings, in order
	}{
		{name: "status overrides", files: map[string]string{TaskExecJSON: `{"statusCode":3}`}, status: new(3)},
		{name: "negative status", files: map[string]string{TaskExecJSON: `{"statusCode":-1}`}, status: new(-1)},
		{name: "status as string and float", files: map[string]string{TaskExecJSON: `{"statusCode":"4"}`}, status: new(4)},
		{name: "status 2.0", files: map[string]string{TaskExecJSON: `{"statusCode":2.0}`}, status: new(2)},
		{name: "snake case", files: map[string]string{TaskExecJSON: `{"status_code":5,"input_bytes":7,"sink_module":"m","message_body":"b"}`},
			status: new(5), in: 7, msgs: []message.Message{{Module: "m", Body: "b"}}},
		{name: "no status", files: map[string]string{TaskExecJSON: `{"inputBytes":1}`}, in: 1},
		{name: "bad status", files: map[string]string{TaskExecJSON: `{"statusCode":"x","inputBytes":2}`}, in: 2,
			problems: []string{`task-exec.json: statusCode: want an integer, got string "x"`}},
		{name: "status out of range", files: map[string]string{TaskExecJSON: `{"statusCode":99999999999}`},
			problems: []string{"statusCode: want an integer"}},
		{name: "negative bytes", files: map[string]string{TaskExecJSON: `{"inputBytes":-5,"outputBytes":"12"}`}, out: 12,
			problems: []string{"inputBytes: want a byte count, got number -5"}},
		{name: "invalid JSON", files: map[string]string{TaskExecJSON: "{\n  \"statusCode\": 0,\n  oops\n}"},
			problems: []string{"task-exec.json: invalid JSON at line 3, column 3: invalid character 'o' looking for beginning of object key string"}},
		{name: "truncated JSON", files: map[string]string{TaskExecJSON: `{"statusCode":0`},
			problems: []string{"task-exec.json: invalid JSON at line 1, column 16: unexpected EOF"}},
		{name: "not an object", files: map[string]string{TaskExecJSON: `[1,2]`},
			problems: []string{"task-exec.json: want a JSON object, got a list of 2"}},
		{name: "empty", files: map[string]string{TaskExecJSON: ""}, problems: []string{"task-exec.json: empty file"}},
		{name: "trailing data", files: map[string]string{TaskExecJSON: `{"statusCode":1} {"statusCode":2}`}, status: new(1),
			problems: []string{"data after the JSON object at line 1, column 18 ignored"}},
		{name: "sink without body", files: map[string]string{TaskExecJSON: `{"sinkJob":"m"}`},
			problems: []string{`sink module "m" given without messageBody`}},
		{name: "body without sink goes to the default sink", files: map[string]string{TaskExecJSON: `{"messageBody":"x"}`},
			msgs: []message.Message{{Body: "x"}}},
		{name: "sinkModule wins over sinkJob", files: map[string]string{TaskExecJSON: `{"sinkJob":"old","sinkModule":"new","messageBody":"x"}`},
			msgs: []message.Message{{Module: "new", Body: "x"}}},
		{name: "numeric and JSON bodies", files: map[string]string{TaskExecJSON: `{"sinkModule":"m","messageBody":[7,{"body":"b"},"s",""]}`},
			msgs:     []message.Message{{Module: "m", Body: "7"}, {Module: "m", Body: `{"body":"b"}`}, {Module: "m", Body: "s"}},
			problems: []string{"messageBody: empty body"}},
		{name: "userText and messageText", files: map[string]string{TaskExecJSON: `{"userText":"u","messageText":"m"}`}, text: "u\nm"},
		{name: "text file then userText", files: map[string]string{TaskExecJSON: `{"userText":"u"}`, CustomOut: "file"}, text: "file\nu"},
		{name: "bad types", files: map[string]string{TaskExecJSON: `{"timestamps":"nope","inputFiles":{"a":1},"outputFiles":[1,null],"sinkJob":5,"messageBody":"x"}`},
			msgs: []message.Message{{Body: "x"}},
			problems: []string{
				"inputFiles: want a list of strings, got an object {a}",
				"outputFiles[1]: want a string, got null",
				`timestamps[0]: not a timestamp: "nope"`,
				"sinkJob: want a module name, got number 5",
				"output file 1: stat: no such file or directory",
			}},
		{name: "yaml", files: map[string]string{TaskExecYAML: "statusCode: 2\ninputBytes: 10\nuserText: |\n  hi\nsinkModule: m\nmessageBody: b\n"},
			status: new(2), in: 10, text: "hi\n", msgs: []message.Message{{Module: "m", Body: "b"}}},
		{name: "invalid yaml", files: map[string]string{TaskExecYAML: "statusCode: [\n"}, problems: []string{"task-exec.yaml: invalid YAML: yaml: line "}},
		{name: "yaml scalar", files: map[string]string{TaskExecYAML: "just text\n"}, problems: []string{`task-exec.yaml: want a YAML mapping, got string "just text"`}},
		{name: "json wins over yaml", files: map[string]string{TaskExecJSON: `{"statusCode":1}`, TaskExecYAML: "statusCode: 2\n"}, status: new(1),
			problems: []string{"task-exec.yaml: ignored: task-exec.json is there too"}},
		{name: "directory in place", files: map[string]string{TaskExecJSON + "/x": ""},
			problems: []string{"task-exec.json: not a regular file (d---------), ignored"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := collect(t, tc.files, Options{})
			require.Equal(t, tc.status, f.StatusCode)
			require.Equal(t, tc.msgs, f.Messages)
			require.Equal(t, tc.text, f.CustomText)
			require.Equal(t, tc.in, f.InputBytes)
			require.Equal(t, tc.out, f.OutputBytes)
			require.Len(t, f.Problems, len(tc.problems), "%q", f.Problems)
			for i, want := range tc.problems {
				require.Contains(t, f.Problems[i], want)
			}
		})
	}
}

func TestTimestampFormats(t *testing.T) {
	t.Parallel()
	loc := time.FixedZone("node", 2*3600)
	tests := []struct {
		in    string
		want  time.Time
		label string
	}{
		{"2023-10-24T18:00:00.123456789+08:00", time.Date(2023, 10, 24, 18, 0, 0, 123456789, cst), ""},
		{"2023-10-24T18:00:00+08:00", time.Date(2023, 10, 24, 18, 0, 0, 0, cst), ""},
		{"2023-10-24T10:00:00Z", time.Date(2023, 10, 24, 10, 0, 0, 0, time.UTC), ""},
		{"2023-10-24T18:00:00.5", time.Date(2023, 10, 24, 18, 0, 0, 5e8, loc), ""},
		{"2023-10-24T18:00:00", time.Date(2023, 10, 24, 18, 0, 0, 0, loc), ""},
		{"2023-10-24 18:00:00", time.Date(2023, 10, 24, 18, 0, 0, 0, loc), ""},
		{"2023-10-24 18:00:00.000001", time.Date(2023, 10, 24, 18, 0, 0, 1000, loc), ""},
		{"2012-11-17T08:52:21,963572856+08:00", time.Date(2012, 11, 17, 8, 52, 21, 963572856, cst), ""},
		{"2023-10-24T18:00:00.123456+0800", time.Date(2023, 10, 24, 18, 0, 0, 123456000, cst), ""},
		{"2023-10-24T18:00:00+08", time.Date(2023, 10, 24, 18, 0, 0, 0, cst), ""},
		{"2023-10-24 18:00:00.25 +0800 CST", time.Date(2023, 10, 24, 18, 0, 0, 25e7, cst), ""},
		{"Tue, 24 Oct 2023 18:00:00 +0800", time.Date(2023, 10, 24, 18, 0, 0, 0, cst), ""},
		{"1698141600.5", time.Unix(1698141600, 5e8), ""},
		{"1698141600", time.Unix(1698141600, 0), ""},
		{"2023-10-24T18:00:00+08:00,before-sum", time.Date(2023, 10, 24, 18, 0, 0, 0, cst), "before-sum"},
		{"2012-11-17T08:52:21,963572856+08:00,after, sum ", time.Date(2012, 11, 17, 8, 52, 21, 963572856, cst), "after, sum"},
		{"2023-10-24T18:00:00.123456+0800 , label", time.Date(2023, 10, 24, 18, 0, 0, 123456000, cst), "label"},
		{"2023-10-24 18:00:00,x", time.Date(2023, 10, 24, 18, 0, 0, 0, loc), "x"},
		{"Tue, 24 Oct 2023 18:00:00 +0800,rfc1123", time.Date(2023, 10, 24, 18, 0, 0, 0, cst), "rfc1123"},
		{"1698141600.123456789,epoch", time.Unix(1698141600, 123456789), "epoch"},
		{"2023-10-24T18:00:00Z,z", time.Date(2023, 10, 24, 18, 0, 0, 0, time.UTC), "z"},
		{"2023-10-24 18:00:00 +0800,sp", time.Date(2023, 10, 24, 18, 0, 0, 0, cst), "sp"},
		{"2023-10-24 18:00:00.25 -07:00", time.Date(2023, 10, 24, 18, 0, 0, 25e7, time.FixedZone("", -7*3600)), ""},
		{"Tue Oct 24 18:00:00 UTC 2023,unixdate", time.Date(2023, 10, 24, 18, 0, 0, 0, time.UTC), "unixdate"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseTimestamp(tc.in, loc)
			require.NoError(t, err)
			require.True(t, tc.want.Equal(got.Time), "want %v, got %v", tc.want, got.Time)
			require.Equal(t, tc.label, got.Label)
		})
	}
	// date(1)'s zone name is read in the node's zone.
	got, err := ParseTimestamp("Tue Oct 24 18:00:00 CST 2023", time.FixedZone("CST", 8*3600))
	require.NoError(t, err)
	require.True(t, time.Date(2023, 10, 24, 18, 0, 0, 0, cst).Equal(got.Time), got.Time)

	for _, bad := range []string{"", "yesterday", "2023-13-01T00:00:00Z", "2023-10-24", "12345", "2023-10-24T25:00:00", ",label",
		strings.Repeat("9", 100), "2023-10-24T18:00:00garbage", "2023-10-24T18:00:00 x", "16981416001", "Tue, 24 Oct 2023 18:00:00 +08"} {
		_, err := ParseTimestamp(bad, loc)
		require.Error(t, err, bad)
	}
}

// Every accepted form round-trips, with and without a label.
func TestTimestampRoundTrip(t *testing.T) {
	t.Parallel()
	zones := []*time.Location{time.UTC, cst, time.FixedZone("", -7*3600-1800), time.FixedZone("", 5*3600+45*60)}
	forms := []struct {
		layout string
		prec   time.Duration // what the form keeps
		local  bool          // written without a zone: read in loc
	}{
		{time.RFC3339Nano, time.Nanosecond, false},
		{time.RFC3339, time.Second, false},
		{"2006-01-02T15:04:05.000000-0700", time.Microsecond, false},
		{"2006-01-02T15:04:05,000000000-07:00", time.Nanosecond, false},
		{"2006-01-02 15:04:05.999999999 -0700 MST", time.Nanosecond, false},
		{"2006-01-02 15:04:05.000-07:00", time.Millisecond, false},
		{time.RFC1123Z, time.Second, false},
		{"2006-01-02T15:04:05.999999999", time.Nanosecond, true},
		{"2006-01-02 15:04:05", time.Second, true},
	}
	for i := range 200 {
		loc := zones[i%len(zones)]
		ts := time.Date(1990+i%60, time.Month(1+i%12), 1+i%28, i%24, (i*7)%60, (i*13)%60, (i*7919*104729)%1e9, loc)
		for _, f := range forms {
			in := ts.Format(f.layout)
			want := ts.Truncate(f.prec)
			for _, label := range []string{"", "lbl", "a, b"} {
				line := in
				if label != "" {
					line += "," + label
				}
				got, err := ParseTimestamp(line, loc)
				require.NoError(t, err, line)
				require.True(t, want.Equal(got.Time), "%s: want %v, got %v", line, want, got.Time)
				require.Equal(t, label, got.Label, line)
			}
		}
		got, err := ParseTimestamp(strconv.FormatInt(ts.Unix(), 10)+"."+fmt.Sprintf("%09d", ts.Nanosecond()), loc)
		if ts.Unix() >= 1e9 {
			require.NoError(t, err)
			require.True(t, ts.Equal(got.Time))
		}
	}
}

func TestTimestampsFile(t *testing.T) {
	t.Parallel()
	f := collect(t, map[string]string{
		Timestamps:   "# comment\n\n2023-10-24T18:00:00+08:00,start\r\n  bogus line\n2023-10-24T18:00:01+08:00\n",
		TaskExecJSON: `{"timestamps":["2023-10-24T18:00:02+08:00,from-json","nope"]}`,
	}, Options{})
	require.Equal(t, []string{
		`task-exec.json: timestamps[1]: not a timestamp: "nope"`,
		`timestamps.txt:4: not a timestamp: "bogus line"`,
	}, f.Problems)
	requireTimes(t, []LabeledTime{
		{Time: time.Date(2023, 10, 24, 18, 0, 0, 0, cst), Label: "start"},
		{Time: time.Date(2023, 10, 24, 18, 0, 1, 0, cst)},
		{Time: time.Date(2023, 10, 24, 18, 0, 2, 0, cst), Label: "from-json"},
	}, f.UserTimes)
}

func TestCustomText(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("0123456789", 20) // 200 bytes
	tests := []struct {
		name  string
		files map[string]string
		opt   Options
		want  string
	}{
		{"auxout first", map[string]string{AuxOut: "aux", CustomOut: "custom", UserFile: "user"}, Options{}, "aux"},
		{"custom-out next", map[string]string{CustomOut: "custom", UserFile: "user"}, Options{}, "custom"},
		{"user-file next", map[string]string{UserFile: "user", UserData: "data"}, Options{}, "user"},
		{"user-data last", map[string]string{UserData: "data"}, Options{}, "data"},
		// The marker "[… 177 bytes cut …]\n" is 24 bytes: 26 of 203 are kept.
		{"tail kept", map[string]string{AuxOut: long + "END"}, Options{OutputCap: 50},
			"[… 177 bytes cut …]\n" + (long + "END")[177:]},
		{"head kept", map[string]string{AuxOut: "BEG" + long}, Options{OutputCap: 50, KeepHead: true},
			("BEG" + long)[:26] + "[… 177 bytes cut …]\n"},
		{"tail with userText", map[string]string{AuxOut: long, TaskExecJSON: `{"userText":"UT"}`}, Options{OutputCap: 50},
			"[… 177 bytes cut …]\n" + (long + "\nUT")[177:]},
		{"head with userText cut away", map[string]string{AuxOut: long, TaskExecJSON: `{"userText":"UT"}`}, Options{OutputCap: 50, KeepHead: true},
			long[:26] + "[… 177 bytes cut …]\n"},
		{"head with userText kept", map[string]string{AuxOut: "a\n", TaskExecJSON: `{"userText":"UT"}`}, Options{OutputCap: 50, KeepHead: true},
			"a\nUT"},
		{"userText only, capped", map[string]string{TaskExecJSON: `{"userText":"` + long + `"}`}, Options{OutputCap: 50},
			"[… 174 bytes cut …]\n" + long[174:]},
		{"default cap", map[string]string{AuxOut: strings.Repeat("x", 70000)}, Options{},
			"[… 4490 bytes cut …]\n" + strings.Repeat("x", 65510)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := collect(t, tc.files, tc.opt)
			require.Empty(t, f.Problems)
			if len(tc.want) > 200 { // keep failure output short
				require.Equal(t, len(tc.want), len(f.CustomText))
				require.Equal(t, tc.want[:40], f.CustomText[:40])
			}
			require.True(t, tc.want == f.CustomText, "want %.80q…, got %.80q…", tc.want, f.CustomText)
			limit := tc.opt.OutputCap
			if limit == 0 {
				limit = DefaultOutputCap
			}
			require.LessOrEqual(t, len(f.CustomText), limit)
		})
	}
}

func TestIOFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root := filepath.Join(dir, "cluster_data_root")
	write(t, dir, map[string]string{
		"cluster_data_root/in/a.dat": strings.Repeat("a", 100),
		"local/b.dat":                strings.Repeat("b", 20),
		"rel.dat":                    "12345",
		"tree/x":                     "xx",
		"tree/sub/y":                 "yyy",
		"with,comma.dat":             "1234567",
	})
	shm := ""
	if st, err := os.Stat(shmDir); err == nil && st.IsDir() {
		d, err := os.MkdirTemp(shmDir, "workdir-test-")
		require.NoError(t, err)
		t.Cleanup(func() { _ = os.RemoveAll(d) })
		shm = filepath.Join(d, "s.dat")
		require.NoError(t, os.WriteFile(shm, make([]byte, 1000), 0o644))
	}
	in := []string{
		filepath.Join(root, "in/a.dat"),
		"# comment",
		"",
		filepath.Join(dir, "local/b.dat") + ",4096", // given bytes win over stat
		"rel.dat",                       // relative to the work dir
		filepath.Join(dir, "tree"),      // a directory: its files
		filepath.Join(root, "in/a.dat"), // duplicate: once
		filepath.Join(dir, "missing.dat"),
		filepath.Join(dir, "with,comma.dat"),
		"/remote/only,777",
	}
	wantIn := int64(100 + 4096 + 5 + 5 + 7 + 777)
	if shm != "" {
		in = append(in, shm)
		wantIn += 1000
	}
	out := []string{
		filepath.Join(root, "out/new.dat") + ",50",
		filepath.Join(dir, "local/b.dat"),
	}
	write(t, dir, map[string]string{
		InputFilesTxt:  strings.Join(in, "\n"),
		OutputFilesTxt: strings.Join(out, "\n") + "\n",
		TaskExecJSON:   fmt.Sprintf(`{"inputFiles":[%q],"outputBytes":3,"outputFiles":["/not/measured"]}`, filepath.Join(dir, "rel.dat")),
	})
	f := Collect(dir, Options{ClusterDataRoot: root + "/"})
	require.Equal(t, []string{"input-files.txt:8: input file " + filepath.Join(dir, "missing.dat") + ": stat: no such file or directory"}, f.Problems)
	require.Equal(t, wantIn, f.InputBytes)
	require.EqualValues(t, 50+20+3, f.OutputBytes)
	wantFiles := []string{in[0], filepath.Join(dir, "local/b.dat"), "rel.dat", filepath.Join(dir, "tree"), in[7], in[8], "/remote/only"}
	if shm != "" {
		wantFiles = append(wantFiles, shm)
	}
	require.Equal(t, wantFiles, f.InputFiles, "rel.dat from task-exec.json is the same file: listed once")
	require.Equal(t, []string{filepath.Join(root, "out/new.dat"), filepath.Join(dir, "local/b.dat"), "/not/measured"}, f.OutputFiles)
	wantIO := map[string]int64{
		"input_bytes": wantIn, "output_bytes": 73,
		"global_input": 100, "global_output": 50,
		"tmpfs_input": 0, "tmpfs_output": 0,
		"local_input": 4096 + 5 + 5 + 7 + 777, "local_output": 20,
	}
	if shm != "" {
		wantIO["tmpfs_input"] = 1000
	}
	require.Equal(t, wantIO, f.IOBytes)

	f = Collect(dir, Options{GlobalDirs: []string{filepath.Join(dir, "local")}})
	require.EqualValues(t, 20, f.IOBytes["global_output"])
	require.EqualValues(t, 4096, f.IOBytes["global_input"])
}

func TestRemovedFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write(t, dir, map[string]string{
		"a.dat":         "a",
		"sub/b.dat":     "b",
		RemovedFilesTxt: "a.dat\n# not this\n" + filepath.Join(dir, "sub/b.dat") + "\n/no/such/file\n",
	})
	f := Collect(dir, Options{})
	require.Equal(t, []string{"a.dat", filepath.Join(dir, "sub/b.dat"), "/no/such/file"}, f.RemovedFiles)
	require.NoError(t, Remove(dir, f.RemovedFiles))
	require.NoFileExists(t, filepath.Join(dir, "a.dat"))
	require.NoFileExists(t, filepath.Join(dir, "sub/b.dat"))
	require.Error(t, Remove(dir, []string{"/", "sub"}))
	require.DirExists(t, filepath.Join(dir, "sub"))
}

func TestExtra(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		files    map[string]string
		want     map[string]any
		problems []string
	}{
		{"key=value", map[string]string{ExtraAttributes: "a=1\nb = two words \n# c=3\n\nurl=http://h:80/x?y=z\n"},
			map[string]any{"a": "1", "b": "two words", "url": "http://h:80/x?y=z"}, nil},
		{"key: value", map[string]string{ExtraAttributes: "a: 1\r\ntime: 12:00\nq: \"quoted \\\"x\\\"\"\ns: 'single'\n"},
			map[string]any{"a": "1", "time": "12:00", "q": `quoted "x"`, "s": "single"}, nil},
		{"repeated key", map[string]string{ExtraAttributes: "a=1\na=2\n"}, map[string]any{"a": "2"}, nil},
		{"bad lines", map[string]string{ExtraAttributes: "ok=1\nno separator\n=empty key\n"},
			map[string]any{"ok": "1"}, []string{`extra-attributes.txt:2: want key=value or key: value, got "no separator"`, "extra-attributes.txt:3: empty key"}},
		{"json", map[string]string{ExtraAttributes: ` {"n": 12345678901234567890, "b": true, "o": {"x": [1, "y"]}} `},
			map[string]any{"n": json.Number("12345678901234567890"), "b": true, "o": map[string]any{"x": []any{json.Number("1"), "y"}}}, nil},
		{"bad json", map[string]string{ExtraAttributes: `{"a":}`}, nil, []string{"extra-attributes.txt: invalid JSON at line 1, column 6: invalid character '}'"}},
		{"yaml", map[string]string{ExtraAttrsYAML: "a: 1\nb: [x, 2.5]\nc: {1: .inf}\n"},
			map[string]any{"a": 1, "b": []any{"x", 2.5}, "c": map[string]any{"1": "+Inf"}}, nil},
		{"txt wins over yaml", map[string]string{ExtraAttrsYAML: "a: 1\nb: 2\n", ExtraAttributes: "a=txt\n"},
			map[string]any{"a": "txt", "b": 2}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := collect(t, tc.files, Options{})
			require.Equal(t, tc.want, f.Extra)
			require.Len(t, f.Problems, len(tc.problems), "%q", f.Problems)
			for i, want := range tc.problems {
				require.Contains(t, f.Problems[i], want)
			}
			_, err := json.Marshal(f.Extra)
			require.NoError(t, err)
		})
	}
}

func TestRefusesSpecialFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, syscall.Mkfifo(filepath.Join(dir, SinkTasks), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, Timestamps), 0o755))
	require.NoError(t, os.Symlink("/dev/zero", filepath.Join(dir, AuxOut)))
	require.NoError(t, os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, ExtraAttributes)))
	f := Collect(dir, Options{}) // must not block on the FIFO nor read /dev/zero forever
	require.Len(t, f.Problems, 3, "%q", f.Problems)
	for i, name := range []string{SinkTasks, Timestamps, AuxOut} {
		require.True(t, strings.HasPrefix(f.Problems[i], name+": not a regular file ("), f.Problems[i])
	}
}

func TestReadLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write(t, dir, map[string]string{"f": "line1\nline2\nline3\n"})
	var p problems
	data, ok := readFile(openWorkDir(dir), "f", 14, &p)
	require.True(t, ok)
	require.Equal(t, "line1\nline2\n", string(data))
	require.Equal(t, []string{"f: larger than 14 bytes: only the first 12 bytes read"}, p.result())
}

func TestProblemsCapped(t *testing.T) {
	t.Parallel()
	f := collect(t, map[string]string{Timestamps: strings.Repeat("bad\n", 250)}, Options{})
	require.Len(t, f.Problems, maxProblems+1)
	require.Equal(t, "… and 150 more problems", f.Problems[maxProblems])
}

func TestReset(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	files := map[string]string{".scalebox/my.txt": "state", "result.dat": "keep", "sub/sink-tasks.txt": "keep"}
	for _, name := range interfaceFiles {
		files[name] = "x"
	}
	write(t, dir, files)
	require.NoError(t, Reset(dir))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	require.ElementsMatch(t, []string{".scalebox", "result.dat", "sub"}, left)
	require.FileExists(t, filepath.Join(dir, ".scalebox/my.txt"))
	require.NoError(t, Reset(dir)) // idempotent
	f := Collect(dir, Options{})
	require.ElementsMatch(t, left, f.Entries, "the entries as listed")
	f.Entries = nil
	require.Equal(t, &Files{}, f, "nothing to collect")
}

func TestWriteBatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tasks := []BatchTask{
		{TaskID: 1, Body: "plain", Headers: `{"from_module":"m"}`},
		{TaskID: 22, Body: "with,comma", Headers: ""},
		{TaskID: 333, Body: `{"body":"json","k":"v"}`, Headers: "{\n  \"a\": \"b\"\n}"},
		{TaskID: 4, Body: "two\nlines\r", Headers: "{}"},
	}
	require.NoError(t, WriteBatch(dir, tasks))
	b, err := os.ReadFile(filepath.Join(dir, InputMessages))
	require.NoError(t, err)
	require.Equal(t, `1,plain,{"from_module":"m"}
22,with,comma,{}
333,{"body":"json","k":"v"},{"a":"b"}
4,two\nlines\r,{}
`, string(b))
	link, err := os.Readlink(filepath.Join(dir, BatchTasks))
	require.NoError(t, err)
	require.Equal(t, InputMessages, link)

	got, err := ReadBatch(dir)
	require.NoError(t, err)
	require.Equal(t, []BatchTask{
		{TaskID: 1, Body: "plain", Headers: `{"from_module":"m"}`},
		{TaskID: 22, Body: "with,comma", Headers: "{}"},
		{TaskID: 333, Body: `{"body":"json","k":"v"}`, Headers: `{"a":"b"}`},
		{TaskID: 4, Body: `two\nlines\r`, Headers: "{}"},
	}, got)

	require.NoError(t, WriteBatch(dir, tasks[:1]), "rewriting replaces file and link")
	got, err = ReadBatch(dir)
	require.NoError(t, err)
	require.Len(t, got, 1)

	require.ErrorContains(t, WriteBatch(dir, []BatchTask{{TaskID: 9, Body: "x", Headers: "not json"}}), "task 9: headers are not a JSON object")
	require.Error(t, WriteBatch(dir, []BatchTask{{TaskID: 9, Body: "x", Headers: "[1]"}}))
	require.Error(t, WriteBatch(filepath.Join(dir, "missing"), tasks))
}

// BenchmarkCollect measures the per-task cost: an empty work dir (most
// tasks) and one with a sink-tasks.txt line, timestamps and task-exec.json.
func BenchmarkCollect(b *testing.B) {
	b.Run("empty", func(b *testing.B) {
		dir := b.TempDir()
		b.ReportAllocs()
		for b.Loop() {
			Collect(dir, Options{})
		}
	})
	b.Run("typical", func(b *testing.B) {
		dir := b.TempDir()
		for name, content := range map[string]string{
			SinkTasks:    "next,body-1,{\"k\":\"v\"}\n",
			Timestamps:   "2023-10-24T18:00:00.123456+0800,start\n2023-10-24T18:00:01.5+0800,end\n",
			TaskExecJSON: `{"statusCode":0,"inputBytes":100,"outputBytes":200}`,
		} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		for b.Loop() {
			Collect(dir, Options{})
		}
	})
}
