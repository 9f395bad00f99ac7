package workdir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/scalebox-hpc/scalebox/message"
)

// taskExec is what task-exec.json (or .yaml) says (spec §3.5, §5.2).
type taskExec struct {
	statusCode              *int
	inputBytes, outputBytes *int64
	inputFiles, outputFiles []fileEntry
	timestamps              []LabeledTime
	text                    []string // userText, messageText
	messages                []message.Message
}

// readTaskExec reads task-exec.json, else task-exec.yaml.
func readTaskExec(w *wdir, loc *time.Location, p *problems) *taskExec {
	if data, ok := readFile(w, TaskExecJSON, maxTaskExec, p); ok {
		if st, err := os.Stat(filepath.Join(w.path, TaskExecYAML)); w.has(TaskExecYAML) && err == nil && st.Mode().IsRegular() {
			p.addf(TaskExecYAML, 0, "ignored: %s is there too", TaskExecJSON)
		}
		return parseTaskExec(data, TaskExecJSON, loc, p)
	}
	if data, ok := readFile(w, TaskExecYAML, maxTaskExec, p); ok {
		return parseTaskExec(data, TaskExecYAML, loc, p)
	}
	return &taskExec{}
}

// parseTaskExec decodes a task-exec file; name's extension picks JSON or
// YAML. Field names are Scalebox's camelCase; snake_case is accepted too.
func parseTaskExec(data []byte, name string, loc *time.Location, p *problems) *taskExec {
	te := &taskExec{}
	var doc map[string]any
	if strings.HasSuffix(name, ".yaml") {
		doc = decodeYAMLObject(data, name, p)
	} else {
		doc = decodeJSONObject(data, name, p)
	}
	if doc == nil {
		return te
	}
	get := func(keys ...string) (any, string, bool) {
		for _, k := range keys {
			if v, ok := doc[k]; ok && v != nil {
				return v, k, true
			}
		}
		return nil, "", false
	}
	if v, k, ok := get("statusCode", "status_code"); ok {
		if n, ok := toInt(v); ok && n >= math.MinInt32 && n <= math.MaxInt32 {
			c := int(n)
			te.statusCode = &c
		} else {
			p.addf(name, 0, "%s: want an integer, got %s", k, describe(v))
		}
	}
	for _, f := range []struct {
		keys []string
		dst  **int64
	}{
		{[]string{"inputBytes", "input_bytes"}, &te.inputBytes},
		{[]string{"outputBytes", "output_bytes"}, &te.outputBytes},
	} {
		if v, k, ok := get(f.keys...); ok {
			if n, ok := toInt(v); ok && n >= 0 {
				*f.dst = &n
			} else {
				p.addf(name, 0, "%s: want a byte count, got %s", k, describe(v))
			}
		}
	}
	for _, f := range []struct {
		keys []string
		dst  *[]fileEntry
	}{
		{[]string{"inputFiles", "input_files"}, &te.inputFiles},
		{[]string{"outputFiles", "output_files"}, &te.outputFiles},
	} {
		if v, k, ok := get(f.keys...); ok {
			for _, s := range stringList(v, name, k, p) {
				if e, ok := parseFileEntry(s); ok {
					*f.dst = append(*f.dst, e)
				}
			}
		}
	}
	if v, k, ok := get("timestamps"); ok {
		for i, s := range stringList(v, name, k, p) {
			lt, err := ParseTimestamp(s, loc)
			if err != nil {
				p.addf(name, 0, "%s[%d]: %v", k, i, err)
				continue
			}
			te.timestamps = append(te.timestamps, lt)
		}
	}
	for _, k := range []string{"userText", "user_text", "messageText", "message_text"} {
		if v, ok := doc[k]; ok && v != nil {
			te.text = append(te.text, textOf(v))
		}
	}
	sink := ""
	if v, k, ok := get("sinkModule", "sink_module", "sinkJob", "sink_job"); ok {
		if s, isStr := v.(string); isStr {
			sink = strings.TrimSpace(s)
		} else {
			p.addf(name, 0, "%s: want a module name, got %s", k, describe(v))
		}
	}
	if v, k, ok := get("messageBody", "message_body"); ok {
		bodies := []string{textOf(v)}
		if arr, isArr := v.([]any); isArr {
			bodies = bodies[:0]
			for _, e := range arr {
				bodies = append(bodies, textOf(e))
			}
		}
		for _, b := range bodies {
			if b == "" {
				p.addf(name, 0, "%s: empty body", k)
				continue
			}
			te.messages = append(te.messages, message.Message{Module: sink, Body: b})
		}
	} else if sink != "" {
		p.addf(name, 0, "sink module %q given without messageBody: no message sent", sink)
	}
	return te
}

// decodeJSONObject decodes one JSON object (numbers kept exact).
func decodeJSONObject(data []byte, name string, p *problems) map[string]any {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if err == io.EOF {
			p.addf(name, 0, "empty file")
			return nil
		}
		p.addf(name, 0, "invalid JSON%s: %v", jsonErrorPos(data, err, dec.InputOffset()), err)
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		p.addf(name, 0, "want a JSON object, got %s", describe(v))
		return nil
	}
	off := dec.InputOffset()
	if rest := bytes.TrimLeft(data[off:], " \t\r\n"); len(rest) > 0 {
		p.addf(name, 0, "data after the JSON object%s ignored", lineCol(data, int64(len(data)-len(rest))))
	}
	return m
}

// decodeYAMLObject decodes one YAML mapping into JSON-like values.
func decodeYAMLObject(data []byte, name string, p *problems) (m map[string]any) {
	defer func() {
		if r := recover(); r != nil { // yaml.v3 has panicked on hostile input before
			p.addf(name, 0, "invalid YAML: %v", r)
			m = nil
		}
	}()
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		p.addf(name, 0, "invalid YAML: %v", err)
		return nil
	}
	if v == nil {
		p.addf(name, 0, "empty file")
		return nil
	}
	m, ok := jsonable(v, 0).(map[string]any)
	if !ok {
		p.addf(name, 0, "want a YAML mapping, got %s", describe(v))
		return nil
	}
	return m
}

// jsonable turns decoded YAML into values encoding/json can marshal:
// maps with string keys, no NaN/Inf, times as RFC 3339 text.
func jsonable(v any, depth int) any {
	if depth > 100 {
		return nil
	}
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonable(e, depth+1)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonable(e, depth+1)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = jsonable(e, depth+1)
		}
		return x
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
		return x
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case nil, bool, string, int, int64, uint64, json.Number:
		return x
	default:
		return fmt.Sprint(x)
	}
}

// jsonErrorPos says where a decoding error is.
func jsonErrorPos(data []byte, err error, fallback int64) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return lineCol(data, se.Offset-1) // Offset is just after the bad byte
	case errors.As(err, &te):
		return lineCol(data, te.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return lineCol(data, int64(len(data)))
	}
	return lineCol(data, fallback)
}

func lineCol(data []byte, off int64) string {
	off = max(0, min(off, int64(len(data))))
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - int64(bytes.LastIndexByte(data[:off], '\n'))
	return fmt.Sprintf(" at line %d, column %d", line, col)
}

// toInt accepts a JSON/YAML integer, an integral float or a numeric string.
func toInt(v any) (int64, bool) {
	switch x := v.(type) {
	case json.Number:
		return parseIntText(string(x))
	case string:
		return parseIntText(strings.TrimSpace(x))
	case int:
		return int64(x), true
	case int64:
		return x, true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
			return 0, false
		}
		return int64(x), true
	}
	return 0, false
}

func parseIntText(s string) (int64, bool) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// stringList accepts an array of strings (numbers are taken as their
// text) or a single string.
func stringList(v any, name, key string, p *problems) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		out := make([]string, 0, len(x))
		for i, e := range x {
			switch e := e.(type) {
			case string:
				out = append(out, e)
			case json.Number, int, int64, uint64, float64:
				out = append(out, fmt.Sprint(e))
			default:
				p.addf(name, 0, "%s[%d]: want a string, got %s", key, i, describe(e))
			}
		}
		return out
	}
	p.addf(name, 0, "%s: want a list of strings, got %s", key, describe(v))
	return nil
}

// textOf is a string as is, anything else as compact JSON.
func textOf(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return string(x)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "string " + strconv.Quote(clip(x, 40))
	case json.Number:
		return "number " + clip(string(x), 40)
	case bool:
		return "boolean " + strconv.FormatBool(x)
	case []any:
		return fmt.Sprintf("a list of %d", len(x))
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return "an object {" + clip(strings.Join(keys, ","), 40) + "}"
	}
	return clip(fmt.Sprintf("%T %v", v, v), 60)
}
