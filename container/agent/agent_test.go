package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/scalebox-hpc/scalebox/pilot/executor"
)

// socketPath returns a path for a unix socket in a fresh directory short
// enough for sun_path (108 bytes), which t.TempDir() may not be.
func socketPath(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ag")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "agent.sock")
}

// startServer serves s on a fresh socket until the test ends, and checks
// then that Serve stopped cleanly.
func startServer(t testing.TB, s *server) Client {
	t.Helper()
	sock := socketPath(t)
	ln, err := Listen(sock)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return Client{Socket: sock}
}

// startAgent serves rt (executor.Host if nil) until the test ends.
func startAgent(t testing.TB, rt executor.Runtime) Client {
	t.Helper()
	if rt == nil {
		rt = executor.Host{}
	}
	log := zap.NewNop()
	if tt, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(tt)
	}
	return startServer(t, &server{rt: rt, maxRequest: MaxRequestBytes, log: log})
}

func sh(script string, env ...string) executor.Spec {
	return executor.Spec{Argv: []string{"sh", "-c", script}, Env: append([]string{"PATH=/usr/bin:/bin"}, env...)}
}

// pending is a run going on in another goroutine.
type pending struct {
	done chan struct{}
	res  *executor.Result
	err  error
}

func newPending() *pending { return &pending{done: make(chan struct{})} }

func goRun(ctx context.Context, rt executor.Runtime, s executor.Spec) *pending {
	p := newPending()
	go func() {
		defer close(p.done)
		p.res, p.err = rt.Run(ctx, s)
	}()
	return p
}

// wait waits for the run to end; the timeout only turns a hang into a failure.
func (p *pending) wait(t *testing.T) (*executor.Result, error) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Fatal("run did not end")
	}
	return p.res, p.err
}

// recordRT runs with executor.Host and publishes the outcome in p.
type recordRT struct{ p *pending }

func (recordRT) Name() string { return "record" }

func (r recordRT) Run(ctx context.Context, s executor.Spec) (*executor.Result, error) {
	defer close(r.p.done)
	r.p.res, r.p.err = executor.Host{}.Run(ctx, s)
	return r.p.res, r.p.err
}

// mkfifo makes a named pipe the program under test writes a line to.
func mkfifo(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, syscall.Mkfifo(path, 0o600))
	return path
}

// readFifo returns the first line written to the fifo at path, failing
// the test if ended is closed first.
func readFifo(t *testing.T, path string, ended <-chan struct{}) string {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0) // O_RDWR: does not wait for a writer
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	lines := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(f).ReadString('\n')
		lines <- s
	}()
	select {
	case s := <-lines:
		return strings.TrimSpace(s)
	case <-ended:
		t.Fatal("the program ended before writing to the fifo")
		return ""
	}
}

// bgScript starts a grandchild that sleeps, reports its pid on $FIFO and
// waits for it.
const bgScript = `sleep 1000 & echo $! > "$FIFO"; wait`

// requireGone checks that process pid is dead or dying: gone, a zombie
// (pid 1 of a test container may not reap), exiting or with SIGKILL
// pending (kill(2) is asynchronous).
func requireGone(t *testing.T, pid int) {
	t.Helper()
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return
	}
	p := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(p + "/stat")
	if err != nil {
		return
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // state ppid pgrp session tty tpgid flags …
	if f[0] == "Z" || f[0] == "X" {
		return
	}
	const pfExiting = 0x4
	if fl, err := strconv.ParseUint(f[6], 10, 64); err == nil && fl&pfExiting != 0 {
		return
	}
	status, err := os.ReadFile(p + "/status")
	if err != nil {
		return
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "SigPnd" || k == "ShdPnd" {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && m&(1<<(int(syscall.SIGKILL)-1)) != 0 {
				return
			}
		}
	}
	t.Fatalf("process %d is still alive: %s", pid, s)
}

// rawExchange sends payload on a fresh connection, half-closes and
// returns the agent's Response.
// rawExchange sends payload and reads the answer. A half-close after the
// payload shows the agent where a broken request ends; for a request that
// runs it would be a cancel (the protocol's hang-up), so a request that is
// meant to run is sent without one.
func rawExchange(t *testing.T, c Client, payload []byte, halfClose bool) Response {
	t.Helper()
	conn, err := net.Dial("unix", c.Socket)
	require.NoError(t, err)
	defer conn.Close()
	// The agent may answer before it has read everything (too large).
	go func() {
		_, _ = conn.Write(payload)
		if halfClose {
			_ = conn.(*net.UnixConn).CloseWrite()
		}
	}()
	var resp Response
	require.NoError(t, json.NewDecoder(conn).Decode(&resp))
	return resp
}

func TestRunLikeHost(t *testing.T) {
	t.Parallel()
	c := startAgent(t, nil)
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, []byte("#!/bin/sh\necho hi\n"), 0o644))
	long := sh("seq 1 10000; seq 1 5000 >&2")
	long.OutputCap = 200
	head := long
	head.KeepHead = true
	tests := map[string]executor.Spec{
		"true":           {Argv: []string{"/bin/true"}},
		"exit 3":         sh("exit 3"),
		"stdout stderr":  sh("echo out; echo err >&2; exit 1"),
		"cap tail":       long,
		"cap head":       head,
		"binary output":  sh(`printf 'a\377\376b'; printf '\303' >&2`),
		"killed":         sh("kill -KILL $$"),
		"not found":      {Argv: []string{"/no/such/program"}},
		"not in PATH":    {Argv: []string{"no-such-program-xyz"}, Env: []string{"PATH=/bin:/usr/bin"}},
		"not executable": {Argv: []string{plain}},
		"bad work dir":   {Argv: []string{"/bin/true"}, Dir: filepath.Join(dir, "nope")},
	}
	for name, spec := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want, err := executor.Host{}.Run(context.Background(), spec)
			require.NoError(t, err)
			got, err := c.Run(context.Background(), spec)
			require.NoError(t, err)
			require.NotNil(t, got)
			require.Equal(t, want.ExitCode, got.ExitCode)
			require.Equal(t, want.TimedOut, got.TimedOut)
			require.Equal(t, want.Signal, got.Signal)
			require.Equal(t, want.Stdout, got.Stdout)
			require.Equal(t, want.Stderr, got.Stderr)
			require.Equal(t, want.StdoutBytes, got.StdoutBytes)
			require.Equal(t, want.StderrBytes, got.StderrBytes)
			if want.StartErr != nil {
				require.EqualError(t, got.StartErr, want.StartErr.Error())
				require.True(t, got.Start.IsZero())
				return
			}
			require.NoError(t, got.StartErr)
			require.False(t, got.Start.IsZero())
			require.False(t, got.End.Before(got.Start))
		})
	}
}

func TestStartErr(t *testing.T) {
	t.Parallel()
	c := startAgent(t, nil)
	res, err := c.Run(context.Background(), executor.Spec{Argv: []string{"/no/such/program"}})
	require.NoError(t, err)
	require.Equal(t, executor.ExitNotFound, res.ExitCode)
	require.ErrorContains(t, res.StartErr, "/no/such/program")
}

func TestEnvAndDir(t *testing.T) {
	t.Parallel()
	c := startAgent(t, nil)
	dir, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)

	s := sh(`printf '%s\n' "$FOO"; pwd`, "FOO=bar baz")
	s.Dir = dir
	res, err := c.Run(context.Background(), s)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode, res.Stderr)
	require.Equal(t, "bar baz\n"+dir+"\n", res.Stdout)

	// An empty environment stays empty; nil inherits the agent's.
	res, err = c.Run(context.Background(), executor.Spec{Argv: []string{"/usr/bin/env"}, Env: []string{}})
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode, res.Stderr)
	require.Empty(t, res.Stdout)
	res, err = c.Run(context.Background(), executor.Spec{Argv: []string{"/usr/bin/env"}})
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode, res.Stderr)
	require.NotEmpty(t, res.Stdout)
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	c := startAgent(t, nil)
	s := sh("echo before; exec sleep 1000")
	s.Timeout = 200 * time.Millisecond
	s.Grace = 200 * time.Millisecond
	res, err := c.Run(context.Background(), s)
	require.NoError(t, err)
	require.True(t, res.TimedOut)
	require.Equal(t, executor.ExitTimeout, res.ExitCode)
	require.Equal(t, "before\n", res.Stdout)
}

func TestCancelKillsGroup(t *testing.T) {
	t.Parallel()
	c := startAgent(t, nil)
	fifo := mkfifo(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := goRun(ctx, c, sh(bgScript, "FIFO="+fifo))
	pid, err := strconv.Atoi(readFifo(t, fifo, p.done))
	require.NoError(t, err)

	cancel()
	res, err := p.wait(t)
	require.ErrorIs(t, err, context.Canceled)
	require.NotNil(t, res, "the killed program's result comes back")
	require.Contains(t, []string{"terminated", "killed"}, res.Signal)
	require.False(t, res.TimedOut)
	requireGone(t, pid)
}

func TestDisconnectKills(t *testing.T) {
	t.Parallel()
	ran := newPending()
	c := startAgent(t, recordRT{p: ran})
	fifo := mkfifo(t)

	conn, err := net.Dial("unix", c.Socket)
	require.NoError(t, err)
	req := newRequest(sh(bgScript, "FIFO="+fifo))
	require.NoError(t, json.NewEncoder(conn).Encode(req))
	pid, err := strconv.Atoi(readFifo(t, fifo, ran.done))
	require.NoError(t, err)

	require.NoError(t, conn.Close())
	res, err := ran.wait(t)
	require.ErrorIs(t, err, context.Canceled)
	require.NotNil(t, res)
	requireGone(t, pid)
}

func TestServeShutdown(t *testing.T) {
	t.Parallel()
	sock := socketPath(t)
	ln, err := Listen(sock)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, executor.Host{}) }()

	fifo := mkfifo(t)
	c := Client{Socket: sock}
	p := goRun(context.Background(), c, sh(`echo started > "$FIFO"; exec sleep 1000`, "FIFO="+fifo))
	require.Equal(t, "started", readFifo(t, fifo, p.done))

	cancel()
	require.NoError(t, <-served)
	res, err := p.wait(t)
	require.ErrorContains(t, err, "shutting down")
	require.NotErrorIs(t, err, context.Canceled, "the client's ctx did not end")
	require.NotNil(t, res)
	require.Equal(t, "terminated", res.Signal)
	_, err = os.Lstat(sock)
	require.ErrorIs(t, err, fs.ErrNotExist, "closing the listener removes the socket")
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	c := startServer(t, &server{rt: executor.Host{}, maxRequest: 1024, log: zaptest.NewLogger(t)})
	tests := map[string]struct {
		payload string
		want    string
	}{
		"garbage":     {"not json{", "bad request"},
		"nothing":     {"", "connection closed before a request"},
		"too large":   {`{"version":1,"argv":["` + strings.Repeat("x", 2000) + `"]}`, "larger than 1024 bytes"},
		"not object":  {"42", "bad request"},
		"wrong type":  {`{"version":1,"argv":"true"}`, "bad request"},
		"empty argv":  {`{"version":1,"argv":[]}`, "empty argv"},
		"no argv":     {`{"version":1}`, "empty argv"},
		"old version": {`{"argv":["/bin/true"]}`, "client speaks version 0, this slot agent 1"},
		"new version": {`{"version":99,"argv":{"changed":true}}`, "client speaks version 99"},
		"empty name":  {`{"version":1,"argv":[""]}`, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			resp := rawExchange(t, c, []byte(tc.payload), tc.want != "")
			require.Equal(t, ProtocolVersion, resp.Version)
			if tc.want == "" { // runs, but cannot start
				require.Empty(t, resp.Error)
				require.NotNil(t, resp.Result)
				require.Equal(t, executor.ExitNotFound, resp.Result.ExitCode)
				return
			}
			require.Contains(t, resp.Error, tc.want)
			require.Nil(t, resp.Result)
		})
	}
	// The agent still serves.
	res, err := c.Run(context.Background(), executor.Spec{Argv: []string{"/bin/true"}})
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode)
}

// panicRT panics on the program "panic" and runs anything else on the host.
type panicRT struct{ executor.Host }

func (r panicRT) Run(ctx context.Context, s executor.Spec) (*executor.Result, error) {
	if s.Argv[0] == "panic" {
		panic("boom")
	}
	return r.Host.Run(ctx, s)
}

func TestPanicRecovered(t *testing.T) {
	t.Parallel()
	c := startAgent(t, panicRT{})
	res, err := c.Run(context.Background(), executor.Spec{Argv: []string{"panic"}})
	require.Nil(t, res)
	require.ErrorContains(t, err, "panic: boom")
	require.ErrorContains(t, err, c.Socket)

	res, err = c.Run(context.Background(), executor.Spec{Argv: []string{"/bin/true"}})
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode)
}

func TestConcurrent(t *testing.T) {
	t.Parallel()
	c := startAgent(t, nil)
	const n = 64
	var wg sync.WaitGroup
	results := make([]*executor.Result, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = c.Run(context.Background(), sh(`echo "$N"`, "N="+strconv.Itoa(i)))
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, strconv.Itoa(i)+"\n", results[i].Stdout)
	}
}

func TestClientErrors(t *testing.T) {
	t.Parallel()
	c := startAgent(t, nil)
	ctx := context.Background()

	_, err := c.Run(ctx, executor.Spec{})
	require.ErrorContains(t, err, "empty argv")

	res, err := c.Run(ctx, executor.Spec{Argv: []string{"/bin/cat"}, Stdin: strings.NewReader("x")})
	require.Nil(t, res)
	require.ErrorContains(t, err, "stdin is not supported through the slot agent")

	done, cancel := context.WithCancel(ctx)
	cancel()
	res, err = c.Run(done, executor.Spec{Argv: []string{"/bin/true"}})
	require.Nil(t, res)
	require.ErrorIs(t, err, context.Canceled)

	missing := Client{Socket: filepath.Join(filepath.Dir(c.Socket), "missing.sock")}
	res, err = missing.Run(ctx, executor.Spec{Argv: []string{"/bin/true"}})
	require.Nil(t, res)
	require.ErrorContains(t, err, missing.Socket)
	require.Equal(t, "agent", c.Name())
}

// fakeAgent accepts one connection, reads the request and answers with
// reply (nothing if reply is nil) before closing.
func fakeAgent(t *testing.T, reply []byte) Client {
	t.Helper()
	sock := socketPath(t)
	ln, err := Listen(sock)
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		var req Request
		if json.NewDecoder(conn).Decode(&req) == nil && reply != nil {
			_, _ = conn.Write(reply)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return Client{Socket: sock}
}

func TestAgentDies(t *testing.T) {
	t.Parallel()
	c := fakeAgent(t, nil)
	res, err := c.Run(context.Background(), executor.Spec{Argv: []string{"/bin/true"}})
	require.Nil(t, res)
	require.ErrorContains(t, err, c.Socket)
	require.ErrorContains(t, err, "did the agent die?")
}

func TestProtocolMismatch(t *testing.T) {
	t.Parallel()
	c := fakeAgent(t, []byte(`{"version":99,"error":"protocol version mismatch"}`+"\n"))
	res, err := c.Run(context.Background(), executor.Spec{Argv: []string{"/bin/true"}})
	require.Nil(t, res)
	require.ErrorContains(t, err, c.Socket)
	require.ErrorContains(t, err, "protocol version 99, this pilot 1")

	// And the other way round: the real agent refuses another version.
	agent := startAgent(t, nil)
	resp := rawExchange(t, agent, []byte(`{"version":2,"argv":["/bin/true"]}`), true)
	require.Equal(t, ProtocolVersion, resp.Version)
	require.Contains(t, resp.Error, "protocol version mismatch: the client speaks version 2, this slot agent 1")
}

func TestAgentMain(t *testing.T) {
	t.Parallel()
	t.Run("stdin EOF", func(t *testing.T) {
		t.Parallel()
		sock := socketPath(t)
		readyR, readyW := io.Pipe()
		stdinR, stdinW := io.Pipe()
		done := make(chan error, 1)
		go func() { done <- Main(context.Background(), sock, readyW, stdinR) }()

		require.NoError(t, ReadReady(readyR))
		fi, err := os.Lstat(sock)
		require.NoError(t, err)
		require.Equal(t, fs.ModeSocket|0o600, fi.Mode())
		res, err := Client{Socket: sock}.Run(context.Background(), sh("echo hi"))
		require.NoError(t, err)
		require.Equal(t, "hi\n", res.Stdout)

		_, err = stdinW.Write([]byte("ignored\n")) // input is not EOF
		require.NoError(t, err)
		require.NoError(t, stdinW.Close())
		require.NoError(t, <-done)
		_, err = os.Lstat(sock)
		require.ErrorIs(t, err, fs.ErrNotExist)
	})
	t.Run("ctx", func(t *testing.T) {
		t.Parallel()
		sock := socketPath(t)
		readyR, readyW := io.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Main(ctx, sock, readyW, nil) }()
		line, err := bufio.NewReader(readyR).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("scalebox-slot-agent ready %d\n", ProtocolVersion), line)
		cancel()
		require.NoError(t, <-done)
		_, err = os.Lstat(sock)
		require.ErrorIs(t, err, fs.ErrNotExist)
	})
	t.Run("listen fails", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "file")
		require.NoError(t, os.WriteFile(path, nil, 0o600))
		require.ErrorContains(t, Main(context.Background(), path, io.Discard, nil), "not a socket")
	})
}

func TestListen(t *testing.T) {
	t.Parallel()
	t.Run("stale socket", func(t *testing.T) {
		t.Parallel()
		sock := socketPath(t)
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		require.NoError(t, err)
		old.SetUnlinkOnClose(false)
		require.NoError(t, old.Close())
		_, err = os.Lstat(sock)
		require.NoError(t, err, "the stale socket is left behind")

		ln, err := Listen(sock)
		require.NoError(t, err)
		fi, err := os.Lstat(sock)
		require.NoError(t, err)
		require.Equal(t, fs.ModeSocket|0o600, fi.Mode())
		require.NoError(t, ln.Close())
		_, err = os.Lstat(sock)
		require.ErrorIs(t, err, fs.ErrNotExist)
	})
	t.Run("regular file", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "agent.sock")
		require.NoError(t, os.WriteFile(path, []byte("keep me"), 0o600))
		_, err := Listen(path)
		require.ErrorContains(t, err, "not a socket")
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Equal(t, "keep me", string(b))
	})
	t.Run("live socket", func(t *testing.T) {
		t.Parallel()
		sock := socketPath(t)
		ln, err := Listen(sock)
		require.NoError(t, err)
		defer ln.Close()
		accepted := make(chan struct{})
		go func() {
			defer close(accepted)
			if conn, err := ln.Accept(); err == nil {
				_ = conn.Close()
			}
		}()
		_, err = Listen(sock)
		require.ErrorContains(t, err, "another process is listening")
		<-accepted
		_, err = os.Lstat(sock)
		require.NoError(t, err, "the live socket is kept")
	})
}

func TestReadReady(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		in, want string // want "" = no error
	}{
		"ready":          {"scalebox-slot-agent ready 1\n", ""},
		"ready crlf":     {"scalebox-slot-agent ready 1\r\n", ""},
		"engine error":   {"Error: image not known: docker://nope\n", `"Error: image not known: docker://nope"`},
		"other version":  {"scalebox-slot-agent ready 2\n", "protocol version 2, this pilot 1"},
		"nothing":        {"", "no ready line"},
		"cut short":      {"scalebox-slot-ag", `"scalebox-slot-ag"`},
		"too long":       {strings.Repeat("x", 5000) + "\n", "longer than"},
		"prefix garbage": {"scalebox-slot-agent ready 1 extra\n", `got "scalebox-slot-agent ready 1 extra"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := ReadReady(strings.NewReader(tc.in))
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
	// Nothing after the line is consumed.
	r := strings.NewReader("scalebox-slot-agent ready 1\nlater output")
	require.NoError(t, ReadReady(r))
	rest, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, "later output", string(rest))
}

func TestWireResultRoundTrip(t *testing.T) {
	t.Parallel()
	start := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	in := &executor.Result{
		ExitCode: 124, TimedOut: true, Signal: "killed",
		Stdout: "out \xff\xfe", Stderr: "err ☃",
		StdoutBytes: 10, StderrBytes: 20,
		Start: start, End: start.Add(time.Second),
		CPUUser: time.Millisecond, CPUSystem: 2 * time.Millisecond, MaxRSS: 1 << 20,
		ReadBytes: 1, WriteBytes: 2, RChar: 3, WChar: 4,
		StartErr: errors.New("start x: not found"),
	}
	b, err := json.Marshal(Response{Version: ProtocolVersion, Result: NewWireResult(in)})
	require.NoError(t, err)
	require.Contains(t, string(b), `"stderr":"err ☃"`, "UTF-8 output travels as a plain string")
	var resp Response
	require.NoError(t, json.Unmarshal(b, &resp))
	require.Equal(t, in, resp.Result.Result())

	require.Nil(t, NewWireResult(nil))
	require.Nil(t, (*WireResult)(nil).Result())
	zero, err := json.Marshal(NewWireResult(&executor.Result{}))
	require.NoError(t, err)
	require.JSONEq(t, `{"exit_code":0}`, string(zero))
}

func BenchmarkClientRun(b *testing.B) {
	c := startAgent(b, nil)
	s := executor.Spec{Argv: []string{"/bin/true"}}
	for b.Loop() {
		if _, err := c.Run(context.Background(), s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHostRun(b *testing.B) {
	s := executor.Spec{Argv: []string{"/bin/true"}}
	for b.Loop() {
		if _, err := (executor.Host{}).Run(context.Background(), s); err != nil {
			b.Fatal(err)
		}
	}
}
