package agent

import (
	"encoding/json"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/scalebox-hpc/scalebox/pilot/executor"
)

// ProtocolVersion is the version of the wire protocol spoken by this
// package, carried in the ready line and in every message.
const ProtocolVersion = 1

// MaxRequestBytes caps the size of one Request on the wire.
const MaxRequestBytes = 64 << 20

// readyPrefix starts the ready line; the protocol version follows.
const readyPrefix = "scalebox-slot-agent ready"

// Request asks the agent to run one program: the wire form of an
// [executor.Spec] without Stdin.
type Request struct {
	Version   int           `json:"version"` // ProtocolVersion of the client
	Argv      []string      `json:"argv"`    // program and arguments, exec'd directly
	Env       []string      `json:"env"`     // complete environment; null inherits the agent's (the container's)
	Dir       string        `json:"dir,omitempty"`
	Timeout   time.Duration `json:"timeout_ns,omitempty"` // nanoseconds; 0 = none
	Grace     time.Duration `json:"grace_ns,omitempty"`   // nanoseconds; 0 = executor.DefaultGrace
	OutputCap int           `json:"output_cap,omitempty"` // 0 = executor.DefaultOutputCap
	KeepHead  bool          `json:"keep_head,omitempty"`
}

// newRequest turns a Spec into a Request; s.Stdin is not carried.
func newRequest(s executor.Spec) Request {
	return Request{
		Version:   ProtocolVersion,
		Argv:      s.Argv,
		Env:       s.Env,
		Dir:       s.Dir,
		Timeout:   s.Timeout,
		Grace:     s.Grace,
		OutputCap: s.OutputCap,
		KeepHead:  s.KeepHead,
	}
}

// Spec turns the Request back into an [executor.Spec] (with a nil Stdin).
func (r *Request) Spec() executor.Spec {
	return executor.Spec{
		Argv:      r.Argv,
		Env:       r.Env,
		Dir:       r.Dir,
		Timeout:   r.Timeout,
		Grace:     r.Grace,
		OutputCap: r.OutputCap,
		KeepHead:  r.KeepHead,
	}
}

// Response answers one Request. Result is set when the program ran or
// could not start; Error is set when the run, or the request, failed. Both
// are set when the run was cancelled or its exit status was lost, as
// [executor.Runtime.Run] returns both.
type Response struct {
	Version int         `json:"version"` // ProtocolVersion of the agent
	Result  *WireResult `json:"result,omitempty"`
	Error   string      `json:"error,omitempty"`
}

// WireResult is the wire form of an [executor.Result]: the same fields,
// with StartErr as its message.
type WireResult struct {
	ExitCode int    `json:"exit_code"`
	TimedOut bool   `json:"timed_out,omitempty"`
	Signal   string `json:"signal,omitempty"`

	Stdout      Text  `json:"stdout,omitempty"`
	Stderr      Text  `json:"stderr,omitempty"`
	StdoutBytes int64 `json:"stdout_bytes,omitempty"`
	StderrBytes int64 `json:"stderr_bytes,omitempty"`

	Start     time.Time     `json:"start,omitzero"`
	End       time.Time     `json:"end,omitzero"`
	CPUUser   time.Duration `json:"cpu_user_ns,omitempty"`
	CPUSystem time.Duration `json:"cpu_system_ns,omitempty"`
	MaxRSS    int64         `json:"max_rss,omitempty"`

	ReadBytes  int64 `json:"read_bytes,omitempty"`
	WriteBytes int64 `json:"write_bytes,omitempty"`
	RChar      int64 `json:"rchar,omitempty"`
	WChar      int64 `json:"wchar,omitempty"`

	StartErr string `json:"start_err,omitempty"` // StartErr.Error(); "" if the program started
}

// NewWireResult converts r for the wire; nil stays nil.
func NewWireResult(r *executor.Result) *WireResult {
	if r == nil {
		return nil
	}
	w := &WireResult{
		ExitCode:    r.ExitCode,
		TimedOut:    r.TimedOut,
		Signal:      r.Signal,
		Stdout:      Text(r.Stdout),
		Stderr:      Text(r.Stderr),
		StdoutBytes: r.StdoutBytes,
		StderrBytes: r.StderrBytes,
		Start:       r.Start,
		End:         r.End,
		CPUUser:     r.CPUUser,
		CPUSystem:   r.CPUSystem,
		MaxRSS:      r.MaxRSS,
		ReadBytes:   r.ReadBytes,
		WriteBytes:  r.WriteBytes,
		RChar:       r.RChar,
		WChar:       r.WChar,
	}
	if r.StartErr != nil {
		w.StartErr = r.StartErr.Error()
	}
	return w
}

// Result converts w back; StartErr becomes an error with the same message
// (its wrapped causes, such as a syscall.Errno, do not cross the wire).
// nil stays nil.
func (w *WireResult) Result() *executor.Result {
	if w == nil {
		return nil
	}
	r := &executor.Result{
		ExitCode:    w.ExitCode,
		TimedOut:    w.TimedOut,
		Signal:      w.Signal,
		Stdout:      string(w.Stdout),
		Stderr:      string(w.Stderr),
		StdoutBytes: w.StdoutBytes,
		StderrBytes: w.StderrBytes,
		Start:       w.Start,
		End:         w.End,
		CPUUser:     w.CPUUser,
		CPUSystem:   w.CPUSystem,
		MaxRSS:      w.MaxRSS,
		ReadBytes:   w.ReadBytes,
		WriteBytes:  w.WriteBytes,
		RChar:       w.RChar,
		WChar:       w.WChar,
	}
	if w.StartErr != "" {
		r.StartErr = errors.New(w.StartErr)
	}
	return r
}

// Text is program output on the wire. JSON strings hold only UTF-8, so
// valid UTF-8 travels as a plain JSON string and anything else (a binary
// output, a multi-byte character cut by the output cap) as an object
// {"base64": "..."}, so that every byte arrives as the program wrote it.
type Text string

type textB64 struct {
	Base64 []byte `json:"base64"`
}

// MarshalJSON implements [json.Marshaler].
func (t Text) MarshalJSON() ([]byte, error) {
	if utf8.ValidString(string(t)) {
		return json.Marshal(string(t))
	}
	return json.Marshal(textB64{Base64: []byte(t)})
}

// UnmarshalJSON implements [json.Unmarshaler].
func (t *Text) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '{' {
		var v textB64
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*t = Text(v.Base64)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*t = Text(s)
	return nil
}
