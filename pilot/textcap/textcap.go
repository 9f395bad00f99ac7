// Package textcap caps program output (stdout, stderr, custom text) to
// Scalebox's output_text_size, keeping the head or the tail and saying how
// much was cut. Shared by the executor and the work-dir reader so both cut
// the same way.
package textcap

import (
	"strconv"
	"unicode/utf8"
)

// Truncate renders kept, the head or tail of a text of total bytes, in at
// most limit bytes. Where bytes were dropped it puts the marker
// "[… N bytes cut …]\n" (at the start when the tail is kept, at the end
// when the head is), dropping more bytes to make room for it and cutting
// at a UTF-8 boundary; N counts every byte left out. When limit cannot
// hold the marker, the kept bytes are returned bare.
func Truncate(kept []byte, total int64, limit int, keepHead bool) string {
	n := len(kept)
	if int64(n) == total && n <= limit {
		return string(kept)
	}
	if !keepHead && n > limit {
		kept, n = kept[n-limit:], limit
	} else if keepHead && n > limit {
		kept, n = kept[:limit], limit
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
