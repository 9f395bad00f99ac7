package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/scalebox-hpc/scalebox/store"
)

// leaseSQL is the lease statement for a pilot with nHosts host names: the
// oldest READY unbound tasks and the oldest READY tasks bound to each name,
// merged, the oldest Max of them. ?1 pilot, ?2 now, ?3 expiry, ?4 module,
// ?5 max, ?6… host names.
func leaseSQL(nHosts int) string {
	var b strings.Builder
	b.WriteString(`UPDATE tasks SET status = -2, attempt = attempt + 1, pilot_id = ?1, leased_at = ?2,
lease_expires = ?3, updated_at = ?2 WHERE id IN (`)
	const pick = `SELECT id FROM tasks WHERE status = -1 AND module_id = ?4 AND to_host = %s ORDER BY id LIMIT CAST(?5 AS INTEGER)`
	if nHosts == 0 {
		fmt.Fprintf(&b, pick, "''")
	} else {
		fmt.Fprintf(&b, "SELECT id FROM ("+pick+")", "''")
		for i := range nHosts {
			fmt.Fprintf(&b, " UNION ALL SELECT id FROM ("+pick+")", "?"+strconv.Itoa(6+i))
		}
		b.WriteString(` ORDER BY 1 LIMIT CAST(?5 AS INTEGER)`)
	}
	b.WriteString(`) RETURNING id, app_id, module_id, body, headers, attempt, created_at`)
	return b.String()
}

// TaskLease implements store.Tasks.
func (s *Store) TaskLease(ctx context.Context, p store.TaskLeaseParams) ([]*store.Lease, error) {
	var hosts []string
	for _, h := range p.Hosts {
		if h != "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	now := nowMicros(p.Now)
	expires := now + p.TTL.Microseconds()
	q := leaseSQL(len(hosts))
	var out []*store.Lease
	err := s.write(ctx, func(tx *wtx) error {
		var st *sql.Stmt
		for _, m := range p.Modules {
			if m.Max <= 0 {
				continue
			}
			if st == nil {
				var err error
				if st, err = tx.stmt(ctx, q); err != nil {
					return err
				}
			}
			args := []any{p.PilotID, now, expires, m.ModuleID, m.Max}
			for _, h := range hosts {
				args = append(args, h)
			}
			rows, err := st.QueryContext(ctx, args...)
			if err != nil {
				return err
			}
			start := len(out)
			for rows.Next() {
				var (
					l       store.Lease
					created int64
				)
				if err := rows.Scan(&l.TaskID, &l.AppID, &l.ModuleID, &l.Body, &l.Headers, &l.Attempt, &created); err != nil {
					_ = rows.Close()
					return err
				}
				l.CreatedAt, l.LeasedAt, l.Expires = fromMicros(created), fromMicros(now), fromMicros(expires)
				out = append(out, &l)
			}
			if err := rows.Close(); err != nil {
				return err
			}
			if err := rows.Err(); err != nil {
				return err
			}
			// RETURNING order is unspecified: oldest first within a module.
			slices.SortFunc(out[start:], func(a, b *store.Lease) int { return cmp.Compare(a.TaskID, b.TaskID) })
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lease tasks to pilot %d: %w", p.PilotID, err)
	}
	return out, nil
}

// TaskHeartbeat implements store.Tasks.
func (s *Store) TaskHeartbeat(ctx context.Context, p store.TaskHeartbeatParams) ([]store.TaskAttempt, error) {
	now := nowMicros(p.Now)
	expires := now + p.TTL.Microseconds()
	var stale []store.TaskAttempt
	err := s.write(ctx, func(tx *wtx) error {
		stale = stale[:0]
		if p.Reconcile {
			renew, err := tx.stmt(ctx, `UPDATE tasks SET lease_expires = ?1
WHERE id = ?2 AND attempt = ?3 AND pilot_id = ?4 AND status IN (-2, -3)`)
			if err != nil {
				return err
			}
			for _, ta := range p.Held {
				r, err := renew.ExecContext(ctx, expires, ta.TaskID, ta.Attempt, p.PilotID)
				if err != nil {
					return fmt.Errorf("renew lease of task %d: %w", ta.TaskID, err)
				}
				if n, err := r.RowsAffected(); err != nil {
					return err
				} else if n == 0 {
					stale = append(stale, ta)
				}
			}
		} else {
			renew, err := tx.stmt(ctx, `UPDATE tasks SET lease_expires = ?1 WHERE pilot_id = ?2 AND status IN (-2, -3)`)
			if err != nil {
				return err
			}
			if _, err := renew.ExecContext(ctx, expires, p.PilotID); err != nil {
				return fmt.Errorf("renew leases: %w", err)
			}
		}
		if len(p.Running) > 0 {
			running, err := tx.stmt(ctx, `UPDATE tasks SET status = -3, lease_expires = ?5,
updated_at = CASE WHEN status = -3 THEN updated_at ELSE ?1 END
WHERE id = ?2 AND attempt = ?3 AND pilot_id = ?4 AND status IN (-2, -3)`)
			if err != nil {
				return err
			}
			for _, ta := range p.Running {
				r, err := running.ExecContext(ctx, now, ta.TaskID, ta.Attempt, p.PilotID, expires)
				if err != nil {
					return fmt.Errorf("mark task %d running: %w", ta.TaskID, err)
				}
				if n, err := r.RowsAffected(); err != nil {
					return err
				} else if n == 0 {
					stale = append(stale, ta)
				}
			}
		}
		seen, err := tx.stmt(ctx, `UPDATE pilots SET last_seen = max(last_seen, ?1) WHERE id = ?2`)
		if err != nil {
			return err
		}
		if _, err := seen.ExecContext(ctx, now, p.PilotID); err != nil {
			return fmt.Errorf("refresh pilot: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("heartbeat of pilot %d: %w", p.PilotID, err)
	}
	return stale, nil
}

// leasedTask is the part of a leased task that ending its attempt needs.
type leasedTask struct {
	id, appID, moduleID, pilot  int64
	attempt, appFail, infraFail int
	created, leased             int64
}

const leasedCols = `id, app_id, module_id, pilot_id, attempt, app_failures, infra_failures, created_at, leased_at`

func scanLeased(rows *sql.Rows) ([]leasedTask, error) {
	defer rows.Close()
	var out []leasedTask
	for rows.Next() {
		var t leasedTask
		if err := rows.Scan(&t.id, &t.appID, &t.moduleID, &t.pilot, &t.attempt, &t.appFail, &t.infraFail,
			&t.created, &t.leased); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// endAttempt builds the attempt row of a lease that ended without a result.
func (t leasedTask) endAttempt(kind string, code int, reason string, now int64) *store.Attempt {
	return &store.Attempt{
		TaskID: t.id, AppID: t.appID, ModuleID: t.moduleID, Attempt: t.attempt, PilotID: t.pilot,
		Kind: kind, ExitCode: -1, Code: code, Reason: reason,
		CreatedAt: fromMicros(t.created), LeasedAt: fromMicros(t.leased), RecordedAt: fromMicros(now),
	}
}

// TaskRelease implements store.Tasks.
func (s *Store) TaskRelease(ctx context.Context, p store.TaskReleaseParams) (int, error) {
	if !p.All && len(p.Attempts) == 0 {
		return 0, nil
	}
	now := nowMicros(p.Now)
	want := make(map[store.TaskAttempt]bool, len(p.Attempts))
	for _, ta := range p.Attempts {
		want[ta] = true
	}
	released := 0
	err := s.write(ctx, func(tx *wtx) error {
		released = 0
		rows, err := tx.QueryContext(ctx, `SELECT `+leasedCols+` FROM tasks WHERE pilot_id = ? AND status IN (-2, -3) ORDER BY id`, p.PilotID)
		if err != nil {
			return err
		}
		held, err := scanLeased(rows)
		if err != nil {
			return fmt.Errorf("read leases: %w", err)
		}
		upd, err := tx.stmt(ctx, `UPDATE tasks SET status = -1, pilot_id = 0, lease_expires = 0, updated_at = ?1 WHERE id = ?2`)
		if err != nil {
			return err
		}
		var as []*store.Attempt
		for _, t := range held {
			if !p.All && !want[store.TaskAttempt{TaskID: t.id, Attempt: t.attempt}] {
				continue
			}
			if _, err := upd.ExecContext(ctx, now, t.id); err != nil {
				return fmt.Errorf("release task %d: %w", t.id, err)
			}
			as = append(as, t.endAttempt(store.KindReleased, store.StatusReady, p.Reason, now))
		}
		released = len(as)
		return s.insertAttemptRows(ctx, tx, as)
	})
	if err != nil {
		return 0, fmt.Errorf("release leases of pilot %d: %w", p.PilotID, err)
	}
	return released, nil
}

// TaskExpireLeases implements store.Tasks.
func (s *Store) TaskExpireLeases(ctx context.Context, p store.TaskExpireParams) ([]*store.Task, error) {
	now := nowMicros(p.Now)
	var out []*store.Task
	err := s.write(ctx, func(tx *wtx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, `SELECT `+leasedCols+` FROM tasks
WHERE status IN (-2, -3) AND lease_expires < ? ORDER BY id`, now)
		if err != nil {
			return err
		}
		expired, err := scanLeased(rows)
		if err != nil {
			return fmt.Errorf("read expired leases: %w", err)
		}
		if len(expired) == 0 {
			return nil
		}
		upd, err := tx.stmt(ctx, `UPDATE tasks SET status = ?1, infra_failures = infra_failures + 1,
pilot_id = 0, lease_expires = 0, updated_at = ?2 WHERE id = ?3 RETURNING `+taskCols)
		if err != nil {
			return err
		}
		as := make([]*store.Attempt, 0, len(expired))
		for _, t := range expired {
			next := store.StatusReady
			if p.Policy != nil {
				next = nextStatus(p.Policy.Next(t.moduleID, store.StatusSysLost, store.KindInfra, t.appFail, t.infraFail))
			}
			task, err := scanTask(upd.QueryRowContext(ctx, next, now, t.id))
			if err != nil {
				return fmt.Errorf("expire task %d: %w", t.id, err)
			}
			out = append(out, task)
			as = append(as, t.endAttempt(store.KindInfra, store.StatusSysLost, p.Reason, now))
		}
		return s.insertAttemptRows(ctx, tx, as)
	})
	if err != nil {
		return nil, fmt.Errorf("expire leases: %w", err)
	}
	return out, nil
}

// nextStatus keeps a policy's answer within the lifecycle: a task that
// leaves its lease is waiting (READY, INITIAL) or final, never leased.
func nextStatus(st int) int {
	if st == store.StatusQueued || st == store.StatusRunning || st == store.StatusRetryWait {
		return store.StatusReady
	}
	return st
}
