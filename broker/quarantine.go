package broker

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/store"
)

// failWatch is what the broker remembers of one pilot's attempts of one
// module, to spot a black hole: a node whose tasks fail fast, one after
// another (a missing library, a full disk, a broken GPU), draining the
// queue into failures.
type failWatch struct {
	streak int         // failures in a row, each shorter than task_min_seconds
	recent []time.Time // failures within the last minute
}

// quarantineFor looks at the applied results of a pilot's completion and
// returns why the pilot must be quarantined ("" if not). A module opts in
// as in Scalebox: task_min_seconds (QuarantineAfter failures in a row,
// each shorter) and max_tasks_per_minute (more failures than that within
// a minute). The caller holds b.mu.
func (b *Broker) quarantineFor(ps *pilotState, comps []store.Completion, results []store.CompleteResult, now time.Time) string {
	why := ""
	for i, res := range results {
		c := &comps[i]
		if !res.Applied || c.Kind != store.KindApp {
			continue
		}
		li, ok := b.leases[c.TaskID]
		if !ok {
			continue
		}
		m := b.modules[li.moduleID]
		if m == nil {
			continue
		}
		minSecs := m.spec.TaskMinSeconds
		perMinute := m.failsPerMinute
		if minSecs <= 0 && perMinute <= 0 {
			continue
		}
		if ps.fails == nil {
			ps.fails = map[int64]*failWatch{}
		}
		w := ps.fails[li.moduleID]
		if w == nil {
			w = &failWatch{}
			ps.fails[li.moduleID] = w
		}
		if c.Code == store.StatusOK {
			w.streak = 0
			continue
		}
		ran := c.Record.ProgramEnd.Sub(c.Record.ProgramStart)
		if c.Record.ProgramStart.IsZero() {
			ran = 0 // never started
		}
		if minSecs > 0 && ran < time.Duration(minSecs)*time.Second {
			w.streak++
			if w.streak >= b.cfg.QuarantineAfter && why == "" {
				why = fmt.Sprintf("module %s: %d failures in a row, each shorter than task_min_seconds=%d", m.name, w.streak, minSecs)
			}
		} else {
			w.streak = 0
		}
		if perMinute > 0 {
			cut := now.Add(-time.Minute)
			kept := w.recent[:0]
			for _, t := range w.recent {
				if t.After(cut) {
					kept = append(kept, t)
				}
			}
			w.recent = append(kept, now)
			if len(w.recent) > perMinute && why == "" {
				why = fmt.Sprintf("module %s: %d failures within a minute, above max_tasks_per_minute=%d", m.name, len(w.recent), perMinute)
			}
		}
	}
	return why
}

// quarantine stops giving work to a pilot: it learns it at its next
// heartbeat or lease and drains. Its host is left out of the site's later
// pilot jobs (provision).
func (b *Broker) quarantine(ctx context.Context, ps *pilotState, why string) {
	if err := b.store.PilotSetStatus(ctx, ps.id, store.PilotQuarantined); err != nil {
		b.log.Error("quarantine pilot", zap.Int64("pilot", ps.id), zap.Error(err))
		return
	}
	b.mu.Lock()
	ps.status = store.PilotQuarantined
	b.mu.Unlock()
	b.log.Warn("pilot quarantined: its tasks fail fast", zap.Int64("pilot", ps.id), zap.String("site", ps.site), zap.String("why", why))
}

// ReleasePilot lifts a pilot's quarantine, once its node is repaired: a
// pilot still heard from within a lease TTL goes on draining (it stopped
// leasing when it was quarantined), a silent one is GONE. Either way its
// host is no longer left out of the site's later pilot jobs.
func (b *Broker) ReleasePilot(ctx context.Context, p Principal, pilotID int64) (*api.Pilot, error) {
	ps, err := b.pilot(ctx, p, pilotID)
	if err != nil {
		return nil, err
	}
	sp, err := b.store.PilotGet(ctx, pilotID)
	if err != nil {
		return nil, storeErr(err, fmt.Sprintf("pilot %d", pilotID))
	}
	if sp.Status != store.PilotQuarantined {
		return nil, errorf(api.CodeConflict, "", fmt.Sprintf("pilot %d is %s, not QUARANTINED", pilotID, sp.Status))
	}
	status := store.PilotGone
	if b.now().Sub(sp.LastSeen) < b.cfg.LeaseTTL {
		status = store.PilotDraining
	}
	if err := b.store.PilotSetStatus(ctx, pilotID, status); err != nil {
		return nil, storeErr(err, fmt.Sprintf("pilot %d", pilotID))
	}
	b.mu.Lock()
	ps.status, ps.fails = status, nil
	b.mu.Unlock()
	b.log.Info("pilot released from quarantine", zap.Int64("pilot", pilotID), zap.String("host", sp.Host), zap.String("status", status))
	sp.Status = status
	v := pilotView(sp)
	return &v, nil
}
