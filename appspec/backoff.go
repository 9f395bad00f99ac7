package appspec

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Backoff is how long a failed task waits before it is retried (HPC
// addition, module parameters retry_backoff and retry_backoff_max): the
// first retry waits Base, each later one twice the previous, at most Max.
// Only failures of the module's program wait; infrastructure failures are
// retried at once.
type Backoff struct {
	Base time.Duration `json:"base,omitempty"` // 0 = retry at once
	Max  time.Duration `json:"max,omitempty"`
}

// DefaultBackoffMax caps the doubling when retry_backoff_max is not given.
const DefaultBackoffMax = time.Hour

// maxBackoff bounds both settings: a task does not wait longer than a week.
const maxBackoff = 7 * 24 * time.Hour

// Delay is the wait before the retry that follows the task's n-th failure
// (n ≥ 1).
func (b Backoff) Delay(n int) time.Duration {
	if b.Base <= 0 || n < 1 {
		return 0
	}
	limit := b.Max
	if limit <= 0 {
		limit = max(DefaultBackoffMax, b.Base)
	}
	d := b.Base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// ParseDuration reads a duration parameter: a Go duration ("30s", "2m",
// "1h30m") or a number of seconds ("45", "0.5").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 || f > maxBackoff.Seconds() {
			return 0, fmt.Errorf("%q is out of range [0, %v]", s, maxBackoff)
		}
		d = time.Duration(f * float64(time.Second))
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is not a duration (e.g. 30s, 5m, 1h) or a number of seconds", s)
		}
	}
	if d < 0 || d > maxBackoff {
		return 0, fmt.Errorf("%q is out of range [0, %v]", s, maxBackoff)
	}
	return d, nil
}
