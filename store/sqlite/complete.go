package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/scalebox-hpc/scalebox/store"
)

// taskState is what TaskComplete needs to know about a task.
type taskState struct {
	appID, moduleID, pilot int64
	status, attempt        int
	appFail, infraFail     int
	created, leased        int64
}

// loadStates reads the states of tasks by id (ids may repeat).
var loadStates = multiRow{
	cols: 1,
	sql: func(rows int) string {
		return rowsSQL(`SELECT t.id, t.app_id, t.module_id, t.pilot_id, t.status, t.attempt, t.app_failures,
t.infra_failures, t.created_at, t.leased_at FROM tasks AS t WHERE t.id IN (VALUES `, rows, 1, `)`)
	},
}

// applyCompletions sets status and counters of completed tasks and ends their
// leases: rows of (id, status, app_failures, infra_failures, retry_at), then now.
var applyCompletions = multiRow{
	cols:    5,
	nSuffix: 1,
	sql: func(rows int) string {
		return rowsSQL(`WITH v (id, status, app_failures, infra_failures, retry_at) AS (VALUES `, rows, 5,
			`) UPDATE tasks SET status = v.status, app_failures = v.app_failures, infra_failures = v.infra_failures,
retry_at = v.retry_at, pilot_id = 0, lease_expires = 0, updated_at = ? FROM v WHERE tasks.id = v.id`)
	},
}

type taskUpdate struct {
	id                 int64
	status             int
	appFail, infraFail int
	retryAt            int64 // StatusRetryWait: when it is READY again
}

// TaskComplete implements store.Tasks.
func (s *Store) TaskComplete(ctx context.Context, p store.TaskCompleteParams) ([]store.CompleteResult, error) {
	res := make([]store.CompleteResult, len(p.Completions))
	if len(p.Completions) == 0 {
		return res, nil
	}
	policy := p.Policy
	if policy == nil {
		policy = store.NoRetry
	}
	overwrite := p.Conflict == store.ConflictOverwrite
	hasMessages := false
	for i := range p.Completions {
		if len(p.Completions[i].Messages) > 0 {
			hasMessages = true
			break
		}
	}
	now := nowMicros(p.Now)
	err := s.write(ctx, func(tx *wtx) error {
		clear(res)
		// Emitted messages that overwrite existing tasks may touch tasks
		// completed in the same call: keep the one-at-a-time order exactly.
		// Otherwise a batch is equivalent to its completions in order:
		// completions create no tasks, and ignored duplicates change none.
		if overwrite && hasMessages {
			for i := range p.Completions {
				if err := s.completeBatch(ctx, tx, p.Completions[i:i+1], res[i:i+1], policy, true, now); err != nil {
					return err
				}
			}
			return nil
		}
		return s.completeBatch(ctx, tx, p.Completions, res, policy, overwrite, now)
	})
	if err != nil {
		return nil, fmt.Errorf("complete %d attempts: %w", len(p.Completions), err)
	}
	return res, nil
}

// completeBatch applies completions in one set of statements.
func (s *Store) completeBatch(ctx context.Context, tx *wtx, cs []store.Completion, res []store.CompleteResult,
	policy store.RetryPolicy, overwrite bool, now int64,
) error {
	states := make(map[int64]*taskState, len(cs))
	err := s.run(ctx, tx, loadStates, len(cs), nil, func(dst []any, i int) []any {
		return append(dst, cs[i].TaskID)
	}, func(rows *sql.Rows) error {
		var (
			id int64
			st taskState
		)
		if err := rows.Scan(&id, &st.appID, &st.moduleID, &st.pilot, &st.status, &st.attempt, &st.appFail,
			&st.infraFail, &st.created, &st.leased); err != nil {
			return err
		}
		states[id] = &st
		return nil
	})
	if err != nil {
		return fmt.Errorf("read tasks: %w", err)
	}

	var (
		updates  []taskUpdate
		attempts = make([]*store.Attempt, 0, len(cs))
		msgs     []addItem
		msgOwner []int
	)
	for i := range cs {
		c := &cs[i]
		st, ok := states[c.TaskID]
		if !ok {
			continue // no such task: nothing to apply or record
		}
		rec := c.Record // a copy: the caller's record is not modified
		rec.ID = 0
		rec.TaskID, rec.AppID, rec.ModuleID = c.TaskID, st.appID, st.moduleID
		rec.Attempt, rec.PilotID, rec.Code = c.Attempt, c.PilotID, c.Code
		rec.CreatedAt, rec.RecordedAt = fromMicros(st.created), fromMicros(now)
		rec.LeasedAt = time.Time{}

		current := st.attempt == c.Attempt && st.pilot == c.PilotID &&
			(st.status == store.StatusQueued || st.status == store.StatusRunning)
		if !current {
			rec.Kind = store.KindFenced
			if st.attempt == c.Attempt {
				rec.LeasedAt = fromMicros(st.leased)
			}
			res[i] = store.CompleteResult{Applied: false, Status: st.status}
			attempts = append(attempts, &rec)
			continue
		}

		kind := c.Kind
		if kind == "" {
			kind = store.KindApp
		}
		next := nextStatus(policy.Next(st.moduleID, c.Code, kind, st.appFail, st.infraFail))
		switch {
		case kind == store.KindInfra:
			st.infraFail++
		case kind == store.KindApp && c.Code != store.StatusOK:
			st.appFail++
		}
		var retryAt int64
		if next == store.StatusReady && kind == store.KindApp && c.Code != store.StatusOK {
			if d := store.RetryDelay(policy, st.moduleID, st.appFail); d > 0 {
				next, retryAt = store.StatusRetryWait, now+d.Microseconds()
			}
		}
		st.status, st.pilot = next, 0 // a repeat in this call is now stale
		updates = append(updates, taskUpdate{id: c.TaskID, status: next, appFail: st.appFail, infraFail: st.infraFail, retryAt: retryAt})
		rec.Kind = kind
		rec.LeasedAt = fromMicros(st.leased)
		attempts = append(attempts, &rec)
		res[i] = store.CompleteResult{Applied: true, Status: next}
		if retryAt != 0 {
			res[i].RetryAt = fromMicros(retryAt)
		}
		for j := range c.Messages {
			msgs = append(msgs, addItem{appID: st.appID, in: &c.Messages[j]})
			msgOwner = append(msgOwner, i)
		}
	}

	if len(updates) > 0 {
		err := s.run(ctx, tx, applyCompletions, len(updates), []any{now}, func(dst []any, i int) []any {
			u := updates[i]
			return append(dst, u.id, u.status, u.appFail, u.infraFail, u.retryAt)
		}, nil)
		if err != nil {
			return fmt.Errorf("update tasks: %w", err)
		}
	}
	if err := s.insertAttemptRows(ctx, tx, attempts); err != nil {
		return err
	}
	if len(msgs) > 0 {
		outs, err := s.addTasks(ctx, tx, msgs, overwrite, now)
		if err != nil {
			return fmt.Errorf("insert emitted messages: %w", err)
		}
		for j, o := range outs {
			if o.inserted {
				res[msgOwner[j]].Emitted++
			} else {
				res[msgOwner[j]].Duplicates++
			}
		}
	}
	return nil
}
