package postgres

import (
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/scalebox-hpc/scalebox/store"
)

// lockedTask is the state of a task being completed, as the transaction
// sees and changes it.
type lockedTask struct {
	id              int64
	key             taskKey // (module, md5(body)), as the unique index
	appID, moduleID int64
	status, attempt int
	appF, infraF    int
	pilot           int64
	created, leased pgtype.Timestamptz
	retryAt         pgtype.Timestamptz // StatusRetryWait: when it is READY again
}

// TaskComplete applies results in one transaction: every completion whose
// (task, attempt, pilot) still holds the lease gets an attempt row of its
// kind, moves its task to the status the policy returns and inserts its
// messages; a stale one is recorded as "fenced" and changes nothing else.
// Completions are applied in order, so a repeat within one call is stale.
func (s *Store) TaskComplete(ctx context.Context, p store.TaskCompleteParams) ([]store.CompleteResult, error) {
	if len(p.Completions) == 0 {
		return []store.CompleteResult{}, nil
	}
	overwrite, err := conflictMode(p.Conflict)
	if err != nil {
		return nil, fmt.Errorf("complete tasks: %w", err)
	}
	policy := p.Policy
	if policy == nil {
		policy = store.NoRetry
	}
	ids := make([]int64, 0, len(p.Completions))
	for i := range p.Completions {
		c := &p.Completions[i]
		switch c.Kind {
		case "", store.KindApp, store.KindInfra:
		default:
			return nil, fmt.Errorf("complete tasks: completion %d: kind %q is neither %q nor %q", i, c.Kind, store.KindApp, store.KindInfra)
		}
		if err := checkInt32("code", c.Code); err != nil {
			return nil, fmt.Errorf("complete tasks: completion %d: %w", i, err)
		}
		ids = append(ids, c.TaskID)
	}
	t := now(p.Now)

	var res []store.CompleteResult
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		res = make([]store.CompleteResult, len(p.Completions))
		tasks, err := lockTasks(ctx, tx, ids)
		if err != nil {
			return err
		}
		if !overwrite || !orderMatters(p.Completions, tasks) {
			return completeSet(ctx, tx, p.Completions, res, tasks, policy, overwrite, t)
		}
		// A message overwrites a task that a later completion of this call
		// completes: apply the completions one at a time, each seeing the
		// effects of the ones before.
		for i := range p.Completions {
			one, err := lockTasks(ctx, tx, ids[i:i+1])
			if err != nil {
				return err
			}
			if err := completeSet(ctx, tx, p.Completions[i:i+1], res[i:i+1], one, policy, overwrite, t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, dbErr("complete tasks", err)
	}
	return res, nil
}

// orderMatters reports whether applying cs as a set (all task updates,
// then all messages) could differ from applying them one by one: some
// completion emits a message with the (module, body) of a task that a
// later completion completes. Only OVERWRITE makes messages change
// existing tasks, so only then is this asked.
func orderMatters(cs []store.Completion, tasks map[int64]*lockedTask) bool {
	last := map[taskKey]int{} // task key -> index of the last completion of that task
	for i := range cs {
		if task := tasks[cs[i].TaskID]; task != nil {
			last[task.key] = i
		}
	}
	for i := range cs {
		for _, m := range cs[i].Messages {
			if j, ok := last[taskKey{m.ModuleID, md5.Sum([]byte(m.Body))}]; ok && j > i {
				return true
			}
		}
	}
	return false
}

// completeSet applies completions as a set within tx; tasks holds the
// locked state of their tasks and is updated in place.
func completeSet(ctx context.Context, tx pgx.Tx, cs []store.Completion, res []store.CompleteResult,
	tasks map[int64]*lockedTask, policy store.RetryPolicy, overwrite bool, t time.Time) error {
	var att attemptCols
	var msgs []newTask
	var msgOwner []int
	var applied []*lockedTask
	for i := range cs {
		c := &cs[i]
		task := tasks[c.TaskID]
		if task == nil {
			continue // no such task: nothing to record it against
		}
		rec := c.Record
		rec.TaskID, rec.AppID, rec.ModuleID, rec.Attempt, rec.PilotID = c.TaskID, task.appID, task.moduleID, c.Attempt, c.PilotID
		rec.Code, rec.CreatedAt, rec.RecordedAt = c.Code, tv(task.created), t
		rec.LeasedAt = time.Time{}
		if task.attempt == c.Attempt {
			rec.LeasedAt = tv(task.leased)
		}
		current := (task.status == store.StatusQueued || task.status == store.StatusRunning) &&
			task.attempt == c.Attempt && task.pilot == c.PilotID
		if !current {
			rec.Kind = store.KindFenced
			if err := att.add(&rec); err != nil {
				return fmt.Errorf("completion %d: %w", i, err)
			}
			res[i] = store.CompleteResult{Status: task.status}
			continue
		}
		kind := c.Kind
		if kind == "" {
			kind = store.KindApp
		}
		rec.Kind = kind
		next := normalizeNext(policy.Next(task.moduleID, c.Code, kind, task.appF, task.infraF))
		switch {
		case kind == store.KindInfra:
			task.infraF++
		case c.Code != store.StatusOK:
			task.appF++
		}
		task.retryAt = pgtype.Timestamptz{}
		if next == store.StatusReady && kind == store.KindApp && c.Code != store.StatusOK {
			if d := store.RetryDelay(policy, task.moduleID, task.appF); d > 0 {
				next, task.retryAt = store.StatusRetryWait, nt(t.Add(d))
			}
		}
		task.status, task.pilot = next, 0
		applied = append(applied, task)
		if err := att.add(&rec); err != nil {
			return fmt.Errorf("completion %d: %w", i, err)
		}
		res[i] = store.CompleteResult{Applied: true, Status: next, RetryAt: tv(task.retryAt)}
		for _, m := range c.Messages {
			msgs = append(msgs, newTask{appID: task.appID, TaskInput: m})
			msgOwner = append(msgOwner, i)
		}
	}

	// Task updates and attempt rows in one round trip.
	b := &pgx.Batch{}
	if len(applied) > 0 {
		upIDs := make([]int64, len(applied))
		upStatus, upAppF, upInfraF := make([]int32, len(applied)), make([]int32, len(applied)), make([]int32, len(applied))
		upRetry := make([]pgtype.Timestamptz, len(applied))
		for k, task := range applied {
			upIDs[k], upStatus[k], upAppF[k], upInfraF[k] = task.id, int32(task.status), int32(task.appF), int32(task.infraF)
			upRetry[k] = task.retryAt
		}
		b.Queue(`
			UPDATE tasks t SET status = u.status, app_failures = u.app_f, infra_failures = u.infra_f,
				retry_at = u.retry_at, pilot_id = NULL, lease_expires = NULL, updated_at = $1
			FROM unnest($2::bigint[], $3::int[], $4::int[], $5::int[], $6::timestamptz[]) AS u(id, status, app_f, infra_f, retry_at)
			WHERE t.id = u.id`, t, upIDs, upStatus, upAppF, upInfraF, upRetry)
	}
	att.queue(b)
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
	}

	// Emitted messages, after the updates: an OVERWRITE of a task
	// completed here sees it final.
	if len(msgs) > 0 {
		added, err := addTasks(ctx, tx, msgs, overwrite, addSafe, t)
		if err != nil {
			return err
		}
		for j, a := range added {
			if a.inserted {
				res[msgOwner[j]].Emitted++
			} else {
				res[msgOwner[j]].Duplicates++
			}
		}
	}
	return nil
}

// lockTasks locks the tasks with the given ids, in id order, and returns
// their state.
func lockTasks(ctx context.Context, tx pgx.Tx, ids []int64) (map[int64]*lockedTask, error) {
	rows, err := tx.Query(ctx, `
		SELECT id, module_id, md5(body)::uuid, app_id, status, attempt, COALESCE(pilot_id, 0), app_failures, infra_failures, created_at, leased_at
		FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids)
	if err != nil {
		return nil, fmt.Errorf("lock tasks: %w", err)
	}
	defer rows.Close()
	tasks := make(map[int64]*lockedTask, len(ids))
	for rows.Next() {
		var lt lockedTask
		if err := rows.Scan(&lt.id, &lt.key.module, &lt.key.sum, &lt.appID, &lt.status, &lt.attempt, &lt.pilot,
			&lt.appF, &lt.infraF, &lt.created, &lt.leased); err != nil {
			return nil, fmt.Errorf("lock tasks: %w", err)
		}
		lt.moduleID = lt.key.module
		tasks[lt.id] = &lt
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lock tasks: %w", err)
	}
	return tasks, nil
}

// attemptCols collects attempt rows as column arrays for one
// INSERT … SELECT FROM unnest(…).
type attemptCols struct {
	taskID, appID, moduleID, pilotID                 []int64
	attempt, exitCode, code                          []int32
	host, slot, kind, reason, stdout, stderr, custom []string
	bytesRead, bytesWritten, inputBytes, outputBytes []int64
	cpuUser, cpuSystem, maxRSS                       []int64
	created, leased, started, progStart, progEnd     []pgtype.Timestamptz
	reported, recorded                               []pgtype.Timestamptz
	userTimes, extra                                 []pgtype.Text
}

// add appends one row; the JSON columns are encoded here.
func (c *attemptCols) add(a *store.Attempt) error {
	if err := checkInt32("attempt", a.Attempt); err != nil {
		return err
	}
	if err := checkInt32("exit code", a.ExitCode); err != nil {
		return err
	}
	var userTimes, extra pgtype.Text
	if len(a.UserTimestamps) > 0 {
		lts := make([]store.LabeledTime, len(a.UserTimestamps))
		for i, lt := range a.UserTimestamps {
			lts[i] = store.LabeledTime{Time: ts(lt.Time), Label: lt.Label}
		}
		b, err := json.Marshal(lts)
		if err != nil {
			return fmt.Errorf("encode user timestamps: %w", err)
		}
		userTimes = pgtype.Text{String: string(b), Valid: true}
	}
	if len(a.Extra) > 0 {
		b, err := json.Marshal(a.Extra)
		if err != nil {
			return fmt.Errorf("encode extra attributes: %w", err)
		}
		extra = pgtype.Text{String: string(b), Valid: true}
	}
	c.taskID = append(c.taskID, a.TaskID)
	c.appID = append(c.appID, a.AppID)
	c.moduleID = append(c.moduleID, a.ModuleID)
	c.pilotID = append(c.pilotID, a.PilotID)
	c.attempt = append(c.attempt, int32(a.Attempt))
	c.exitCode = append(c.exitCode, int32(a.ExitCode))
	c.code = append(c.code, int32(a.Code))
	c.host = append(c.host, a.Host)
	c.slot = append(c.slot, a.Slot)
	c.kind = append(c.kind, a.Kind)
	c.reason = append(c.reason, a.Reason)
	c.stdout = append(c.stdout, a.Stdout)
	c.stderr = append(c.stderr, a.Stderr)
	c.custom = append(c.custom, a.CustomText)
	c.bytesRead = append(c.bytesRead, a.BytesRead)
	c.bytesWritten = append(c.bytesWritten, a.BytesWritten)
	c.inputBytes = append(c.inputBytes, a.InputBytes)
	c.outputBytes = append(c.outputBytes, a.OutputBytes)
	c.cpuUser = append(c.cpuUser, int64(a.CPUUser))
	c.cpuSystem = append(c.cpuSystem, int64(a.CPUSystem))
	c.maxRSS = append(c.maxRSS, a.MaxRSS)
	c.created = append(c.created, nt(a.CreatedAt))
	c.leased = append(c.leased, nt(a.LeasedAt))
	c.started = append(c.started, nt(a.StartedAt))
	c.progStart = append(c.progStart, nt(a.ProgramStart))
	c.progEnd = append(c.progEnd, nt(a.ProgramEnd))
	c.reported = append(c.reported, nt(a.ReportedAt))
	c.recorded = append(c.recorded, nt(a.RecordedAt))
	c.userTimes = append(c.userTimes, userTimes)
	c.extra = append(c.extra, extra)
	return nil
}

// queue adds the INSERT of the collected rows to b, if there are any.
func (c *attemptCols) queue(b *pgx.Batch) {
	if len(c.taskID) == 0 {
		return
	}
	b.Queue(`
		INSERT INTO attempts (task_id, app_id, module_id, pilot_id, attempt, exit_code, code,
			host, slot, kind, reason, stdout, stderr, custom_text,
			bytes_read, bytes_written, input_bytes, output_bytes, cpu_user_ns, cpu_system_ns, max_rss,
			created_at, leased_at, started_at, program_start, program_end, reported_at, recorded_at,
			user_timestamps, extra)
		SELECT task_id, app_id, module_id, pilot_id, attempt, exit_code, code,
			host, slot, kind, reason, stdout, stderr, custom_text,
			bytes_read, bytes_written, input_bytes, output_bytes, cpu_user_ns, cpu_system_ns, max_rss,
			created_at, leased_at, started_at, program_start, program_end, reported_at, recorded_at,
			user_timestamps::jsonb, extra::jsonb
		FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[], $6::int[], $7::int[],
			$8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
			$15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[],
			$22::timestamptz[], $23::timestamptz[], $24::timestamptz[], $25::timestamptz[], $26::timestamptz[],
			$27::timestamptz[], $28::timestamptz[], $29::text[], $30::text[])
			AS u(task_id, app_id, module_id, pilot_id, attempt, exit_code, code,
				host, slot, kind, reason, stdout, stderr, custom_text,
				bytes_read, bytes_written, input_bytes, output_bytes, cpu_user_ns, cpu_system_ns, max_rss,
				created_at, leased_at, started_at, program_start, program_end, reported_at, recorded_at,
				user_timestamps, extra)`,
		c.taskID, c.appID, c.moduleID, c.pilotID, c.attempt, c.exitCode, c.code,
		c.host, c.slot, c.kind, c.reason, c.stdout, c.stderr, c.custom,
		c.bytesRead, c.bytesWritten, c.inputBytes, c.outputBytes, c.cpuUser, c.cpuSystem, c.maxRSS,
		c.created, c.leased, c.started, c.progStart, c.progEnd, c.reported, c.recorded,
		c.userTimes, c.extra)
}

// AttemptList returns a task's attempt rows, oldest first.
func (s *Store) AttemptList(ctx context.Context, taskID int64) ([]*store.Attempt, error) {
	op := fmt.Sprintf("list attempts of task %d", taskID)
	rows, err := s.pool.Query(ctx, `
		SELECT id, task_id, app_id, module_id, pilot_id, attempt, exit_code, code,
			host, slot, kind, reason, stdout, stderr, custom_text,
			bytes_read, bytes_written, input_bytes, output_bytes, cpu_user_ns, cpu_system_ns, max_rss,
			created_at, leased_at, started_at, program_start, program_end, reported_at, recorded_at,
			user_timestamps::text, extra::text
		FROM attempts WHERE task_id = $1 ORDER BY id`, taskID)
	if err != nil {
		return nil, dbErr(op, err)
	}
	defer rows.Close()
	var out []*store.Attempt
	for rows.Next() {
		var a store.Attempt
		var cpuUser, cpuSystem int64
		var created, leased, started, progStart, progEnd, reported, recorded pgtype.Timestamptz
		var userTimes, extra pgtype.Text
		if err := rows.Scan(&a.ID, &a.TaskID, &a.AppID, &a.ModuleID, &a.PilotID, &a.Attempt, &a.ExitCode, &a.Code,
			&a.Host, &a.Slot, &a.Kind, &a.Reason, &a.Stdout, &a.Stderr, &a.CustomText,
			&a.BytesRead, &a.BytesWritten, &a.InputBytes, &a.OutputBytes, &cpuUser, &cpuSystem, &a.MaxRSS,
			&created, &leased, &started, &progStart, &progEnd, &reported, &recorded,
			&userTimes, &extra); err != nil {
			return nil, dbErr(op, err)
		}
		a.CPUUser, a.CPUSystem = time.Duration(cpuUser), time.Duration(cpuSystem)
		a.CreatedAt, a.LeasedAt, a.StartedAt = tv(created), tv(leased), tv(started)
		a.ProgramStart, a.ProgramEnd, a.ReportedAt, a.RecordedAt = tv(progStart), tv(progEnd), tv(reported), tv(recorded)
		if userTimes.Valid {
			if err := json.Unmarshal([]byte(userTimes.String), &a.UserTimestamps); err != nil {
				return nil, fmt.Errorf("%s: decode user timestamps of attempt %d: %w", op, a.ID, err)
			}
		}
		if extra.Valid {
			if err := json.Unmarshal([]byte(extra.String), &a.Extra); err != nil {
				return nil, fmt.Errorf("%s: decode extra attributes of attempt %d: %w", op, a.ID, err)
			}
		}
		out = append(out, &a)
	}
	return out, dbErr(op, rows.Err())
}
