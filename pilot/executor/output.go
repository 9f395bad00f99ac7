package executor

import (
	"strconv"
	"sync"
	"unicode/utf8"
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
		return truncate(c.buf, c.total, c.limit, c.keepHead), c.total
	}
	kept := make([]byte, 0, len(c.buf))
	kept = append(append(kept, c.buf[c.w:]...), c.buf[:c.w]...)
	return truncate(kept, c.total, c.limit, false), c.total
}

// truncate renders kept, the head or tail of a stream of total bytes, in
// at most limit bytes. Where bytes were dropped it puts the marker
// "[… N bytes cut …]\n" (at the start when the tail is kept, at the end when
// the head is), dropping more bytes to make room for it and cutting at a
// UTF-8 boundary. N counts every byte left out. When limit cannot hold the
// marker, the kept bytes are returned bare.
func truncate(kept []byte, total int64, limit int, keepHead bool) string {
	n := len(kept)
	if int64(n) == total && n <= limit {
		return string(kept)
	}
	cut := total - int64(n)
	var mark []byte
	for {
		mark = marker(mark[:0], cut)
		if len(mark) >= limit {
			mark = mark[:0]
		}
		keep := max(0, min(limit-len(mark), n))
		if keepHead {
			keep = runeEnd(kept, keep)
		} else {
			keep = n - runeStart(kept, n-keep)
		}
		if c := total - int64(keep); c != cut && len(mark) > 0 {
			cut = c
			continue
		}
		out := make([]byte, 0, keep+len(mark))
		if keepHead {
			out = append(append(out, kept[:keep]...), mark...)
		} else {
			out = append(append(out, mark...), kept[n-keep:]...)
		}
		return string(out)
	}
}

// runeEnd moves end back so b[:end] does not end inside a UTF-8 sequence.
func runeEnd(b []byte, end int) int {
	i := end - 1
	for j := 0; i > 0 && j < utf8.UTFMax-1 && !utf8.RuneStart(b[i]); j++ {
		i--
	}
	if i >= 0 && utf8.RuneStart(b[i]) && !utf8.FullRune(b[i:end]) {
		return i
	}
	return end
}

// runeStart moves start on so b[start:] does not begin inside a UTF-8
// sequence (at most 3 bytes: binary data is not eaten).
func runeStart(b []byte, start int) int {
	for j := 0; start < len(b) && j < utf8.UTFMax-1 && !utf8.RuneStart(b[start]); j++ {
		start++
	}
	return start
}

func marker(b []byte, cut int64) []byte {
	b = append(b, "[… "...)
	b = strconv.AppendInt(b, cut, 10)
	return append(b, " bytes cut …]\n"...)
}
