package broker

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/store"
)

// CodeStuck ends an attempt that stayed RUNNING beyond its module's
// task_global_timeout_scale × task_max_seconds (Scalebox: 123, from the
// server side). The pilot enforces task_max_seconds itself (124); this
// catches what it could not stop: a process in uninterruptible sleep, a
// pilot that heartbeats but whose slot hangs.
const CodeStuck = 123

// endStuck ends the attempts RUNNING for longer than their module allows.
// It completes them through the store like a pilot's result, fenced by
// the lease, so the module's retry_rules decide what follows and the
// pilot, still holding the attempt, finds it stale at its next heartbeat.
func (b *Broker) endStuck(ctx context.Context, now time.Time) error {
	type limit struct {
		id  int64
		max time.Duration
	}
	var mods []limit
	b.mu.RLock()
	for id, m := range b.modules {
		if m.spec.TaskMaxSeconds > 0 {
			scale := m.spec.TaskGlobalTimeoutScale
			if scale <= 0 {
				scale = 2
			}
			mods = append(mods, limit{id, time.Duration(scale * float64(m.spec.TaskMaxSeconds) * float64(time.Second))})
		}
	}
	b.mu.RUnlock()
	running := store.StatusRunning
	for _, m := range mods {
		ts, err := b.store.TaskList(ctx, store.TaskFilter{ModuleID: m.id, Status: &running, Limit: 1000})
		if err != nil {
			return err
		}
		var comps []store.Completion
		for _, t := range ts {
			// updated_at is when the task became RUNNING (heartbeats keep it).
			if now.Sub(t.UpdatedAt) <= m.max {
				continue
			}
			reason := fmt.Sprintf("stuck RUNNING for %s, beyond task_global_timeout_scale × task_max_seconds = %s", now.Sub(t.UpdatedAt).Round(time.Second), m.max)
			comps = append(comps, store.Completion{TaskID: t.ID, Attempt: t.Attempt, PilotID: t.PilotID, Code: CodeStuck,
				Kind: store.KindApp, Record: store.Attempt{ExitCode: CodeStuck, Reason: reason, ReportedAt: now}})
		}
		if len(comps) == 0 {
			continue
		}
		res, err := b.store.TaskComplete(ctx, store.TaskCompleteParams{Completions: comps, Policy: b.policy(), Now: now})
		if err != nil {
			return err
		}
		b.mu.Lock()
		for i, r := range res {
			if r.Applied {
				delete(b.leases, comps[i].TaskID)
			}
		}
		b.mu.Unlock()
		b.waiters.wake(m.id)
		b.log.Warn("ended stuck attempts", zap.Int64("module", m.id), zap.Int("tasks", len(comps)))
	}
	return nil
}
