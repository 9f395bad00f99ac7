// Package executor runs one module program and measures it: exit code,
// capped stdout/stderr, CPU time, peak memory and the bytes its process
// tree read and wrote.
//
// Host runs the program directly on the node (no container). The program is
// exec'd from an argv vector, never through a shell string, in a process
// group of its own so a timeout or a cancellation reaches its grandchildren
// too. When Run returns, no process of that group is alive any more and no
// goroutine started by Run is left behind.
//
// Run is lean, for thousands of short tasks a second: the calling
// goroutine polls the output pipes and the program's pidfd itself (it
// holds an OS thread meanwhile); timers exist only when a Timeout or a
// cancellable ctx asks for them; a goroutine only feeds a Spec.Stdin that
// is not a file.
//
// Host is Linux-only: it relies on process groups, waitid(WNOWAIT) and
// /proc/<pid>/io.
package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults and reserved exit codes (Scalebox §3.2, §4.4).
const (
	DefaultGrace      = 5 * time.Second
	DefaultOutputCap  = 65535
	ExitTimeout       = 124 // killed after Spec.Timeout
	ExitLost          = 125 // the exit status was lost (the program was reaped by someone else)
	ExitNotExecutable = 126 // the program exists but could not be executed
	ExitNotFound      = 127 // the program does not exist
)

// Spec says what to run and how.
type Spec struct {
	Argv      []string      // program and arguments, exec'd directly; a name without '/' is looked up in Env's PATH
	Env       []string      // complete environment "K=V"; nil inherits the pilot's environment (as os/exec)
	Dir       string        // working directory (the attempt's WORK_DIR); "" = the pilot's
	Timeout   time.Duration // 0 = none; on expiry the process group gets SIGTERM, then SIGKILL after Grace; exit code 124
	Grace     time.Duration // SIGTERM→SIGKILL delay and how long output pipes may outlive the program; default 5s
	OutputCap int           // bytes kept of stdout and of stderr each, marker included; default 65535
	KeepHead  bool          // false (Scalebox text_trunc_mode HEAD, the default): cut the head, keep the tail; true: keep the head
	Stdin     io.Reader     // optional; nil = /dev/null
}

// Result is what one run did.
type Result struct {
	ExitCode int    // program's exit code; 124 on timeout; 128+signal if killed by a signal; 127 program missing; 126 not executable
	TimedOut bool   // Spec.Timeout expired and the group was killed
	Signal   string // signal that ended the program ("killed", "terminated"), "" if it exited

	Stdout, Stderr           string // capped to Spec.OutputCap, with "[… N bytes cut …]\n" where bytes were dropped
	StdoutBytes, StderrBytes int64  // total produced

	Start, End         time.Time     // exec and exit
	CPUUser, CPUSystem time.Duration // rusage of the program and the descendants it reaped
	MaxRSS             int64         // bytes, largest of the program and its reaped descendants

	// From /proc/<pid>/io of the exited program, which includes the
	// descendants it reaped; 0 if unreadable. ReadBytes/WriteBytes count
	// storage I/O; RChar/WChar count every read/write call (pipes, caches).
	ReadBytes, WriteBytes int64
	RChar, WChar          int64

	StartErr error // why the program could not start (ExitCode is then 126 or 127)
}

// Runtime runs programs somewhere: on the host, in a container, ….
type Runtime interface {
	Name() string
	// Run runs s to completion. A program that cannot start is a Result
	// with StartErr set, not an error. When ctx ends first, the process
	// group is killed as on a timeout, and Run returns the Result together
	// with ctx.Err(). A lost exit status is a Result with ExitCode 125 and
	// an error. Other errors (no pipes, empty Argv, ctx already done) come
	// with a nil Result.
	Run(ctx context.Context, s Spec) (*Result, error)
}

// Host runs programs directly on this node.
type Host struct{}

var _ Runtime = Host{}

// Name implements Runtime.
func (Host) Name() string { return "host" }

// run is the state of one Run shared with its timers and goroutines.
type run struct {
	pid   int
	pidfd int // -1 without pidfd support (Linux < 5.3)
	grace time.Duration

	mu       sync.Mutex
	exited   bool // the program has exited (a zombie until reaped)
	reaped   bool // the pid is gone: no more signals
	timedOut bool
	kill     *time.Timer // SIGKILL after grace, once SIGTERM was sent
}

// signalGroup sends sig to the group and to the leader (in case it left the
// group). The caller holds r.mu and r.reaped is false, so the unreaped
// leader keeps the pid and the group id from being reused.
func (r *run) signalGroup(sig syscall.Signal) {
	_ = syscall.Kill(-r.pid, sig)
	_ = syscall.Kill(r.pid, sig)
}

// stop ends the program: SIGTERM now, SIGKILL after grace. After the
// program has exited only leftovers remain, and they get SIGKILL at once.
func (r *run) stop(timeout bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.reaped:
	case r.exited:
		r.signalGroup(syscall.SIGKILL)
	case r.kill == nil:
		r.timedOut = r.timedOut || timeout
		r.signalGroup(syscall.SIGTERM)
		r.kill = time.AfterFunc(r.grace, func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			if !r.reaped {
				r.signalGroup(syscall.SIGKILL)
			}
		})
	}
}

// Run implements Runtime.
func (Host) Run(ctx context.Context, s Spec) (*Result, error) {
	if len(s.Argv) == 0 {
		return nil, errors.New("run program: empty argv")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	grace := s.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	outCap := s.OutputCap
	if outCap <= 0 {
		outCap = DefaultOutputCap
	}
	env := s.Env
	if env == nil {
		env = os.Environ()
	}
	res := &Result{}
	path, code, err := lookPath(s.Argv[0], env, s.Dir)
	if err != nil {
		res.ExitCode, res.StartErr = code, err
		return res, nil
	}

	// Pipes: the read ends stay with us (non-blocking, for poll), the
	// blocking write ends go to the child.
	var outP, errP [2]int
	if err := pipe(&outP); err != nil {
		return nil, err
	}
	if err := pipe(&errP); err != nil {
		closeFDs(outP[0], outP[1])
		return nil, err
	}
	stdin, feed, err := openStdin(s.Stdin)
	if err != nil {
		closeFDs(outP[0], outP[1], errP[0], errP[1])
		return nil, err
	}
	pidfd := -1 // poll(2)-able until the program exits (Linux ≥ 5.3)
	attr := &syscall.ProcAttr{
		Dir:   s.Dir,
		Env:   env,
		Files: []uintptr{stdin, uintptr(outP[1]), uintptr(errP[1])},
		Sys:   &syscall.SysProcAttr{Setpgid: true, PidFD: &pidfd},
	}
	if noPidfd.Load() {
		attr.Sys.PidFD = nil
	}
	res.Start = time.Now()
	pid, err := syscall.ForkExec(path, s.Argv, attr)
	closeFDs(outP[1], errP[1])
	if feed != nil {
		feed.started(err == nil)
	}
	if err != nil {
		closeFDs(outP[0], errP[0])
		res.Start = time.Time{}
		res.ExitCode, res.StartErr = startFailure(s.Argv[0], path, s.Dir, err)
		return res, nil
	}
	r := &run{pid: pid, pidfd: pidfd, grace: grace}
	var timer *time.Timer
	if s.Timeout > 0 {
		timer = time.AfterFunc(s.Timeout, func() { r.stop(true) })
	}
	var stopCtx func() bool
	if ctx.Done() != nil {
		stopCtx = context.AfterFunc(ctx, func() { r.stop(false) })
	}
	outBuf := capBuf{limit: outCap, keepHead: s.KeepHead}
	errBuf := capBuf{limit: outCap, keepHead: s.KeepHead}
	r.watch(outP[0], errP[0], &outBuf, &errBuf, res, feed)
	closeFDs(outP[0], errP[0])
	if pidfd >= 0 {
		closeFDs(pidfd)
	}
	if feed != nil {
		feed.wait(res.End.Add(grace))
	}

	// Kill what is left of the group, then reap the leader.
	r.mu.Lock()
	r.signalGroup(syscall.SIGKILL)
	r.reaped = true
	if r.kill != nil {
		r.kill.Stop()
	}
	timedOut := r.timedOut
	r.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	if stopCtx != nil {
		stopCtx()
	}
	var ws syscall.WaitStatus
	var ru syscall.Rusage
	var werr error
	for {
		_, werr = syscall.Wait4(pid, &ws, 0, &ru)
		if werr != syscall.EINTR {
			break
		}
	}

	res.CPUUser = time.Duration(ru.Utime.Nano())
	res.CPUSystem = time.Duration(ru.Stime.Nano())
	res.MaxRSS = ru.Maxrss * 1024
	switch {
	case ws.Exited():
		res.ExitCode = ws.ExitStatus()
	case ws.Signaled():
		res.ExitCode = 128 + int(ws.Signal())
		res.Signal = ws.Signal().String()
	}
	if timedOut {
		res.TimedOut = true
		res.ExitCode = ExitTimeout
	}
	res.Stdout, res.StdoutBytes = outBuf.text()
	res.Stderr, res.StderrBytes = errBuf.text()
	if werr != nil {
		// Someone else reaped the program (SIGCHLD ignored?): its status is lost.
		res.ExitCode = ExitLost
		return res, fmt.Errorf("wait for %s: %w", s.Argv[0], werr)
	}
	if err := ctx.Err(); err != nil && !timedOut {
		return res, err
	}
	return res, nil
}

// noPidfd makes Run work as on kernels without pidfds (tests).
var noPidfd atomic.Bool

// watch captures stdout and stderr and waits for the program to exit,
// all in the calling goroutine: one poll(2) over the two pipes and the
// pidfd, no goroutines, no timers. The exit is seen without reaping (so
// /proc/<pid>/io is still there and the group id cannot be reused); from
// then on the pipes get Grace to reach EOF, so a grandchild holding them
// open cannot keep Run waiting. Without a pidfd it looks for the exit
// every 50 ms while the pipes are open, and waits in waitid once they
// are closed.
func (r *run) watch(outFD, errFD int, out, errb *capBuf, res *Result, feed *feeder) {
	bp := scratch.Get().(*[]byte)
	defer scratch.Put(bp)
	buf := *bp
	fds := [3]unix.PollFd{
		{Fd: int32(outFD), Events: unix.POLLIN},
		{Fd: int32(errFD), Events: unix.POLLIN},
		{Fd: int32(r.pidfd), Events: unix.POLLIN}, // a negative fd is ignored by poll
	}
	bufs := [2]*capBuf{out, errb}
	open := 2
	exited := false
	var deadline time.Time
	onExit := func() {
		exited = true
		fds[2].Fd = -1
		res.End = time.Now()
		readProcIO(r.pid, res)
		r.mu.Lock()
		r.exited = true
		r.mu.Unlock()
		deadline = res.End.Add(r.grace)
		if feed != nil {
			feed.close()
		}
	}
	for {
		timeout := -1
		switch {
		case exited:
			left := time.Until(deadline)
			if open == 0 || left <= 0 {
				return // all read, or grace over: the caller closes the pipes and kills the group
			}
			timeout = int((left + time.Millisecond - 1) / time.Millisecond)
		case fds[2].Fd < 0 && open == 0:
			r.waitBlocking() // no pidfd, nothing to read: just wait
			onExit()
			continue
		case fds[2].Fd < 0:
			timeout = 50
		}
		if _, err := unix.Poll(fds[:], timeout); err != nil && err != unix.EINTR {
			// Cannot poll (ENOMEM): give up the output, wait for the exit.
			if !exited {
				r.waitBlocking()
				onExit()
			}
			return
		}
		for i := range bufs {
			if fds[i].Fd >= 0 && fds[i].Revents != 0 && !drain(int(fds[i].Fd), bufs[i], buf) {
				fds[i].Fd = -1
				open--
			}
		}
		if exited {
			continue
		}
		switch {
		case fds[2].Fd >= 0 && fds[2].Revents == 0:
		case r.hasExited():
			onExit()
		case fds[2].Fd >= 0:
			fds[2].Fd = -1 // the pidfd said something else (POLLERR?): poll the old way
		}
	}
}

// drain reads what a pipe has; false at EOF or on an error.
func drain(fd int, c *capBuf, buf []byte) bool {
	for {
		n, err := syscall.Read(fd, buf)
		switch {
		case n > 0:
			c.write(buf[:n])
			if n < len(buf) {
				return true
			}
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return true
		default:
			return false // EOF (n == 0) or a broken pipe
		}
	}
}

// hasExited says whether the program has exited, leaving it unreaped.
func (r *run) hasExited() bool {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, r.pid, &info, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		return err != nil || info.Signo != 0 // an error (ECHILD) cannot wait either
	}
}

// waitBlocking waits for the exit in waitid, leaving the program unreaped.
func (r *run) waitBlocking() {
	var info unix.Siginfo
	for unix.Waitid(unix.P_PID, r.pid, &info, unix.WEXITED|unix.WNOWAIT, nil) == unix.EINTR {
	}
}

func pipe(p *[2]int) error {
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return fmt.Errorf("create pipe: %w", err)
	}
	if err := syscall.SetNonblock(p[0], true); err != nil {
		closeFDs(p[0], p[1])
		return fmt.Errorf("create pipe: %w", err)
	}
	return nil
}

func closeFDs(fds ...int) {
	for _, fd := range fds {
		_ = syscall.Close(fd)
	}
}

// lookPath resolves argv0 as execvp would, with the PATH of env: a name
// with a slash is used as is (relative to dir), a bare name is searched.
func lookPath(argv0 string, env []string, dir string) (string, int, error) {
	if argv0 == "" {
		return "", ExitNotFound, errors.New("start program: empty program name")
	}
	if strings.Contains(argv0, "/") {
		return argv0, 0, nil
	}
	pathEnv := ""
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], "PATH="); ok {
			pathEnv = v
			break
		}
	}
	found := ""
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, argv0)
		if !filepath.IsAbs(p) && dir != "" {
			p = filepath.Join(dir, p)
		}
		st, err := os.Stat(p)
		if err != nil || st.IsDir() {
			continue
		}
		if st.Mode()&0o111 != 0 {
			return p, 0, nil
		}
		if found == "" {
			found = p
		}
	}
	if found != "" {
		return "", ExitNotExecutable, fmt.Errorf("start %s: %s: permission denied", argv0, found)
	}
	return "", ExitNotFound, fmt.Errorf("start %s: not found in PATH %q", argv0, pathEnv)
}

// startFailure turns an exec error into Scalebox's shell codes.
func startFailure(argv0, path, dir string, err error) (int, error) {
	if errors.Is(err, syscall.ENOENT) {
		p := path
		if !filepath.IsAbs(p) && dir != "" {
			p = filepath.Join(dir, p)
		}
		if dir != "" {
			if _, serr := os.Stat(dir); serr != nil {
				return ExitNotExecutable, fmt.Errorf("start %s: work dir: %w", argv0, serr)
			}
		}
		if _, serr := os.Stat(p); serr == nil {
			// The file is there: its interpreter (#!) is not.
			return ExitNotExecutable, fmt.Errorf("start %s: bad interpreter or loader: %w", argv0, err)
		}
		return ExitNotFound, fmt.Errorf("start %s: %w", argv0, err)
	}
	return ExitNotExecutable, fmt.Errorf("start %s: %w", argv0, err)
}

var devNull = sync.OnceValues(func() (uintptr, error) {
	fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	return uintptr(fd), nil
})

// openStdin gives the child's fd 0: /dev/null, the caller's file, or a pipe
// fed by a goroutine.
func openStdin(r io.Reader) (uintptr, *feeder, error) {
	switch f := r.(type) {
	case nil:
		fd, err := devNull()
		return fd, nil, err
	case *os.File:
		return f.Fd(), nil, nil
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return 0, nil, fmt.Errorf("create stdin pipe: %w", err)
	}
	if err := syscall.SetNonblock(p[1], true); err != nil {
		closeFDs(p[0], p[1])
		return 0, nil, fmt.Errorf("create stdin pipe: %w", err)
	}
	return uintptr(p[0]), &feeder{src: r, rfd: p[0], w: os.NewFile(uintptr(p[1]), "stdin"), done: make(chan struct{})}, nil
}

// feeder copies Spec.Stdin into the child's stdin pipe.
type feeder struct {
	src  io.Reader
	rfd  int
	w    *os.File
	done chan struct{}
	once sync.Once
}

func (f *feeder) started(ok bool) {
	_ = syscall.Close(f.rfd)
	if !ok {
		_ = f.w.Close()
		return
	}
	go func() {
		defer close(f.done)
		_, _ = io.Copy(f.w, f.src)
		f.close()
	}()
}

func (f *feeder) close() { f.once.Do(func() { _ = f.w.Close() }) }

// wait waits for the copier until deadline; a Stdin reader that blocks
// forever is the caller's to unblock.
func (f *feeder) wait(deadline time.Time) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-f.done:
	case <-t.C:
	}
}

// readProcIO fills the I/O counters from /proc/<pid>/io of the exited,
// unreaped program; best effort.
func readProcIO(pid int, res *Result) {
	var path [32]byte
	p := append(path[:0], "/proc/"...)
	p = appendInt(p, int64(pid))
	p = append(p, "/io"...)
	fd, err := syscall.Open(string(p), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	var buf [512]byte
	n, _ := syscall.Read(fd, buf[:])
	_ = syscall.Close(fd)
	if n <= 0 {
		return
	}
	parseProcIO(buf[:n], res)
}

func parseProcIO(b []byte, res *Result) {
	for len(b) > 0 {
		line := b
		if i := indexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		c := indexByte(line, ':')
		if c < 0 {
			continue
		}
		var v int64
		for _, ch := range line[c+1:] {
			if ch >= '0' && ch <= '9' {
				v = v*10 + int64(ch-'0')
			}
		}
		switch string(line[:c]) {
		case "rchar":
			res.RChar = v
		case "wchar":
			res.WChar = v
		case "read_bytes":
			res.ReadBytes = v
		case "write_bytes":
			res.WriteBytes = v
		}
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func appendInt(b []byte, v int64) []byte {
	if v < 0 {
		b = append(b, '-')
		v = -v
	}
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}
