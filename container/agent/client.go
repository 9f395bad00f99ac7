package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/pilot/executor"
)

// answerSlack is how long, beyond what the run itself may take, a Client
// waits for the agent's Response before it declares the agent stuck.
const answerSlack = 10 * time.Second

// Client runs programs through the slot agent listening on Socket, a host
// path of the agent's socket. It implements [executor.Runtime] with the
// contract of [executor.Host]; a Client is stateless and may be used by
// many goroutines at once, each run having a connection of its own.
type Client struct {
	Socket string
}

var _ executor.Runtime = Client{}

// Name implements [executor.Runtime].
func (Client) Name() string { return "agent" }

// Run implements [executor.Runtime]: the agent runs s inside its container,
// where s.Argv, s.Env and s.Dir are resolved. A program that cannot start
// is a Result with StartErr set, not an error. When ctx ends first, Run
// half-closes the connection, on which the agent kills the program's
// process group, and returns the killed program's Result together with
// ctx.Err(). A non-nil s.Stdin is an error. When the agent cannot be
// reached, dies or answers nothing useful, Run returns a nil Result and an
// error naming the socket.
//
// Run gives up waiting for the agent when it has not answered within the
// time the run may take (s.Timeout, or the moment ctx ended, plus twice
// the grace period) and a safety margin.
func (c Client) Run(ctx context.Context, s executor.Spec) (*executor.Result, error) {
	if len(s.Argv) == 0 {
		return nil, errors.New("run program: empty argv")
	}
	if s.Stdin != nil {
		return nil, errors.New("run program: stdin is not supported through the slot agent")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("slot agent %s: %w", c.Socket, err)
	}
	conn := nc.(*net.UnixConn)
	defer conn.Close()

	grace := s.Grace
	if grace <= 0 {
		grace = executor.DefaultGrace
	}
	if s.Timeout > 0 {
		_ = conn.SetReadDeadline(time.Now().Add(s.Timeout + 2*grace + answerSlack))
	}
	stop := context.AfterFunc(ctx, func() {
		_ = conn.CloseWrite() // the agent sees EOF and kills the program
		_ = conn.SetReadDeadline(time.Now().Add(2*grace + answerSlack))
	})
	defer stop()

	// On a write error, still look for a Response: the agent may have
	// refused the request (too large) before reading all of it.
	werr := json.NewEncoder(conn).Encode(newRequest(s))
	var resp Response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		switch {
		case ctx.Err() != nil && werr != nil:
			return nil, ctx.Err() // cancelled before the agent had the request
		case werr != nil:
			return nil, fmt.Errorf("slot agent %s: send request: %w", c.Socket, werr)
		case errors.Is(err, io.EOF):
			err = errors.New("connection closed without a response (did the agent die?)")
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("slot agent %s: read response after %w: %w", c.Socket, ctx.Err(), err)
		}
		return nil, fmt.Errorf("slot agent %s: read response: %w", c.Socket, err)
	}
	if resp.Version != ProtocolVersion {
		return nil, fmt.Errorf("slot agent %s: it speaks protocol version %d, this pilot %d (%s)",
			c.Socket, resp.Version, ProtocolVersion, resp.Error)
	}
	res := resp.Result.Result()
	if err := ctx.Err(); err != nil && (res == nil || !res.TimedOut) {
		return res, err
	}
	if resp.Error != "" {
		return res, fmt.Errorf("slot agent %s: %s", c.Socket, resp.Error)
	}
	if res == nil {
		return nil, fmt.Errorf("slot agent %s: response without a result", c.Socket)
	}
	return res, nil
}

// maxReadyLine caps what ReadReady reads of the first line.
const maxReadyLine = 4096

// ReadReady reads the first line the slot agent writes on the container's
// stdout and checks that it is the ready line of this protocol version.
// It reads one byte at a time up to the newline, so nothing after the line
// is consumed. Anything else, such as an error the container engine
// printed instead of starting the agent, is an error quoting that text;
// so is EOF before the line. ReadReady blocks until the line comes: to
// bound the wait, close r (or kill the container) when a timer expires.
func ReadReady(r io.Reader) error {
	line, err := readLine(r)
	if err != nil {
		if line == "" {
			return fmt.Errorf("slot agent did not start: no ready line: %w", err)
		}
		return fmt.Errorf("slot agent did not start: %q: %w", line, err)
	}
	v, ok := strings.CutPrefix(line, readyPrefix+" ")
	if !ok {
		return fmt.Errorf("slot agent did not start: expected its ready line, got %q", line)
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("slot agent did not start: expected its ready line, got %q", line)
	}
	if n != ProtocolVersion {
		return fmt.Errorf("slot agent speaks protocol version %s, this pilot %d: the agent binary in the container is not this pilot's", v, ProtocolVersion)
	}
	return nil
}

// readLine reads one line without its "\n" (or "\r\n"), without reading
// beyond it; at most maxReadyLine bytes.
func readLine(r io.Reader) (string, error) {
	var b strings.Builder
	var c [1]byte
	for b.Len() < maxReadyLine {
		n, err := r.Read(c[:])
		if n == 1 {
			if c[0] == '\n' {
				return strings.TrimSuffix(b.String(), "\r"), nil
			}
			b.WriteByte(c[0])
			continue
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return b.String(), err
		}
	}
	return b.String(), fmt.Errorf("line longer than %d bytes", maxReadyLine)
}
