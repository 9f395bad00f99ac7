// Package broker is Scalebox's central service: it keeps apps, tasks and
// pilots in a store.Store, hands tasks to pilots that long-poll for work,
// applies their results with fencing, decides retries and serves all of it
// as a REST API (see http.go).
//
// The broker is policy; the store is durability. Every state change goes
// through one store transaction before it is acknowledged; what the broker
// keeps in memory (the apps' parsed definitions, the current leases, the
// waiting pilots) is a cache it rebuilds from the store after a restart.
package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/store"
)

// Config tunes a broker. Zero values take the defaults.
type Config struct {
	LeaseTTL       time.Duration // how long a lease lives without a heartbeat, and a pilot may stay silent before it is lost (default 20 s: pilots heartbeat every third of it)
	MaxWait        time.Duration // longest long-poll (default 60 s)
	PollFallback   time.Duration // a waiting pilot re-checks the store this often even without a wake-up (default 10 s): a safety net, as every change that makes work leasable wakes the waiters
	ExpiryInterval time.Duration // how often expired leases and lost pilots are swept (default LeaseTTL/4)
	InfraRetries   int           // attempts ended by infrastructure failures that are retried for free (default 5)
	// QuarantineAfter is how many failures in a row, each shorter than the
	// module's task_min_seconds, quarantine a pilot (default 5).
	QuarantineAfter int
	Auth            bool        // require bearer tokens
	Provisioner     Provisioner // submits and cancels pilot jobs; nil: the pilot-job routes answer unavailable
}

func (c *Config) setDefaults() {
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 20 * time.Second
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 60 * time.Second
	}
	if c.PollFallback <= 0 {
		c.PollFallback = 10 * time.Second
	}
	if c.ExpiryInterval <= 0 {
		c.ExpiryInterval = c.LeaseTTL / 4
		if c.ExpiryInterval < 100*time.Millisecond {
			c.ExpiryInterval = 100 * time.Millisecond
		}
	}
	if c.InfraRetries <= 0 {
		c.InfraRetries = 5
	}
	if c.QuarantineAfter <= 0 {
		c.QuarantineAfter = 5
	}
}

// Broker is the central service.
type Broker struct {
	cfg   Config
	store store.Store
	log   *zap.Logger
	now   func() time.Time

	startedAt time.Time // Sweep waits a TTL after it, for pilots to re-attach

	reserved     map[int64]int  // by module id: leases being granted under max_inflight (guarded by mu)
	siteReserved map[string]int // the same by site
	siteInflight map[string]int // sites' limits.max_inflight, read from the store on first use (guarded by mu)
	vtasks       vtaskGate      // serialises leases of modules with a vtask_size counter

	mu      sync.RWMutex
	apps    map[int64]*appState
	modules map[int64]*moduleState
	pilots  map[int64]*pilotState
	leases  map[int64]leaseInfo // task id → current lease handed out by this process
	tokens  map[string]*store.Token

	waiters *waiters
	metrics *metrics

	retryDue chan time.Time // due times of retries in backoff, for maintain

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type pilotState struct {
	id     int64
	site   string
	host   string
	status string
	fails  map[int64]*failWatch // by module id, for quarantine
}

type leaseInfo struct {
	moduleID int64
	attempt  int
	pilotID  int64
}

// New returns a broker over st; call Start to load state and begin the
// maintenance loop, Close to stop it (the store is the caller's).
func New(st store.Store, cfg Config, log *zap.Logger) *Broker {
	cfg.setDefaults()
	if log == nil {
		log = zap.NewNop()
	}
	return &Broker{
		cfg:     cfg,
		store:   st,
		log:     log,
		now:     time.Now,
		apps:    map[int64]*appState{},
		modules: map[int64]*moduleState{},
		pilots:  map[int64]*pilotState{},
		leases:  map[int64]leaseInfo{},
		tokens:  map[string]*store.Token{},
		waiters: newWaiters(),
		metrics: newMetrics(),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),

		retryDue: make(chan time.Time, 1024),
	}
}

// SetClock replaces the broker's clock (tests).
func (b *Broker) SetClock(now func() time.Time) { b.now = now }

// Start loads apps from the store and starts the lease-expiry loop.
func (b *Broker) Start(ctx context.Context) error {
	apps, err := b.store.AppList(ctx)
	if err != nil {
		return err
	}
	for _, a := range apps {
		if _, err := b.cacheApp(a); err != nil {
			b.log.Warn("skip app with unreadable definition", zap.Int64("app", a.ID), zap.Error(err))
		}
	}
	// The leases outstanding in the store (pilots re-attach to them).
	for _, st := range []int{store.StatusQueued, store.StatusRunning} {
		for after := int64(0); ; {
			ts, err := b.store.TaskList(ctx, store.TaskFilter{Status: &st, AfterID: after, Limit: 1000})
			if err != nil {
				return fmt.Errorf("load leases: %w", err)
			}
			for _, t := range ts {
				b.leases[t.ID] = leaseInfo{moduleID: t.ModuleID, attempt: t.Attempt, pilotID: t.PilotID}
			}
			if len(ts) < 1000 {
				break
			}
			after = ts[len(ts)-1].ID
		}
	}
	b.startedAt = b.now()
	go b.maintain()
	return nil
}

// Close stops the maintenance loop and wakes every waiting pilot. Safe to
// call twice.
func (b *Broker) Close() {
	b.once.Do(func() {
		close(b.stop)
		<-b.done
		b.waiters.wakeAll()
	})
}

// maintain expires leases and marks silent pilots lost.
func (b *Broker) maintain() {
	defer close(b.done)
	t := time.NewTicker(b.cfg.ExpiryInterval)
	defer t.Stop()
	var due dueTimes
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-b.stop:
			return
		case at := <-b.retryDue:
			due.add(at)
			due.arm(retry, time.Now())
		case <-retry.C:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			b.logPromoteErr(b.promoteRetries(ctx))
			cancel()
			due.popDue(time.Now())
			due.arm(retry, time.Now())
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			b.logPromoteErr(b.promoteRetries(ctx))
			if err := b.Sweep(ctx); err != nil {
				b.log.Warn("sweep expired leases", zap.Error(err))
			}
			cancel()
		}
	}
}

// Sweep expires leases whose TTL passed (an "infra" attempt each, retried
// within the infra budget) and marks pilots silent for a TTL (three missed heartbeats) as LOST.
//
// For one TTL after the broker starts it does neither: pilots could not
// renew their leases while the broker was down, and they re-attach with
// their next heartbeat (every third of a TTL), which renews what they still
// hold. A restart, however long, then costs no running task.
func (b *Broker) Sweep(ctx context.Context) error {
	now := b.now()
	if now.Before(b.startedAt.Add(b.cfg.LeaseTTL)) {
		return nil
	}
	expired, err := b.store.TaskExpireLeases(ctx, store.TaskExpireParams{
		Now: now, Policy: b.policy(), Reason: "lease expired (pilot silent past its lease TTL)",
	})
	if err != nil {
		return err
	}
	if len(expired) > 0 {
		b.metrics.expired.Add(float64(len(expired)))
		b.mu.Lock()
		for _, t := range expired {
			delete(b.leases, t.ID)
		}
		b.mu.Unlock()
		for _, t := range expired {
			if t.Status == store.StatusReady {
				b.waiters.wake(t.ModuleID)
			}
		}
		b.log.Info("expired leases", zap.Int("tasks", len(expired)))
	}
	if err := b.endStuck(ctx, now); err != nil {
		return err
	}
	lost, err := b.store.PilotMarkLost(ctx, now.Add(-b.cfg.LeaseTTL))
	if err != nil {
		return err
	}
	if len(lost) > 0 {
		b.mu.Lock()
		for _, p := range lost {
			if ps := b.pilots[p.ID]; ps != nil {
				ps.status = store.PilotLost
			}
		}
		b.mu.Unlock()
		for _, p := range lost {
			b.log.Warn("pilot lost", zap.Int64("pilot", p.ID), zap.String("host", p.Host), zap.String("site", p.Site))
		}
	}
	return nil
}

// policy is the retry policy of this broker's apps (broker/retry.go).
func (b *Broker) policy() store.RetryPolicy { return retryPolicy{b} }

// errorf builds an API error.
func errorf(code, field, msg string) *api.Error {
	return &api.Error{Code: code, Field: field, Message: msg}
}

// storeErr maps a store error to an API error.
func storeErr(err error, what string) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errorf(api.CodeNotFound, "", what+" not found")
	case errors.Is(err, store.ErrConflict):
		return errorf(api.CodeConflict, "", what+" already exists")
	}
	return err
}

// Waiting returns the number of lease requests waiting for work.
func (b *Broker) Waiting() int { return b.waiters.count() }
