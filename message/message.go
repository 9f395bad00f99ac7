// Package message parses Scalebox's message lines: the lines of
// ${WORK_DIR}/sink-tasks.txt and of `scalebox task add --task-file`. A line
// is one task in one of seven forms:
//
//	body                                   text body, default sink
//	{"k":"v","body":"b"}                   JSON body, default sink
//	body,{"h0":"a"}                        text body + headers
//	{"body":"b"},{"h0":"a"}                JSON body + headers
//	module,body                            named module + text body
//	module,body,{"h0":"a"}                 named module + body + headers
//	module,{"body":"b"},{"h0":"a"}         named module + JSON body + headers
//
// A text body contains no comma unless escaped as `\,`. JSON must be
// compact objects; the headers object is flat (string values; numbers and
// booleans are kept as their JSON text).
package message

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Message is one parsed line.
type Message struct {
	Module  string // "" = the sender's default sink
	Body    string
	Headers map[string]string // nil if none
}

// ParseLine parses one line (without its newline).
func ParseLine(line string) (Message, error) {
	line = strings.TrimRight(line, "\r")
	if strings.TrimSpace(line) == "" {
		return Message{}, errors.New("empty line")
	}
	fields, err := split(line)
	if err != nil {
		return Message{}, err
	}
	var m Message
	last := fields[len(fields)-1]
	if len(fields) >= 2 && last.json {
		h, err := Headers(last.text)
		if err != nil {
			return Message{}, err
		}
		m.Headers = h
		fields = fields[:len(fields)-1]
	}
	switch len(fields) {
	case 1:
		m.Body = fields[0].text
	case 2:
		if fields[0].json {
			return Message{}, fmt.Errorf("module name expected before the body, got JSON %.40q", fields[0].text)
		}
		m.Module, m.Body = fields[0].text, fields[1].text
	default:
		return Message{}, fmt.Errorf("%d comma-separated fields; expected [module,]body[,headers] (escape commas in a body as \\,)", len(fields))
	}
	if m.Body == "" {
		return Message{}, errors.New("empty body")
	}
	return m, nil
}

// Headers parses a flat JSON object of headers.
func Headers(s string) (map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, fmt.Errorf("headers %.60q: %w", s, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		var str string
		if err := json.Unmarshal(v, &str); err == nil {
			out[k] = str
			continue
		}
		if len(v) > 0 && (v[0] == '{' || v[0] == '[') {
			return nil, fmt.Errorf("header %q: nested values are not allowed (headers are flat)", k)
		}
		out[k] = string(v)
	}
	return out, nil
}

// ParseAll reads every non-empty line of r; errors name the line number
// and name (a file name, for messages).
func ParseAll(r io.Reader, name string) ([]Message, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var out []Message
	var errs []error
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		m, err := ParseLine(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", name, n, err))
			continue
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s:%d: %w", name, n+1, err))
	}
	return out, errors.Join(errs...)
}

type field struct {
	text string
	json bool
}

// split cuts a line at top-level commas; a field that starts with '{' runs
// to its matching '}' (strings and escapes respected); `\,` in text is a
// literal comma.
func split(line string) ([]field, error) {
	var out []field
	i := 0
	for {
		if i < len(line) && line[i] == '{' {
			end, err := objectEnd(line, i)
			if err != nil {
				return nil, err
			}
			out = append(out, field{text: line[i:end], json: true})
			i = end
			if i == len(line) {
				return out, nil
			}
			if line[i] != ',' {
				return nil, fmt.Errorf("unexpected %q after a JSON object at column %d", line[i], i+1)
			}
			i++
			continue
		}
		var b strings.Builder
		for i < len(line) && line[i] != ',' {
			if line[i] == '\\' && i+1 < len(line) && line[i+1] == ',' {
				b.WriteByte(',')
				i += 2
				continue
			}
			b.WriteByte(line[i])
			i++
		}
		out = append(out, field{text: b.String()})
		if i == len(line) {
			return out, nil
		}
		i++ // the comma
	}
}

func objectEnd(s string, start int) (int, error) {
	depth := 0
	inStr := false
	for i := start; i < len(s); i++ {
		c := s[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return i + 1, nil
			}
		}
	}
	return 0, fmt.Errorf("unterminated JSON object starting at column %d", start+1)
}
