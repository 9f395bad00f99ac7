package appspec

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

const maxMemoryMB = 1 << 40 // 1 EiB; anything larger is a typo

var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*(?:([KkMmGgTtPp])[Ii]?[Bb]?)?$`)

// ParseMemoryMB parses a memory size into MiB, rounding up. A bare number
// is MiB; suffixes K, M, G, T, P (optionally followed by i, B or iB, any
// case) are binary units as in Slurm and PBS: 4G = 4096 MiB.
func ParseMemoryMB(s string) (int64, error) {
	s = strings.TrimSpace(s)
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("bad memory size %q: want MB as a number or a size such as 512M, 4G, 1.5GiB", s)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("bad memory size %q: %w", s, err)
	}
	scale := map[string]float64{"": 1, "K": 1.0 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024, "P": 1024 * 1024 * 1024}[strings.ToUpper(m[2])]
	mb := math.Ceil(v * scale)
	if mb > maxMemoryMB {
		return 0, fmt.Errorf("bad memory size %q: too large", s)
	}
	return int64(mb), nil
}

var clockRE = regexp.MustCompile(`^(?:([0-9]+)-)?(?:([0-9]+):)?([0-9]+):([0-9]+)$`)

const maxDurationSeconds = 100 * 365 * 24 * 3600

// ParseDurationSeconds parses a run time into whole seconds, rounding up:
// a bare number of seconds, a Go duration ("90s", "5m", "1h30m") or a
// batch-system clock "[D-]HH:MM:SS" / "MM:SS".
func ParseDurationSeconds(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > maxDurationSeconds {
			return 0, fmt.Errorf("bad duration %q: out of range", s)
		}
		return int(n), nil
	}
	if m := clockRE.FindStringSubmatch(s); m != nil {
		var total int64
		for i, unit := range []int64{86400, 3600, 60, 1} {
			if m[i+1] == "" {
				continue
			}
			v, err := strconv.ParseInt(m[i+1], 10, 64)
			if err != nil || v > maxDurationSeconds {
				return 0, fmt.Errorf("bad duration %q: out of range", s)
			}
			total += v * unit
		}
		if m[2] == "" && m[1] != "" {
			return 0, fmt.Errorf("bad duration %q: want D-HH:MM:SS", s)
		}
		if total > maxDurationSeconds {
			return 0, fmt.Errorf("bad duration %q: out of range", s)
		}
		return int(total), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q: want seconds, a duration such as 30s, 5m, 1h30m, or [D-]HH:MM:SS", s)
	}
	if d < 0 || d > maxDurationSeconds*time.Second {
		return 0, fmt.Errorf("bad duration %q: out of range", s)
	}
	return int((d + time.Second - 1) / time.Second), nil
}
