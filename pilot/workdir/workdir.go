// Package workdir reads and writes Scalebox's per-attempt interface files
// in a module's ${WORK_DIR} (spec §3.1, §3.4, §3.5): the files a program
// leaves behind to emit downstream tasks (sink-tasks.txt), override its
// status code and report bytes, files, timestamps, free text and extra
// attributes (task-exec.json and friends), and the batch file it is given
// when task_batch_size > 1 (input-messages.txt).
//
// All three naming generations are accepted (spec §0.1): Gen 1
// messages.txt/user-file.txt/task-exec.json sinkJob, Gen 2
// sink-tasks.txt/custom-out.txt, Gen 3 auxout.txt/task-exec.yaml/
// extra-attrs.yaml.
//
// Collect never fails and never panics on what a module wrote: every
// problem becomes a line in Files.Problems and the rest is still collected.
// No file is read beyond a fixed limit, and FIFOs, devices and directories
// in place of a file are refused without blocking.
package workdir

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/message"
)

// Interface file names, relative to the work dir.
const (
	SinkTasks       = "sink-tasks.txt"
	TaskExecJSON    = "task-exec.json"
	TaskExecYAML    = "task-exec.yaml"
	Timestamps      = "timestamps.txt"
	AuxOut          = "auxout.txt"
	CustomOut       = "custom-out.txt"
	UserFile        = "user-file.txt"
	UserData        = "user-data.txt"
	InputFilesTxt   = "input-files.txt"
	OutputFilesTxt  = "output-files.txt"
	ExtraAttributes = "extra-attributes.txt"
	ExtraAttrsYAML  = "extra-attrs.yaml"
	RemovedFilesTxt = "removed-files.txt"
	InputMessages   = "input-messages.txt"
	BatchTasks      = "batch-tasks.txt" // the docs' name for input-messages.txt: a symlink to it
)

// messageFiles carry downstream tasks: Gen 2/3 name first, then Gen 1's.
var messageFiles = []string{SinkTasks, "messages.txt", "output-messages.txt"}

// textFiles carry the module's free text; the first one present is used.
var textFiles = []string{AuxOut, CustomOut, UserFile, UserData}

// interfaceFiles are removed by Reset.
var interfaceFiles = []string{
	SinkTasks, "messages.txt", "output-messages.txt",
	TaskExecJSON, TaskExecYAML, Timestamps,
	AuxOut, CustomOut, UserFile, UserData,
	InputFilesTxt, OutputFilesTxt, ExtraAttributes, ExtraAttrsYAML,
	RemovedFilesTxt, "network-files.txt", "cleanup-files.txt",
	InputMessages, BatchTasks,
}

// Read limits.
const (
	maxMessages = 64 << 20 // sink-tasks.txt
	maxTaskExec = 4 << 20  // task-exec.json/yaml
	maxLists    = 16 << 20 // input/output/removed-files.txt
	maxTimes    = 1 << 20  // timestamps.txt
	maxExtra    = 1 << 20  // extra-attributes.txt, extra-attrs.yaml
	maxProblems = 100

	// DefaultOutputCap is Scalebox's output_text_size default.
	DefaultOutputCap = 65535
)

// Options tune Collect.
type Options struct {
	OutputCap       int            // bytes kept of the custom text, marker included; default 65535
	KeepHead        bool           // false (text_trunc_mode HEAD, the default): keep the tail; true: keep the head
	ClusterDataRoot string         // files under it count as global I/O
	GlobalDirs      []string       // more global directories (app global_directories)
	Location        *time.Location // zone of timestamps written without one; nil = time.Local
}

// Files is what a module left in its work dir.
type Files struct {
	Messages     []message.Message // sink-tasks.txt lines, then task-exec sinkModule/sinkJob + messageBody
	StatusCode   *int              // task-exec statusCode: overrides the exit code
	CustomText   string            // auxout.txt | custom-out.txt | user-file.txt | user-data.txt, then task-exec userText/messageText; capped
	UserTimes    []LabeledTime     // timestamps.txt, then task-exec timestamps
	InputBytes   int64             // input-files.txt + task-exec inputBytes (else its inputFiles)
	OutputBytes  int64             // likewise for output
	InputFiles   []string          // paths as listed, without duplicates
	OutputFiles  []string          //
	IOBytes      map[string]int64  // extras.iobytes; nil when the module reported no I/O
	RemovedFiles []string          // removed-files.txt, as listed
	Extra        map[string]any    // extra-attributes.txt / extra-attrs.yaml
	Problems     []string          // "task-exec.json: invalid JSON at line 1, column 9: …", "sink-tasks.txt:3: …"
	// Entries are the names in dir when Collect listed it (a small dir), so
	// that emptying it for the next attempt need not list it again; nil
	// when it was not listed.
	Entries []string
}

// LabeledTime is one user timestamp.
type LabeledTime struct {
	Time  time.Time
	Label string
}

// Collect reads the interface files a module left in dir after its run.
// Bad content never fails the call: each problem becomes a Problem naming
// the file and line, and the rest is still collected.
func Collect(dir string, opt Options) *Files {
	if opt.OutputCap <= 0 {
		opt.OutputCap = DefaultOutputCap
	}
	if opt.Location == nil {
		opt.Location = time.Local
	}
	f := &Files{}
	var p problems
	defer func() { f.Problems = p.result() }()
	w := openWorkDir(dir)
	f.Entries = w.names

	for _, name := range messageFiles {
		if data, ok := readFile(w, name, maxMessages, &p); ok {
			f.Messages = append(f.Messages, parseMessages(data, name, &p)...)
		}
	}

	te := readTaskExec(w, opt.Location, &p)
	f.StatusCode = te.statusCode
	f.Messages = append(f.Messages, te.messages...)

	if data, ok := readFile(w, Timestamps, maxTimes, &p); ok {
		f.UserTimes = parseTimestamps(data, Timestamps, opt.Location, &p)
	}
	f.UserTimes = append(f.UserTimes, te.timestamps...)

	f.CustomText = customText(w, opt, te.text, &p)

	acct := newIOAccount(dir, opt)
	if data, ok := readFile(w, InputFilesTxt, maxLists, &p); ok {
		acct.addList(parseFileList(data, InputFilesTxt, &p), true, &p)
	}
	if data, ok := readFile(w, OutputFilesTxt, maxLists, &p); ok {
		acct.addList(parseFileList(data, OutputFilesTxt, &p), false, &p)
	}
	acct.addTaskExec(te, &p)
	f.InputBytes, f.OutputBytes = acct.inBytes, acct.outBytes
	f.InputFiles, f.OutputFiles = acct.inFiles, acct.outFiles
	f.IOBytes = acct.result()

	if data, ok := readFile(w, RemovedFilesTxt, maxLists, &p); ok {
		for _, e := range parseFileList(data, RemovedFilesTxt, &p) {
			f.RemovedFiles = append(f.RemovedFiles, e.path)
		}
	}

	if data, ok := readFile(w, ExtraAttrsYAML, maxExtra, &p); ok {
		f.Extra = mergeExtra(f.Extra, parseExtraYAML(data, ExtraAttrsYAML, &p))
	}
	if data, ok := readFile(w, ExtraAttributes, maxExtra, &p); ok {
		f.Extra = mergeExtra(f.Extra, parseExtra(data, ExtraAttributes, &p))
	}
	return f
}

// parseMessages parses message lines (all seven forms, see package message).
func parseMessages(data []byte, name string, p *problems) []message.Message {
	var out []message.Message
	eachLine(data, func(n int, line string) {
		if strings.TrimSpace(line) == "" {
			return
		}
		m, err := message.ParseLine(line)
		if err != nil {
			p.addf(name, n, "%v", err)
			return
		}
		out = append(out, m)
	})
	return out
}

// eachLine calls fn with every line of data (1-based numbers, no "\n"/"\r").
func eachLine(data []byte, fn func(n int, line string)) {
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		fn(n, string(bytes.TrimSuffix(line, []byte("\r"))))
	}
}

// Reset removes the interface files (they are consumed per task) but leaves
// everything else, including ${WORK_DIR}/.scalebox/.
func Reset(dir string) error {
	var errs []error
	for _, name := range interfaceFiles {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("reset work dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// BatchTask is one task of a batch.
type BatchTask struct {
	TaskID  int64
	Body    string
	Headers string // JSON object; "" = {}
}

// WriteBatch writes input-messages.txt for a batch (task_batch_size > 1),
// one line "task_id,body,headers-json" per task, and links batch-tasks.txt
// (the docs' name) to it. A body is written as is, except that newlines
// and carriage returns, which would split its line, become `\n` and `\r`.
// Headers are compacted to one line; headers that are not a JSON object
// are an error.
func WriteBatch(dir string, tasks []BatchTask) error {
	var b bytes.Buffer
	var hb bytes.Buffer
	for _, t := range tasks {
		h := strings.TrimSpace(t.Headers)
		if h == "" {
			h = "{}"
		}
		hb.Reset()
		if err := json.Compact(&hb, []byte(h)); err != nil || hb.Len() == 0 || hb.Bytes()[0] != '{' {
			return fmt.Errorf("write batch: task %d: headers are not a JSON object: %.60q", t.TaskID, t.Headers)
		}
		b.WriteString(strconv.FormatInt(t.TaskID, 10))
		b.WriteByte(',')
		body := t.Body
		if strings.ContainsAny(body, "\r\n") {
			body = strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(body)
		}
		b.WriteString(body)
		b.WriteByte(',')
		b.Write(hb.Bytes())
		b.WriteByte('\n')
	}
	path := filepath.Join(dir, InputMessages)
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write batch: %w", err)
	}
	link := filepath.Join(dir, BatchTasks)
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write batch: %w", err)
	}
	if err := os.Symlink(InputMessages, link); err != nil {
		return fmt.Errorf("write batch: %w", err)
	}
	return nil
}

// ReadBatch reads input-messages.txt back (for tests and tools).
func ReadBatch(dir string) ([]BatchTask, error) {
	f, err := os.Open(filepath.Join(dir, InputMessages))
	if err != nil {
		return nil, fmt.Errorf("read batch: %w", err)
	}
	defer f.Close()
	var out []BatchTask
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxMessages)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		id, rest, ok := strings.Cut(line, ",")
		i := strings.LastIndex(rest, ",{")
		if !ok || i < 0 {
			return nil, fmt.Errorf("read batch: line %d: want task_id,body,headers", n)
		}
		tid, err := strconv.ParseInt(id, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("read batch: line %d: %w", n, err)
		}
		out = append(out, BatchTask{TaskID: tid, Body: rest[:i], Headers: rest[i+1:]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read batch: %w", err)
	}
	return out, nil
}

// Remove deletes the files a module listed in removed-files.txt (Scalebox's
// agent does so after byte accounting, e.g. for KEEP_SOURCE_FILE=no).
// Relative paths are relative to dir; missing files are fine; directories
// and the root are refused.
func Remove(dir string, paths []string) error {
	var errs []error
	for _, path := range paths {
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		path = filepath.Clean(path)
		if path == "/" {
			errs = append(errs, errors.New("remove listed file: refusing /"))
			continue
		}
		if st, err := os.Lstat(path); err == nil && st.IsDir() {
			errs = append(errs, fmt.Errorf("remove listed file: %s: is a directory", path))
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove listed file: %w", err))
		}
	}
	return errors.Join(errs...)
}
