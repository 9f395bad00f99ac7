package postgres

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/scalebox-hpc/scalebox/store"
)

// taskColumns lists the columns scanTask reads, prefixed with alias.
func taskColumns(alias string) string {
	cols := []string{"id", "app_id", "module_id", "body", "headers", "status", "attempt", "app_failures",
		"infra_failures", "to_host", "pilot_id", "leased_at", "lease_expires", "created_at", "updated_at"}
	if alias != "" {
		for i, c := range cols {
			cols[i] = alias + "." + c
		}
	}
	return strings.Join(cols, ", ")
}

var taskCols = taskColumns("")

func scanTask(row pgx.Row) (*store.Task, error) {
	var t store.Task
	var pilot pgtype.Int8
	var leased, expires, created, updated pgtype.Timestamptz
	if err := row.Scan(&t.ID, &t.AppID, &t.ModuleID, &t.Body, &t.Headers, &t.Status, &t.Attempt, &t.AppFailures,
		&t.InfraFailures, &t.ToHost, &pilot, &leased, &expires, &created, &updated); err != nil {
		return nil, err
	}
	t.PilotID = pilot.Int64
	t.LeasedAt, t.LeaseExpires, t.CreatedAt, t.UpdatedAt = tv(leased), tv(expires), tv(created), tv(updated)
	return &t, nil
}

func collectTasks(rows pgx.Rows) ([]*store.Task, error) {
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

// TaskGet returns one task.
func (s *Store) TaskGet(ctx context.Context, id int64) (*store.Task, error) {
	t, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = $1`, id))
	if err != nil {
		return nil, dbErr(fmt.Sprintf("get task %d", id), err)
	}
	return t, nil
}

// TaskList returns tasks matching f, by id, after f.AfterID, at most
// f.Limit (default 100, max 10000).
func (s *Store) TaskList(ctx context.Context, f store.TaskFilter) ([]*store.Task, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 10000)
	// Only the filters in use appear in the SQL, so each combination gets a
	// plan that uses the right index.
	var where []string
	args := []any{f.AfterID, limit}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.Replace(cond, "?", "$"+strconv.Itoa(len(args)), 1))
	}
	if f.AppID != 0 {
		add("app_id = ?", f.AppID)
	}
	if f.ModuleID != 0 {
		add("module_id = ?", f.ModuleID)
	}
	if f.Status != nil {
		if err := checkInt32("status", *f.Status); err != nil {
			return nil, nil // no task has it
		}
		add("status = ?", *f.Status)
	}
	sql := `SELECT ` + taskCols + ` FROM tasks WHERE id > $1`
	for _, w := range where {
		sql += " AND " + w
	}
	sql += ` ORDER BY id LIMIT $2`
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, dbErr("list tasks", err)
	}
	ts, err := collectTasks(rows)
	return ts, dbErr("list tasks", err)
}

// TaskAdd inserts tasks in one transaction.
func (s *Store) TaskAdd(ctx context.Context, p store.TaskAddParams) (*store.TaskAddResult, error) {
	overwrite, err := conflictMode(p.Conflict)
	if err != nil {
		return nil, fmt.Errorf("add tasks: %w", err)
	}
	in := make([]newTask, len(p.Tasks))
	for i, t := range p.Tasks {
		in[i] = newTask{appID: p.AppID, TaskInput: t}
	}
	t := now(p.Now)
	var res []addResult
	if len(in) > 0 {
		// Optimistically insert without ON CONFLICT (its per-row pre-check
		// costs about 40% of an insert). A unique violation means some task
		// exists, a deadlock that another call inserts the same tasks in
		// another order: either way the call is redone with the general,
		// deadlock-free path.
		mode := addFast
		for try := 0; ; try++ {
			err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
				var err error
				res, err = addTasks(ctx, tx, in, overwrite, mode, t)
				return err
			})
			if err == nil || try >= 4 || ctx.Err() != nil || !(isUniqueViolation(err) || retryable(err)) {
				break
			}
			mode = addSafe
		}
		if err != nil {
			return nil, dbErr("add tasks", err)
		}
	}
	out := &store.TaskAddResult{IDs: make([]int64, len(in)), Duplicate: make([]bool, len(in))}
	for i, r := range res {
		out.IDs[i], out.Duplicate[i] = r.id, r.dup
		if r.inserted {
			out.Inserted++
		}
	}
	out.Duplicates = len(in) - out.Inserted
	return out, nil
}

// conflictMode parses a conflict action: false for IGNORE (the default),
// true for OVERWRITE.
func conflictMode(c string) (overwrite bool, err error) {
	switch {
	case c == "" || strings.EqualFold(c, store.ConflictIgnore):
		return false, nil
	case strings.EqualFold(c, store.ConflictOverwrite):
		return true, nil
	}
	return false, fmt.Errorf("unknown conflict action %q", c)
}

// newTask is a task to insert into an app.
type newTask struct {
	appID int64
	store.TaskInput
}

// addResult is what addTasks did with one input.
type addResult struct {
	id       int64
	dup      bool // (module, body) existed, in the store or earlier in the call
	inserted bool // a new task, or (OVERWRITE) an existing final task re-queued
}

// taskKey identifies a task as the unique index does.
type taskKey struct {
	module int64
	sum    [16]byte // md5(body)
}

// addChunk bounds the rows of one INSERT statement.
const addChunk = 20000

// addMode selects how addTasks inserts.
type addMode int

const (
	// addSafe inserts with ON CONFLICT DO NOTHING and maps the returned
	// rows to inputs by (module, md5(body)); it never fails on duplicates.
	// Rows get ids in input order but are inserted in key order, so two
	// calls waiting on each other's uncommitted tasks cannot deadlock.
	addSafe addMode = iota
	// addFast inserts with a plain INSERT: cheaper, but a task that
	// already exists fails the statement (and the transaction) with a
	// unique violation; the caller then retries with addSafe.
	addFast
)

// isUniqueViolation reports whether err is a unique_violation.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// addTasks inserts tasks within tx. Inputs that repeat a (module, body) of
// an earlier input are duplicates of it; with overwrite the last input's
// headers win, and an existing final task is re-queued (with the status of
// the first input that names it, failure counters reset, attempt kept).
func addTasks(ctx context.Context, tx pgx.Tx, in []newTask, overwrite bool, mode addMode, t time.Time) ([]addResult, error) {
	res := make([]addResult, len(in))
	// uniq holds the first input of each key; uidx maps every input to its
	// key's entry.
	type uniqTask struct {
		first   int
		headers string
		key     taskKey
	}
	uniq := make([]uniqTask, 0, len(in))
	byKey := make(map[taskKey]int, len(in))
	uidx := make([]int, len(in))
	for i := range in {
		task := &in[i]
		if err := checkInt32("status", task.Status); err != nil {
			return nil, fmt.Errorf("task %d: %w", i, err)
		}
		headers := task.Headers
		if headers == "" {
			headers = "{}"
		}
		k := taskKey{task.ModuleID, md5.Sum([]byte(task.Body))}
		if u, ok := byKey[k]; ok {
			res[i].dup = true
			uidx[i] = u
			if overwrite {
				uniq[u].headers = headers
			}
			continue
		}
		uidx[i] = len(uniq)
		byKey[k] = len(uniq)
		uniq = append(uniq, uniqTask{first: i, headers: headers, key: k})
	}

	// Insert the first input of every key; conflicts are skipped.
	ids := make([]int64, len(uniq))
	for start := 0; start < len(uniq); start += addChunk {
		chunk := uniq[start:min(start+addChunk, len(uniq))]
		n := len(chunk)
		apps, mods := make([]int64, n), make([]int64, n)
		bodies, headers, hosts := make([]string, n), make([]string, n), make([]string, n)
		statuses := make([]int32, n)
		sums := make([][16]byte, n)
		for j, u := range chunk {
			task := &in[u.first]
			apps[j], mods[j], bodies[j], headers[j], hosts[j] = task.appID, task.ModuleID, task.Body, u.headers, task.ToHost
			statuses[j], sums[j] = int32(task.Status), u.key.sum
		}
		if mode == addFast {
			if err := insertFast(ctx, tx, ids[start:start+n], t, apps, mods, bodies, headers, statuses, hosts); err != nil {
				return nil, err
			}
			for j := range chunk {
				res[chunk[j].first].inserted = true
			}
			continue
		}
		rows, err := tx.Query(ctx, `
			WITH input AS MATERIALIZED (
				SELECT nextval('tasks_id_seq'::regclass) AS id, u.*
				FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::int[], $7::text[], $8::uuid[])
					WITH ORDINALITY AS u(app_id, module_id, body, headers, status, to_host, sum, ord)
				ORDER BY u.ord
			)
			INSERT INTO tasks (id, app_id, module_id, body, headers, status, to_host, created_at, updated_at)
			SELECT id, app_id, module_id, body, headers, status, to_host, $1, $1
			FROM input
			ORDER BY module_id, sum
			ON CONFLICT (module_id, (md5(body)::uuid)) DO NOTHING
			RETURNING id, module_id, md5(body)::uuid`,
			t, apps, mods, bodies, headers, statuses, hosts, sums)
		if err != nil {
			return nil, fmt.Errorf("insert tasks: %w", err)
		}
		for rows.Next() {
			var id int64
			var k taskKey
			if err := rows.Scan(&id, &k.module, &k.sum); err != nil {
				rows.Close()
				return nil, fmt.Errorf("insert tasks: %w", err)
			}
			u, ok := byKey[k]
			if !ok {
				rows.Close()
				return nil, fmt.Errorf("insert tasks: returned task %d matches no input", id)
			}
			ids[u] = id
			res[uniq[u].first].inserted = true
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("insert tasks: %w", err)
		}
	}

	// The rest exist: find (IGNORE) or update (OVERWRITE) them.
	var mods []int64
	var sums [][16]byte
	var ords []int32
	var headers []string
	var statuses []int32
	for u := range uniq {
		if ids[u] != 0 {
			continue
		}
		res[uniq[u].first].dup = true
		mods = append(mods, uniq[u].key.module)
		sums = append(sums, uniq[u].key.sum)
		ords = append(ords, int32(u))
		headers = append(headers, uniq[u].headers)
		statuses = append(statuses, int32(in[uniq[u].first].Status))
	}
	if len(ords) > 0 {
		var rows pgx.Rows
		var err error
		if overwrite {
			rows, err = tx.Query(ctx, `
				WITH cur AS (
					SELECT t.id, t.status AS old, u.ord, u.headers, u.status
					FROM unnest($1::bigint[], $2::uuid[], $3::int[], $4::text[], $5::int[]) AS u(module_id, sum, ord, headers, status)
					JOIN tasks t ON t.module_id = u.module_id AND md5(t.body)::uuid = u.sum
					ORDER BY t.id
					FOR UPDATE OF t
				), upd AS (
					SELECT cur.*, (cur.old >= 0 OR cur.old < -9) AS final FROM cur
				)
				UPDATE tasks t SET
					headers = upd.headers,
					updated_at = $6,
					status = CASE WHEN upd.final THEN upd.status ELSE t.status END,
					app_failures = CASE WHEN upd.final THEN 0 ELSE t.app_failures END,
					infra_failures = CASE WHEN upd.final THEN 0 ELSE t.infra_failures END,
					pilot_id = CASE WHEN upd.final THEN NULL ELSE t.pilot_id END,
					lease_expires = CASE WHEN upd.final THEN NULL ELSE t.lease_expires END
				FROM upd WHERE t.id = upd.id
				RETURNING t.id, upd.ord, upd.final`,
				mods, sums, ords, headers, statuses, t)
		} else {
			rows, err = tx.Query(ctx, `
				SELECT t.id, u.ord, false
				FROM unnest($1::bigint[], $2::uuid[], $3::int[]) AS u(module_id, sum, ord)
				JOIN tasks t ON t.module_id = u.module_id AND md5(t.body)::uuid = u.sum`,
				mods, sums, ords)
		}
		if err != nil {
			return nil, fmt.Errorf("find existing tasks: %w", err)
		}
		for rows.Next() {
			var id int64
			var ord int32
			var requeued bool
			if err := rows.Scan(&id, &ord, &requeued); err != nil {
				rows.Close()
				return nil, fmt.Errorf("find existing tasks: %w", err)
			}
			if ord < 0 || int(ord) >= len(uniq) {
				rows.Close()
				return nil, fmt.Errorf("find existing tasks: bad ordinal %d", ord)
			}
			ids[ord] = id
			res[uniq[ord].first].inserted = requeued
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("find existing tasks: %w", err)
		}
	}

	for u := range uniq {
		if ids[u] == 0 {
			return nil, fmt.Errorf("task (module %d, body of input %d) neither inserted nor found", uniq[u].key.module, uniq[u].first)
		}
	}
	for i := range in {
		res[i].id = ids[uidx[i]]
	}
	return res, nil
}

// insertFast inserts tasks that must all be new and stores their ids, in
// input order, into ids. The SELECT feeds the rows in input order, so the
// sequence hands out increasing ids in input order; sorting the returned
// ids maps them back without returning a key.
func insertFast(ctx context.Context, tx pgx.Tx, ids []int64, t time.Time, apps, mods []int64, bodies, headers []string, statuses []int32, hosts []string) error {
	rows, err := tx.Query(ctx, `
		INSERT INTO tasks (app_id, module_id, body, headers, status, to_host, created_at, updated_at)
		SELECT u.app_id, u.module_id, u.body, u.headers, u.status, u.to_host, $1, $1
		FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::int[], $7::text[])
			WITH ORDINALITY AS u(app_id, module_id, body, headers, status, to_host, ord)
		ORDER BY u.ord
		RETURNING id`,
		t, apps, mods, bodies, headers, statuses, hosts)
	if err != nil {
		return fmt.Errorf("insert tasks: %w", err)
	}
	n := 0
	for rows.Next() {
		if n == len(ids) {
			rows.Close()
			return fmt.Errorf("insert tasks: more rows returned than inserted")
		}
		if err := rows.Scan(&ids[n]); err != nil {
			rows.Close()
			return fmt.Errorf("insert tasks: %w", err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("insert tasks: %w", err)
	}
	if n != len(ids) {
		return fmt.Errorf("insert tasks: %d of %d rows returned", n, len(ids))
	}
	slices.Sort(ids)
	return nil
}
