package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/store"
)

const taskCols = `id, app_id, module_id, body, headers, status, attempt, app_failures, infra_failures,
to_host, pilot_id, leased_at, lease_expires, created_at, updated_at`

func scanTask(sc interface{ Scan(...any) error }) (*store.Task, error) {
	var (
		t                                 store.Task
		leased, expires, created, updated int64
	)
	if err := sc.Scan(&t.ID, &t.AppID, &t.ModuleID, &t.Body, &t.Headers, &t.Status, &t.Attempt,
		&t.AppFailures, &t.InfraFailures, &t.ToHost, &t.PilotID, &leased, &expires, &created, &updated); err != nil {
		return nil, err
	}
	t.LeasedAt, t.LeaseExpires = fromMicros(leased), fromMicros(expires)
	t.CreatedAt, t.UpdatedAt = fromMicros(created), fromMicros(updated)
	return &t, nil
}

func collectTasks(rows *sql.Rows) ([]*store.Task, error) {
	defer rows.Close()
	var out []*store.Task
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// TaskGet implements store.Tasks.
func (s *Store) TaskGet(ctx context.Context, id int64) (*store.Task, error) {
	t, err := scanTask(s.r.QueryRowContext(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = ?`, id))
	if err != nil {
		return nil, fmt.Errorf("get task %d: %w", id, translate(err))
	}
	return t, nil
}

// TaskList implements store.Tasks.
func (s *Store) TaskList(ctx context.Context, f store.TaskFilter) ([]*store.Task, error) {
	limit := f.Limit
	switch {
	case limit <= 0:
		limit = 100
	case limit > 10000:
		limit = 10000
	}
	var (
		q    strings.Builder
		args = []any{f.AfterID}
	)
	q.WriteString(`SELECT ` + taskCols + ` FROM tasks WHERE id > ?`)
	if f.AppID != 0 {
		q.WriteString(` AND app_id = ?`)
		args = append(args, f.AppID)
	}
	if f.ModuleID != 0 {
		q.WriteString(` AND module_id = ?`)
		args = append(args, f.ModuleID)
	}
	if f.Status != nil {
		q.WriteString(` AND status = ?`)
		args = append(args, *f.Status)
	}
	q.WriteString(` ORDER BY id LIMIT ?`)
	args = append(args, limit)
	rows, err := s.r.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	out, err := collectTasks(rows)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return out, nil
}

// ---- multi-row statements ----

// sizeClasses are the row counts of multi-row statements: a batch is split
// into chunks of these sizes (largest first), so that a handful of prepared
// statements per kind serve every batch size.
var sizeClasses = []int{4096, 1024, 256, 64, 16, 4, 1}

// chunkSizes splits n rows into size classes no larger than maxRows.
func chunkSizes(n, maxRows int) []int {
	var out []int
	for _, c := range sizeClasses {
		if c > maxRows {
			continue
		}
		for n >= c {
			out = append(out, c)
			n -= c
		}
	}
	return out
}

// multiRow describes a statement that carries rows of cols anonymous
// parameters each, followed by nSuffix shared parameters. (Numbered
// parameters, ?NNN, would make binding quadratic: the driver looks up every
// parameter's name, and SQLite keeps numbered names in a list.)
type multiRow struct {
	cols    int
	nSuffix int
	sql     func(rows int) string
}

func (m multiRow) maxRows() int { return (maxVars - m.nSuffix) / m.cols }

// run executes the statement over n rows in chunks. row appends the
// parameters of row i; suffix holds the shared parameters. If scan is set,
// the statement returns rows (RETURNING or SELECT) and scan reads each.
func (s *Store) run(ctx context.Context, tx *wtx, m multiRow, n int, suffix []any,
	row func(dst []any, i int) []any, scan func(rows *sql.Rows) error,
) error {
	args := make([]any, 0, min(n, m.maxRows())*m.cols+len(suffix))
	next := 0
	for _, size := range chunkSizes(n, m.maxRows()) {
		st, err := tx.stmt(ctx, m.sql(size))
		if err != nil {
			return err
		}
		args = args[:0]
		for i := next; i < next+size; i++ {
			args = row(args, i)
		}
		args = append(args, suffix...)
		next += size
		if scan == nil {
			if _, err := st.ExecContext(ctx, args...); err != nil {
				return translate(err)
			}
			continue
		}
		rows, err := st.QueryContext(ctx, args...)
		if err != nil {
			return translate(err)
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				_ = rows.Close()
				return err
			}
		}
		if err := rows.Close(); err != nil {
			return translate(err)
		}
		if err := rows.Err(); err != nil {
			return translate(err)
		}
	}
	return nil
}

// rowsSQL returns head + rows tuples of cols anonymous parameters + tail.
func rowsSQL(head string, rows, cols int, tail string) string {
	tuple := "(" + strings.Repeat("?,", cols-1) + "?)"
	var b strings.Builder
	b.Grow(len(head) + len(tail) + rows*(len(tuple)+1))
	b.WriteString(head)
	for r := range rows {
		if r > 0 {
			b.WriteByte(',')
		}
		b.WriteString(tuple)
	}
	b.WriteString(tail)
	return b.String()
}

// ---- attempts ----

const attemptCols = `task_id, app_id, module_id, attempt, pilot_id, host, slot, kind, exit_code, code, reason,
stdout, stderr, custom_text, bytes_read, bytes_written, input_bytes, output_bytes, cpu_user_ns, cpu_system_ns, max_rss,
created_at, leased_at, started_at, program_start, program_end, reported_at, recorded_at, user_timestamps, extra`

const attemptNCols = 30

var insertAttempts = multiRow{
	cols: attemptNCols,
	sql: func(rows int) string {
		return rowsSQL(`INSERT INTO attempts (`+attemptCols+`) VALUES `, rows, attemptNCols, "")
	},
}

// encodedAttempt is an attempt with its JSON columns encoded.
type encodedAttempt struct {
	a          *store.Attempt
	user, extr string
}

func encodeAttempt(a *store.Attempt) (encodedAttempt, error) {
	e := encodedAttempt{a: a, user: "[]", extr: "{}"}
	if len(a.UserTimestamps) > 0 {
		// Like every time the store keeps: microseconds, truncated.
		uts := make([]store.LabeledTime, len(a.UserTimestamps))
		for i, ut := range a.UserTimestamps {
			uts[i] = store.LabeledTime{Time: ut.Time.Truncate(time.Microsecond), Label: ut.Label}
		}
		b, err := json.Marshal(uts)
		if err != nil {
			return e, fmt.Errorf("encode user timestamps of task %d: %w", a.TaskID, err)
		}
		e.user = string(b)
	}
	if len(a.Extra) > 0 {
		b, err := json.Marshal(a.Extra)
		if err != nil {
			return e, fmt.Errorf("encode extra attributes of task %d: %w", a.TaskID, err)
		}
		e.extr = string(b)
	}
	return e, nil
}

func (e encodedAttempt) appendArgs(dst []any) []any {
	a := e.a
	return append(dst,
		a.TaskID, a.AppID, a.ModuleID, a.Attempt, a.PilotID, a.Host, a.Slot, a.Kind, a.ExitCode, a.Code, a.Reason,
		a.Stdout, a.Stderr, a.CustomText, a.BytesRead, a.BytesWritten, a.InputBytes, a.OutputBytes,
		int64(a.CPUUser), int64(a.CPUSystem), a.MaxRSS,
		toMicros(a.CreatedAt), toMicros(a.LeasedAt), toMicros(a.StartedAt), toMicros(a.ProgramStart),
		toMicros(a.ProgramEnd), toMicros(a.ReportedAt), toMicros(a.RecordedAt), e.user, e.extr)
}

// insertAttemptRows inserts attempt rows in multi-row statements.
func (s *Store) insertAttemptRows(ctx context.Context, tx *wtx, as []*store.Attempt) error {
	if len(as) == 0 {
		return nil
	}
	enc := make([]encodedAttempt, len(as))
	for i, a := range as {
		e, err := encodeAttempt(a)
		if err != nil {
			return err
		}
		enc[i] = e
	}
	err := s.run(ctx, tx, insertAttempts, len(enc), nil, func(dst []any, i int) []any {
		return enc[i].appendArgs(dst)
	}, nil)
	if err != nil {
		return fmt.Errorf("insert attempts: %w", err)
	}
	return nil
}

// AttemptList implements store.Tasks.
func (s *Store) AttemptList(ctx context.Context, taskID int64) ([]*store.Attempt, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, `+attemptCols+` FROM attempts WHERE task_id = ? ORDER BY id`, taskID)
	if err != nil {
		return nil, fmt.Errorf("list attempts of task %d: %w", taskID, err)
	}
	defer rows.Close()
	var out []*store.Attempt
	for rows.Next() {
		var (
			a                                                  store.Attempt
			cpuUser, cpuSystem                                 int64
			created, leased, started, pStart, pEnd, rep, recAt int64
			user, extra                                        string
		)
		if err := rows.Scan(&a.ID, &a.TaskID, &a.AppID, &a.ModuleID, &a.Attempt, &a.PilotID, &a.Host, &a.Slot, &a.Kind,
			&a.ExitCode, &a.Code, &a.Reason, &a.Stdout, &a.Stderr, &a.CustomText, &a.BytesRead, &a.BytesWritten,
			&a.InputBytes, &a.OutputBytes, &cpuUser, &cpuSystem, &a.MaxRSS,
			&created, &leased, &started, &pStart, &pEnd, &rep, &recAt, &user, &extra); err != nil {
			return nil, fmt.Errorf("list attempts of task %d: %w", taskID, err)
		}
		a.CPUUser, a.CPUSystem = time.Duration(cpuUser), time.Duration(cpuSystem)
		a.CreatedAt, a.LeasedAt, a.StartedAt = fromMicros(created), fromMicros(leased), fromMicros(started)
		a.ProgramStart, a.ProgramEnd = fromMicros(pStart), fromMicros(pEnd)
		a.ReportedAt, a.RecordedAt = fromMicros(rep), fromMicros(recAt)
		if user != "" && user != "[]" {
			if err := json.Unmarshal([]byte(user), &a.UserTimestamps); err != nil {
				return nil, fmt.Errorf("decode user timestamps of attempt %d: %w", a.ID, err)
			}
		}
		if extra != "" && extra != "{}" {
			if err := json.Unmarshal([]byte(extra), &a.Extra); err != nil {
				return nil, fmt.Errorf("decode extra attributes of attempt %d: %w", a.ID, err)
			}
		}
		out = append(out, &a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list attempts of task %d: %w", taskID, err)
	}
	return out, nil
}
