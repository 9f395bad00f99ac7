package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/pilot/executor"
)

// responseTimeout bounds the writing of one Response, so a client that
// stops reading cannot hold a handler (and Serve's return) forever.
const responseTimeout = 30 * time.Second

// Main is what `scalebox slot-agent --socket PATH` runs inside the slot
// container. It listens on the unix socket at socket (see [Listen]), writes
// the ready line "scalebox-slot-agent ready <ProtocolVersion>\n" to ready
// (unless ready is nil) once listening, and serves requests with
// [executor.Host] (see [Serve]) until ctx ends or, if stdin is not nil,
// stdin reaches EOF or fails. It removes the socket file before it returns
// and returns nil after a normal stop.
//
// The pilot holds the container's stdin open for the life of the slot;
// when the pilot dies, stdin reaches EOF and the agent exits, and with it
// the container, so no container outlives its pilot. Signals are the
// caller's: the subcommand should pass a ctx that ends on SIGTERM and
// SIGINT (signal.NotifyContext), so that `podman stop` and friends stop the
// agent cleanly, killing the programs it runs. Main does not wait for the
// goroutine reading stdin: it ends when stdin does.
func Main(ctx context.Context, socket string, ready io.Writer, stdin io.Reader) error {
	ln, err := Listen(socket)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if stdin != nil {
		go func() {
			_, _ = io.Copy(io.Discard, stdin)
			cancel()
		}()
	}
	if os.Getpid() == 1 {
		go reapOrphans(ctx)
	}
	if ready != nil {
		if _, err := fmt.Fprintf(ready, "%s %d\n", readyPrefix, ProtocolVersion); err != nil {
			_ = ln.Close()
			return fmt.Errorf("slot agent: write ready line: %w", err)
		}
	}
	return Serve(ctx, ln, executor.Host{})
}

// Listen listens on the unix socket at path, readable and writable by its
// owner only (mode 0600, set right after the socket is created). A socket
// file left at path by an agent that is gone is removed first; Listen
// refuses to remove anything that is not a socket, and a socket some
// process still listens on. Closing the listener removes the socket file.
func Listen(path string) (net.Listener, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("slot agent socket: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("slot agent socket %s: exists and is not a socket", path)
	default:
		// Connection refused is how a stale socket answers.
		c, derr := net.DialTimeout("unix", path, time.Second)
		if derr == nil {
			_ = c.Close()
			return nil, fmt.Errorf("slot agent socket %s: another process is listening on it", path)
		}
		if !errors.Is(derr, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("slot agent socket %s: probe existing socket: %w", path, derr)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("slot agent socket: remove stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("slot agent socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("slot agent socket: %w", err)
	}
	return ln, nil
}

// Serve serves the slot agent protocol (see the package documentation) on
// ln, running each request with rt in a goroutine of its own, until ctx
// ends. It then stops accepting, cancels the running programs (rt kills
// their process groups), waits for every handler to have written its
// Response, closes ln and returns nil. If accepting fails for good, Serve
// does the same and returns the error.
//
// Serve logs through zap.L().
func Serve(ctx context.Context, ln net.Listener, rt executor.Runtime) error {
	s := &server{rt: rt, maxRequest: MaxRequestBytes, log: zap.L()}
	return s.serve(ctx, ln)
}

// server is the state shared by Serve's handlers.
type server struct {
	rt         executor.Runtime
	maxRequest int64 // bytes
	log        *zap.Logger
}

func (s *server) serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()

	var wg sync.WaitGroup
	var err error
	var backoff time.Duration
	for {
		var conn net.Conn
		conn, err = ln.Accept()
		if err == nil {
			backoff = 0
			wg.Go(func() { s.handle(ctx, conn) })
			continue
		}
		if ctx.Err() != nil {
			err = nil
			break
		}
		if !transient(err) {
			err = fmt.Errorf("slot agent: accept: %w", err)
			break
		}
		// Out of file descriptors or the like: wait for handlers to free some.
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		s.log.Warn("slot agent: accept failed, retrying", zap.Error(err), zap.Duration("backoff", backoff))
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	cancel()
	wg.Wait()
	_ = ln.Close()
	return err
}

// transient says whether an Accept error may go away by itself.
func transient(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// handle serves one connection: one request, one response.
func (s *server) handle(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	resp := s.respond(ctx, conn)
	resp.Version = ProtocolVersion
	_ = conn.SetWriteDeadline(time.Now().Add(responseTimeout))
	if err := json.NewEncoder(conn).Encode(resp); err != nil {
		s.log.Debug("slot agent: response not delivered", zap.Error(err))
	}
}

// respond reads the request from conn, runs it and returns the Response
// to send; a panic becomes an error Response.
func (s *server) respond(ctx context.Context, conn net.Conn) (resp Response) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("slot agent: handler panicked", zap.Any("panic", p), zap.Stack("stack"))
			resp = Response{Error: fmt.Sprintf("slot agent: panic: %v", p)}
		}
	}()
	// When Serve stops, unblock the reads of this connection: that of the
	// request, or that of watchHangup.
	stopRead := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stopRead()

	req, err := s.readRequest(ctx, conn)
	if err != nil {
		s.log.Warn("slot agent: bad request", zap.Error(err))
		return Response{Error: err.Error()}
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		watchHangup(conn, cancel)
	}()
	defer func() {
		_ = conn.SetReadDeadline(time.Now()) // ends watchHangup
		<-watching
	}()

	res, err := s.rt.Run(runCtx, req.Spec())
	resp.Result = NewWireResult(res)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		resp.Error = "slot agent is shutting down: " + err.Error()
	case runCtx.Err() != nil:
		resp.Error = "client hung up: " + err.Error()
	default:
		resp.Error = err.Error()
	}
	return resp
}

// readRequest reads and checks the one request of a connection.
func (s *server) readRequest(ctx context.Context, conn net.Conn) (*Request, error) {
	var raw json.RawMessage
	if err := json.NewDecoder(&limitReader{r: conn, n: s.maxRequest}).Decode(&raw); err != nil {
		switch {
		case ctx.Err() != nil:
			return nil, errors.New("slot agent is shutting down")
		case errors.Is(err, errTooLarge):
			return nil, fmt.Errorf("bad request: larger than %d bytes", s.maxRequest)
		case errors.Is(err, io.EOF):
			return nil, errors.New("bad request: connection closed before a request")
		}
		return nil, fmt.Errorf("bad request: %w", err)
	}
	// The version first, so that a request of another version is reported
	// as such even if its fields have changed beyond decoding.
	var probe struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("bad request: %w", err)
	}
	if probe.Version != ProtocolVersion {
		return nil, fmt.Errorf("protocol version mismatch: the client speaks version %d, this slot agent %d", probe.Version, ProtocolVersion)
	}
	var req Request
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, fmt.Errorf("bad request: %w", err)
	}
	if len(req.Argv) == 0 {
		return nil, errors.New("bad request: empty argv")
	}
	return &req, nil
}

// watchHangup reads conn past the request until EOF or an error, and then
// calls hangup. Bytes after the request are ignored.
func watchHangup(conn net.Conn, hangup func()) {
	var buf [256]byte
	for {
		if _, err := conn.Read(buf[:]); err != nil {
			hangup()
			return
		}
	}
}

// errTooLarge is limitReader's error once its limit is used up.
var errTooLarge = errors.New("request too large")

// limitReader reads at most n bytes from r, then fails with errTooLarge.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
