package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The test binary doubles as a well-behaved program: with EXECUTOR_HELPER
// set it prints what it received and exits.
func TestMain(m *testing.M) {
	switch os.Getenv("EXECUTOR_HELPER") {
	case "":
		os.Exit(m.Run())
	case "argv":
		_ = json.NewEncoder(os.Stdout).Encode(os.Args[1:])
	case "env":
		wd, _ := os.Getwd()
		_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"env": os.Environ(), "wd": wd})
	}
	os.Exit(0)
}

func helper(t *testing.T, mode string, args ...string) Spec {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	return Spec{Argv: append([]string{exe}, args...), Env: []string{"EXECUTOR_HELPER=" + mode}}
}

func sh(script string) Spec {
	return Spec{Argv: []string{"bash", "-c", script}, Env: []string{"PATH=/usr/bin:/bin"}}
}

func runOK(t *testing.T, s Spec) *Result {
	t.Helper()
	res, err := Host{}.Run(context.Background(), s)
	require.NoError(t, err)
	require.NotNil(t, res)
	return res
}

// groupAlive lists the processes of group pgid that are alive and not
// about to die: zombies and processes with a SIGKILL pending (kill(2) is
// asynchronous) or already exiting (PF_EXITING) do not count.
func groupAlive(t *testing.T, pgid int) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var alive []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // state ppid pgrp …
		if len(f) < 7 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		const pfExiting = 0x4
		if fl, err := strconv.ParseUint(f[6], 10, 64); err == nil && fl&pfExiting != 0 {
			continue
		}
		if f[2] == strconv.Itoa(pgid) && !killPending(e.Name()) {
			alive = append(alive, s)
		}
	}
	return alive
}

func killPending(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return true // gone
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "SigPnd" && k != "ShdPnd") {
			continue
		}
		if m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && m&(1<<(9-1)) != 0 {
			return true
		}
	}
	return false
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, []byte("#!/bin/sh\necho hi\n"), 0o644))
	noInterp := filepath.Join(dir, "nointerp")
	require.NoError(t, os.WriteFile(noInterp, []byte("#!/no/such/interpreter\n"), 0o755))
	tests := []struct {
		name     string
		spec     Spec
		code     int
		startErr bool
	}{
		{"ok", Spec{Argv: []string{"/bin/true"}}, 0, false},
		{"exit 3", sh("exit 3"), 3, false},
		{"bare name in PATH", Spec{Argv: []string{"false"}, Env: []string{"PATH=/nonexistent:/bin:/usr/bin"}}, 1, false},
		{"missing absolute", Spec{Argv: []string{"/no/such/program"}}, ExitNotFound, true},
		{"missing in PATH", Spec{Argv: []string{"no-such-program-xyz"}, Env: []string{"PATH=/bin:/usr/bin"}}, ExitNotFound, true},
		{"empty PATH", Spec{Argv: []string{"true"}, Env: []string{}}, ExitNotFound, true},
		{"not executable", Spec{Argv: []string{plain}}, ExitNotExecutable, true},
		{"not executable in PATH", Spec{Argv: []string{"plain"}, Env: []string{"PATH=" + dir}}, ExitNotExecutable, true},
		{"directory", Spec{Argv: []string{dir}}, ExitNotExecutable, true},
		{"bad interpreter", Spec{Argv: []string{noInterp}}, ExitNotExecutable, true},
		{"missing work dir", Spec{Argv: []string{"/bin/true"}, Dir: filepath.Join(dir, "nope")}, ExitNotExecutable, true},
		{"relative to dir", Spec{Argv: []string{"./plain"}, Dir: dir}, ExitNotExecutable, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := runOK(t, tc.spec)
			require.Equal(t, tc.code, res.ExitCode, "%+v", res)
			require.Equal(t, tc.startErr, res.StartErr != nil, "StartErr %v", res.StartErr)
			require.False(t, res.TimedOut)
			if tc.startErr {
				require.True(t, res.Start.IsZero())
			} else {
				require.False(t, res.Start.IsZero())
				require.False(t, res.End.Before(res.Start))
			}
		})
	}
}

func TestEmptyArgv(t *testing.T) {
	t.Parallel()
	res, err := Host{}.Run(context.Background(), Spec{})
	require.Error(t, err)
	require.Nil(t, res)
	require.Equal(t, "host", Host{}.Name())
}

func TestArgvVerbatim(t *testing.T) {
	t.Parallel()
	body := "a body with  spaces, \"double\" and 'single' quotes; $(rm -rf /) `id` $HOME \\ * ?\nsecond line\ttab\n"
	headers := `{"from_module":"m 1","x":"$(touch /tmp/pwned)"}`
	res := runOK(t, helper(t, "argv", body, headers, "", "-x"))
	require.Equal(t, 0, res.ExitCode, res.Stderr)
	var got []string
	require.NoError(t, json.Unmarshal([]byte(res.Stdout), &got))
	require.Equal(t, []string{body, headers, "", "-x"}, got)
}

func TestEnvAndDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := helper(t, "env")
	s.Env = append(s.Env, "WORK_DIR="+dir, "BODY=a b,c")
	s.Dir = dir
	res := runOK(t, s)
	require.Equal(t, 0, res.ExitCode, res.Stderr)
	var got struct {
		Env []string
		WD  string
	}
	require.NoError(t, json.Unmarshal([]byte(res.Stdout), &got))
	require.ElementsMatch(t, s.Env, got.Env)
	require.Equal(t, dir, got.WD)
}

func TestStdin(t *testing.T) {
	t.Parallel()
	res := runOK(t, Spec{Argv: []string{"/bin/cat"}, Stdin: strings.NewReader("from stdin\n")})
	require.Equal(t, "from stdin\n", res.Stdout)

	f, err := os.Open("/etc/hostname")
	if err == nil {
		defer f.Close()
		want, _ := os.ReadFile("/etc/hostname")
		res = runOK(t, Spec{Argv: []string{"/bin/cat"}, Stdin: f})
		require.Equal(t, string(want), res.Stdout)
	}

	res = runOK(t, Spec{Argv: []string{"/bin/cat"}}) // /dev/null
	require.Equal(t, "", res.Stdout)
	require.Equal(t, 0, res.ExitCode)

	// A program that never reads stdin must not wedge the feeder.
	res = runOK(t, Spec{Argv: []string{"/bin/true"}, Stdin: io.LimitReader(zeros{}, 10<<20), Grace: time.Second})
	require.Equal(t, 0, res.ExitCode)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestStdoutStderr(t *testing.T) {
	t.Parallel()
	res := runOK(t, sh(`echo out; echo err >&2; printf 'no newline'`))
	require.Equal(t, "out\nno newline", res.Stdout)
	require.Equal(t, "err\n", res.Stderr)
	require.EqualValues(t, len("out\nno newline"), res.StdoutBytes)
	require.EqualValues(t, 4, res.StderrBytes)
}

func TestTimeoutKillsGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// The grandchild records its pid, then would write `late` after the
	// timeout; the program waits until the grandchild is up.
	s := sh(`sh -c 'echo $$ > gc.pid; sleep 3; touch late' &
		until [ -s gc.pid ]; do sleep 0.01; done
		echo ready; sleep 100`)
	s.Dir = dir
	s.Timeout = 300 * time.Millisecond
	s.Grace = 2 * time.Second
	start := time.Now()
	res := runOK(t, s)
	require.Less(t, time.Since(start), 2*time.Second, "SIGTERM should have been enough")
	require.True(t, res.TimedOut)
	require.Equal(t, ExitTimeout, res.ExitCode)
	require.Equal(t, "terminated", res.Signal)
	require.Equal(t, "ready\n", res.Stdout)

	b, err := os.ReadFile(filepath.Join(dir, "gc.pid"))
	require.NoError(t, err)
	gc, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	pgid := pgidOf(t, gc)
	require.Empty(t, groupAlive(t, pgid), "group %d still alive", pgid)
	require.NoFileExists(t, filepath.Join(dir, "late"))
}

// pgidOf returns the group a (possibly dead) process was in; it is the
// program's pid, which the test learns through the grandchild.
func pgidOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return pid // gone and reaped: nothing left to check by group
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	g, err := strconv.Atoi(f[2])
	require.NoError(t, err)
	return g
}

func TestTimeoutIgnoredTERM(t *testing.T) {
	t.Parallel()
	s := sh(`trap '' TERM; echo ready; sleep 100; echo survived`)
	s.Timeout = 100 * time.Millisecond
	s.Grace = 200 * time.Millisecond
	res := runOK(t, s)
	require.True(t, res.TimedOut)
	require.Equal(t, ExitTimeout, res.ExitCode)
	require.Equal(t, "killed", res.Signal)
	require.Equal(t, "ready\n", res.Stdout)
}

func TestNoTimeoutWhenFast(t *testing.T) {
	t.Parallel()
	s := sh("exit 7")
	s.Timeout = time.Minute
	res := runOK(t, s)
	require.False(t, res.TimedOut)
	require.Equal(t, 7, res.ExitCode)
}

func TestKilledBySignal(t *testing.T) {
	t.Parallel()
	res := runOK(t, sh(`kill -KILL $$`))
	require.Equal(t, 137, res.ExitCode)
	require.Equal(t, "killed", res.Signal)
	require.False(t, res.TimedOut)

	res = runOK(t, sh(`kill -TERM $$`))
	require.Equal(t, 143, res.ExitCode)
	require.Equal(t, "terminated", res.Signal)
}

func TestPipeHeldByGrandchild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := sh(`sleep 100 & echo $! > bg.pid; echo hi`)
	s.Dir = dir
	s.Grace = 200 * time.Millisecond
	start := time.Now()
	res := runOK(t, s)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Equal(t, 0, res.ExitCode)
	require.Equal(t, "hi\n", res.Stdout)
	b, err := os.ReadFile(filepath.Join(dir, "bg.pid"))
	require.NoError(t, err)
	bg, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	require.Empty(t, groupAlive(t, pgidOf(t, bg)))
}

func TestLeftoversKilled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A background process that closed its pipes is killed with the group too.
	s := sh(`sleep 100 >/dev/null 2>&1 & echo $! > bg.pid`)
	s.Dir = dir
	res := runOK(t, s)
	require.Equal(t, 0, res.ExitCode)
	b, err := os.ReadFile(filepath.Join(dir, "bg.pid"))
	require.NoError(t, err)
	bg, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	require.Empty(t, groupAlive(t, pgidOf(t, bg)))
}

// cancelOnRead cancels a context the first time the child's stdin is fed,
// which happens only once the program runs.
type cancelOnRead struct{ cancel context.CancelFunc }

func (c cancelOnRead) Read([]byte) (int, error) { c.cancel(); return 0, io.EOF }

func TestContextCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := sh(`sleep 100 & sleep 100`)
	s.Stdin = cancelOnRead{cancel}
	s.Grace = time.Second
	res, err := Host{}.Run(ctx, s)
	require.ErrorIs(t, err, context.Canceled)
	require.NotNil(t, res)
	require.False(t, res.TimedOut)
	require.Equal(t, 143, res.ExitCode)

	res, err = Host{}.Run(ctx, Spec{Argv: []string{"/bin/true"}})
	require.ErrorIs(t, err, context.Canceled)
	require.Nil(t, res)
}

func TestOutputCap(t *testing.T) {
	t.Parallel()
	// seq 1 20000 prints 108894 bytes.
	var full bytes.Buffer
	for i := 1; i <= 20000; i++ {
		fmt.Fprintf(&full, "%d\n", i)
	}
	for _, keepHead := range []bool{false, true} {
		for _, limit := range []int{1000, 65535, 200000} {
			t.Run(fmt.Sprintf("head=%v/cap=%d", keepHead, limit), func(t *testing.T) {
				t.Parallel()
				s := sh(`seq 1 20000; seq 1 20000 >&2`)
				s.OutputCap, s.KeepHead = limit, keepHead
				res := runOK(t, s)
				require.EqualValues(t, full.Len(), res.StdoutBytes)
				require.EqualValues(t, full.Len(), res.StderrBytes)
				require.Equal(t, res.Stdout, res.Stderr)
				checkCapped(t, res.Stdout, full.String(), limit, keepHead)
			})
		}
	}
}

// checkCapped checks that got is want capped to limit: marker, kept part
// and the count in the marker add up.
func checkCapped(t *testing.T, got, want string, limit int, keepHead bool) {
	t.Helper()
	require.LessOrEqual(t, len(got), limit)
	if len(want) <= limit {
		require.Equal(t, want, got)
		return
	}
	var kept, mark string
	if keepHead {
		i := strings.LastIndex(got, "[… ")
		require.GreaterOrEqual(t, i, 0, "marker missing")
		kept, mark = got[:i], got[i:]
		require.True(t, strings.HasPrefix(want, kept))
	} else {
		i := strings.Index(got, " bytes cut …]\n")
		require.GreaterOrEqual(t, i, 0, "marker missing")
		mark, kept = got[:i+len(" bytes cut …]\n")], got[i+len(" bytes cut …]\n"):]
		require.True(t, strings.HasSuffix(want, kept))
	}
	require.Equal(t, fmt.Sprintf("[… %d bytes cut …]\n", len(want)-len(kept)), mark)
	require.Greater(t, len(got), limit-40, "too much dropped")
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		limit    int
		keepHead bool
		want     string
	}{
		{"fits", "hello", 10, false, "hello"},
		{"exact", "hello", 5, false, "hello"},
		{"tail", strings.Repeat("x", 30) + "END", 25, false, "[… 31 bytes cut …]\n" + "ND"},
		{"head", "BEG" + strings.Repeat("x", 30), 25, true, "BE" + "[… 31 bytes cut …]\n"},
		{"tiny cap no marker tail", "abcdef", 3, false, "def"},
		{"tiny cap no marker head", "abcdef", 3, true, "abc"},
		{"utf8 tail", strings.Repeat("é", 20), 26, false, "[… 38 bytes cut …]\n" + "é"},
		{"utf8 head", strings.Repeat("é", 20), 26, true, "é" + "[… 38 bytes cut …]\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := capBuf{limit: tc.limit, keepHead: tc.keepHead}
			for i := 0; i < len(tc.in); i += 7 {
				c.write([]byte(tc.in[i:min(i+7, len(tc.in))]))
			}
			got, total := c.text()
			require.EqualValues(t, len(tc.in), total)
			require.Equal(t, tc.want, got)
			require.LessOrEqual(t, len(got), tc.limit)
		})
	}
}

func TestCapBufMatchesReference(t *testing.T) {
	t.Parallel()
	var stream []byte
	for i := 0; len(stream) < 300_000; i++ {
		stream = append(stream, fmt.Sprintf("line %d %s\n", i, strings.Repeat("ab", i%50))...)
	}
	for _, keepHead := range []bool{false, true} {
		for _, limit := range []int{64, 100, 4096, 65535, 1 << 20} {
			for _, chunk := range []int{1, 13, 4096, 100_000} {
				c := capBuf{limit: limit, keepHead: keepHead}
				for i := 0; i < len(stream); i += chunk {
					c.write(stream[i:min(i+chunk, len(stream))])
				}
				got, total := c.text()
				require.EqualValues(t, len(stream), total)
				checkCapped(t, got, string(stream), limit, keepHead)
				require.LessOrEqual(t, cap(c.buf), limit)
			}
		}
	}
}

func TestWriteBytesCounted(t *testing.T) {
	t.Parallel()
	s := sh(`dd if=/dev/zero of=f bs=1M count=3 conv=fsync status=none && cat f > /dev/null`)
	s.Dir = t.TempDir()
	res := runOK(t, s)
	require.Equal(t, 0, res.ExitCode, res.Stderr)
	require.GreaterOrEqual(t, res.WriteBytes, int64(3<<20))
	require.GreaterOrEqual(t, res.WChar, int64(3<<20))
	require.GreaterOrEqual(t, res.RChar, int64(6<<20), "dd read 3 MiB of zeros, cat 3 MiB of f")
}

func TestCPUCounted(t *testing.T) {
	t.Parallel()
	// The busy loop runs in a subshell: a descendant the program reaps.
	res := runOK(t, sh(`( i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done ); echo done`))
	require.Equal(t, "done\n", res.Stdout)
	require.Greater(t, res.CPUUser+res.CPUSystem, 50*time.Millisecond)
	require.Greater(t, res.MaxRSS, int64(100<<10))
	require.GreaterOrEqual(t, res.End.Sub(res.Start), res.CPUUser/2)
}

// Not parallel: it measures allocation of the whole process.
func TestLargeOutputBounded(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := sh(`head -c 50000000 /dev/zero; head -c 20000000 /dev/zero >&2`)
	res := runOK(t, s)
	runtime.ReadMemStats(&after)
	require.Equal(t, 0, res.ExitCode)
	require.EqualValues(t, 50_000_000, res.StdoutBytes)
	require.EqualValues(t, 20_000_000, res.StderrBytes)
	require.LessOrEqual(t, len(res.Stdout), DefaultOutputCap)
	require.True(t, strings.HasPrefix(res.Stdout, "[… "))
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(4<<20), "allocated while capturing 70 MB")
}

// Not parallel: counts goroutines.
func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	specs := []Spec{
		{Argv: []string{"/bin/true"}},
		sh(`sleep 100 & echo hi`),
		{Argv: []string{"/no/such"}},
		{Argv: []string{"/bin/cat"}, Stdin: strings.NewReader("x")},
	}
	specs[1].Grace = 100 * time.Millisecond
	to := sh(`sleep 100`)
	to.Timeout, to.Grace = 50*time.Millisecond, 100*time.Millisecond
	specs = append(specs, to)
	var wg sync.WaitGroup
	for _, s := range specs {
		wg.Go(func() { _, _ = Host{}.Run(context.Background(), s) })
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	require.LessOrEqual(t, runtime.NumGoroutine(), base)
}

// Without pidfds (Linux < 5.3) Run polls for the exit: same results.
// Not parallel: it flips a package switch.
func TestWithoutPidfd(t *testing.T) {
	noPidfd.Store(true)
	defer noPidfd.Store(false)

	res := runOK(t, sh(`echo out; echo err >&2; exit 3`))
	require.Equal(t, 3, res.ExitCode)
	require.Equal(t, "out\n", res.Stdout)
	require.Equal(t, "err\n", res.Stderr)

	res = runOK(t, sh(`exec >&- 2>&-; sleep 0.2; exit 4`)) // pipes closed long before the exit
	require.Equal(t, 4, res.ExitCode)

	dir := t.TempDir()
	s := sh(`sleep 100 & echo $! > bg.pid; echo hi`)
	s.Dir, s.Grace = dir, 200*time.Millisecond
	res = runOK(t, s)
	require.Equal(t, "hi\n", res.Stdout)
	b, err := os.ReadFile(filepath.Join(dir, "bg.pid"))
	require.NoError(t, err)
	bg, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	require.Empty(t, groupAlive(t, pgidOf(t, bg)))

	s = sh(`echo ready; sleep 100`)
	s.Timeout = 100 * time.Millisecond
	res = runOK(t, s)
	require.True(t, res.TimedOut)
	require.Equal(t, ExitTimeout, res.ExitCode)
	require.Equal(t, "ready\n", res.Stdout)

	s = sh(`dd if=/dev/zero of=f bs=1M count=1 conv=fsync status=none`)
	s.Dir = t.TempDir()
	res = runOK(t, s)
	require.GreaterOrEqual(t, res.WriteBytes, int64(1<<20))
}

func TestParseProcIO(t *testing.T) {
	t.Parallel()
	var r Result
	parseProcIO([]byte("rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n"), &r)
	require.Equal(t, Result{RChar: 10, WChar: 20, ReadBytes: 4096, WriteBytes: 8192}, r)
	parseProcIO([]byte("garbage\n::\nwrite_bytes"), &r) // no panic
	require.Equal(t, "/proc/123/io", string(append(appendInt([]byte("/proc/"), 123), "/io"...)))
}

func TestStartErrorIsNotRunError(t *testing.T) {
	t.Parallel()
	res, err := Host{}.Run(context.Background(), Spec{Argv: []string{"/no/such"}})
	require.NoError(t, err)
	require.True(t, errors.Is(res.StartErr, os.ErrNotExist) || strings.Contains(res.StartErr.Error(), "no such"), res.StartErr)
}

// BenchmarkHostTrue runs /bin/true one after the other. Besides runs/s it
// reports the CPU time per run of the pilot side (Run itself) and of the
// child (fork, exec, dynamic loading of /bin/true).
func BenchmarkHostTrue(b *testing.B) {
	s := Spec{Argv: []string{"/bin/true"}, Env: benchEnv(), Dir: b.TempDir(), Timeout: time.Minute}
	ctx := context.Background()
	b.ReportAllocs()
	self0, child0 := cpuTimes()
	for b.Loop() {
		res, err := Host{}.Run(ctx, s)
		if err != nil || res.ExitCode != 0 {
			b.Fatal(err, res)
		}
	}
	self1, child1 := cpuTimes()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
	b.ReportMetric(float64((self1-self0).Microseconds())/float64(b.N), "pilot-cpu-us/op")
	b.ReportMetric(float64((child1-child0).Microseconds())/float64(b.N), "child-cpu-us/op")
}

// BenchmarkHostTrueParallel runs /bin/true from 4 goroutines (2 per core),
// as a pilot with several slots does.
func BenchmarkHostTrueParallel(b *testing.B) {
	s := Spec{Argv: []string{"/bin/true"}, Env: benchEnv(), Dir: b.TempDir(), Timeout: time.Minute}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(2)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := Host{}.Run(ctx, s)
			if err != nil || res.ExitCode != 0 {
				b.Error(err, res)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
}

// BenchmarkRawForkExecWait is the floor: fork, exec and wait4 alone, no
// pipes, no measurement.
func BenchmarkRawForkExecWait(b *testing.B) {
	env := benchEnv()
	self0, child0 := cpuTimes()
	for b.Loop() {
		pid, err := syscall.ForkExec("/bin/true", []string{"/bin/true"}, &syscall.ProcAttr{Env: env, Sys: &syscall.SysProcAttr{Setpgid: true}})
		if err != nil {
			b.Fatal(err)
		}
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
	}
	self1, child1 := cpuTimes()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
	b.ReportMetric(float64((self1-self0).Microseconds())/float64(b.N), "pilot-cpu-us/op")
	b.ReportMetric(float64((child1-child0).Microseconds())/float64(b.N), "child-cpu-us/op")
}

func cpuTimes() (self, children time.Duration) {
	var s, c syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &s)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c)
	return time.Duration(s.Utime.Nano() + s.Stime.Nano()), time.Duration(c.Utime.Nano() + c.Stime.Nano())
}

// benchEnv is about what the pilot gives a module: the pilot's own
// environment plus some 25 Scalebox variables.
func benchEnv() []string {
	env := os.Environ()
	for i := range 25 {
		env = append(env, fmt.Sprintf("SCALEBOX_VAR_%d=value-%d", i, i))
	}
	return env
}

func FuzzCapBuf(f *testing.F) {
	f.Add([]byte("héllo wörld\n"), uint16(64), uint8(3), false)
	f.Add([]byte(strings.Repeat("0123456789", 40)), uint16(100), uint8(7), true)
	f.Fuzz(func(t *testing.T, data []byte, limit uint16, chunk uint8, keepHead bool) {
		if limit < 64 || chunk == 0 {
			return
		}
		stream := bytes.Repeat(data, 3)
		c := capBuf{limit: int(limit), keepHead: keepHead}
		for i := 0; i < len(stream); i += int(chunk) {
			c.write(stream[i:min(i+int(chunk), len(stream))])
		}
		got, total := c.text()
		if total != int64(len(stream)) {
			t.Fatalf("total %d, want %d", total, len(stream))
		}
		checkCapped(t, got, string(stream), int(limit), keepHead)
	})
}
