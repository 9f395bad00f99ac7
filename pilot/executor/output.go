package executor

import (
	"sync"

	"github.com/scalebox-hpc/scalebox/pilot/textcap"
)

// capBuf keeps at most limit bytes of a stream: its head (keepHead) or its
// tail (a ring). It grows with the output, so a quiet program costs little.
type capBuf struct {
	limit    int
	keepHead bool
	buf      []byte // len ≤ limit
	w        int    // tail mode, once full: where the oldest byte is (next write)
	full     bool
	total    int64
}

// scratch buffers are as large as a pipe's default capacity.
var scratch = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

func (c *capBuf) write(p []byte) {
	c.total += int64(len(p))
	if c.keepHead {
		if room := c.limit - len(c.buf); room > 0 {
			c.buf = c.grow(c.buf, min(room, len(p)))
			c.buf = append(c.buf, p[:min(room, len(p))]...)
		}
		return
	}
	if !c.full {
		room := c.limit - len(c.buf)
		if len(p) < room {
			c.buf = c.grow(c.buf, len(p))
			c.buf = append(c.buf, p...)
			return
		}
		c.buf = c.grow(c.buf, room)
		c.buf = append(c.buf, p[:room]...)
		p = p[room:]
		c.full, c.w = true, 0
	}
	if len(p) >= c.limit {
		copy(c.buf, p[len(p)-c.limit:])
		c.w = 0
		return
	}
	n := copy(c.buf[c.w:], p)
	if n < len(p) {
		c.w = copy(c.buf, p[n:])
	} else if c.w += n; c.w == c.limit {
		c.w = 0
	}
}

// grow makes room for n more bytes, doubling but never beyond limit.
func (c *capBuf) grow(b []byte, n int) []byte {
	if len(b)+n <= cap(b) {
		return b
	}
	nc := max(2*cap(b), len(b)+n, 512)
	nc = min(nc, c.limit)
	nb := make([]byte, len(b), nc)
	copy(nb, b)
	return nb
}

// text returns the kept bytes, with a cut marker, and the total.
func (c *capBuf) text() (string, int64) {
	if c.total == 0 {
		return "", 0
	}
	if !c.full || c.keepHead || c.w == 0 {
		return textcap.Truncate(c.buf, c.total, c.limit, c.keepHead), c.total
	}
	kept := make([]byte, 0, len(c.buf))
	kept = append(append(kept, c.buf[c.w:]...), c.buf[:c.w]...)
	return textcap.Truncate(kept, c.total, c.limit, false), c.total
}
