package broker

import (
	"container/heap"
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/store"
)

// Retry backoff (module parameters retry_backoff, retry_backoff_max): a
// task whose program failed and that retry_rules retry waits in RETRY_WAIT
// until its backoff ends; then the broker makes it READY and wakes the
// pilots waiting for its module. Each completion tells the maintenance
// loop when its retries are due, and the loop promotes them on time; every
// sweep promotes whatever is due too, so a broker restart (which forgets
// the due times) delays a retry by at most one sweep interval.

// retryPolicy is the broker's store.RetryPolicy: module errors spend the
// module's retry_rules (and wait its retry_backoff), infrastructure
// failures a separate budget, retried at once.
type retryPolicy struct{ b *Broker }

// Next implements store.RetryPolicy.
func (p retryPolicy) Next(moduleID int64, code int, kind string, appFailures, infraFailures int) int {
	if kind == store.KindInfra {
		if infraFailures < p.b.cfg.InfraRetries {
			return store.StatusReady
		}
		return store.StatusSysLost
	}
	if code == store.StatusOK {
		return code
	}
	if m := p.b.module(moduleID); m != nil && appFailures < m.spec.RetryRules.MaxRetries(code) {
		return store.StatusReady
	}
	return code
}

// RetryDelay implements store.RetryDelayer.
func (p retryPolicy) RetryDelay(moduleID int64, appFailures int) time.Duration {
	if m := p.b.module(moduleID); m != nil {
		return m.spec.RetryBackoff.Delay(appFailures)
	}
	return 0
}

func (b *Broker) module(id int64) *moduleState {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.modules[id]
}

// retryAt tells the maintenance loop that a retry is due at t. If the loop
// is busy and its inbox full, the next sweep promotes it.
func (b *Broker) retryAt(t time.Time) {
	select {
	case b.retryDue <- t:
	default:
	}
}

// promoteRetries makes the due RETRY_WAIT tasks READY and wakes their
// modules' waiting pilots.
func (b *Broker) promoteRetries(ctx context.Context) error {
	mods, err := b.store.TaskPromoteRetries(ctx, b.now())
	if err != nil {
		return err
	}
	woken := map[int64]bool{}
	for _, m := range mods {
		if !woken[m] {
			woken[m] = true
			b.waiters.wake(m)
		}
	}
	return nil
}

// dueTimes is a min-heap of distinct due times, rounded up to a quarter
// second so that a burst of failures makes one promotion, and bounded:
// beyond maxDue the sweeps take over.
type dueTimes struct {
	h    timeHeap
	seen map[int64]bool
}

const (
	dueGrain = 250 * time.Millisecond
	maxDue   = 4096
)

func (d *dueTimes) add(t time.Time) {
	t = t.Add(dueGrain - 1).Truncate(dueGrain)
	if d.seen == nil {
		d.seen = map[int64]bool{}
	}
	if d.seen[t.UnixNano()] || len(d.h) >= maxDue {
		return
	}
	d.seen[t.UnixNano()] = true
	heap.Push(&d.h, t)
}

// next is the earliest due time (ok false when there is none).
func (d *dueTimes) next() (time.Time, bool) {
	if len(d.h) == 0 {
		return time.Time{}, false
	}
	return d.h[0], true
}

// popDue removes the times not after now.
func (d *dueTimes) popDue(now time.Time) {
	for len(d.h) > 0 && !d.h[0].After(now) {
		t := heap.Pop(&d.h).(time.Time)
		delete(d.seen, t.UnixNano())
	}
}

type timeHeap []time.Time

func (h timeHeap) Len() int           { return len(h) }
func (h timeHeap) Less(i, j int) bool { return h[i].Before(h[j]) }
func (h timeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timeHeap) Push(x any)        { *h = append(*h, x.(time.Time)) }
func (h *timeHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

// arm sets timer for the earliest due time (or leaves it stopped).
func (d *dueTimes) arm(timer *time.Timer, now time.Time) {
	timer.Stop()
	if t, ok := d.next(); ok {
		timer.Reset(max(t.Sub(now), 0))
	}
}

func (b *Broker) logPromoteErr(err error) {
	if err != nil {
		b.log.Warn("promote due retries", zap.Error(err))
	}
}
