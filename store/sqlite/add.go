package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/scalebox-hpc/scalebox/store"
)

// addItem is one task to insert, with the app it belongs to.
type addItem struct {
	appID int64
	in    *store.TaskInput
}

// addOutcome is what happened to one addItem.
type addOutcome struct {
	id       int64
	dup      bool // (module, body) existed, in the store or earlier in the call
	inserted bool // counted as inserted: new, or a final task re-queued by OVERWRITE
}

type taskKey struct {
	module int64
	body   string
}

func headersOrEmpty(h string) string {
	if h == "" {
		return "{}"
	}
	return h
}

// insertTasks inserts rows (app_id, module_id, body, headers, status,
// to_host, created_at, updated_at); conflicting rows are skipped.
var insertTasks = multiRow{
	cols: 8,
	sql: func(rows int) string {
		return rowsSQL(`INSERT INTO tasks (app_id, module_id, body, headers, status, to_host, created_at, updated_at) VALUES `,
			rows, 8, ` ON CONFLICT (module_id, body) DO NOTHING RETURNING id, module_id, body`)
	},
}

// lookupTasks finds existing tasks by (ordinal, module_id, body).
var lookupTasks = multiRow{
	cols: 3,
	sql: func(rows int) string {
		return rowsSQL(`SELECT v.column1, t.id, t.status FROM (VALUES `, rows, 3,
			`) AS v JOIN tasks AS t ON t.module_id = v.column2 AND t.body = v.column3`)
	},
}

// addTasks inserts items as if one at a time, in order, and reports one
// outcome per item. Duplicates of earlier items in the call or of stored
// tasks are handled per overwrite (ConflictOverwrite) or ignored.
func (s *Store) addTasks(ctx context.Context, tx *wtx, items []addItem, overwrite bool, now int64) ([]addOutcome, error) {
	out := make([]addOutcome, len(items))
	if len(items) == 0 {
		return out, nil
	}
	// Group repeated keys: first[k] is the first item with key k, last[i]
	// the last item repeating first item i (OVERWRITE: its headers win).
	first := make(map[taskKey]int, len(items))
	owner := make([]int, len(items))
	last := make([]int, len(items))
	uniq := make([]int, 0, len(items))
	for i, it := range items {
		k := taskKey{it.in.ModuleID, it.in.Body}
		if f, ok := first[k]; ok {
			owner[i] = f
			last[f] = i
			continue
		}
		first[k] = i
		owner[i], last[i] = i, i
		uniq = append(uniq, i)
	}
	headersOf := func(f int) string {
		if overwrite {
			return headersOrEmpty(items[last[f]].in.Headers)
		}
		return headersOrEmpty(items[f].in.Headers)
	}

	// Insert the distinct keys; the ones not returned already exist.
	inserted := 0
	err := s.run(ctx, tx, insertTasks, len(uniq), nil, func(dst []any, j int) []any {
		it := items[uniq[j]]
		return append(dst, it.appID, it.in.ModuleID, it.in.Body, headersOf(uniq[j]), it.in.Status, it.in.ToHost, now, now)
	}, func(rows *sql.Rows) error {
		var k taskKey
		var id int64
		if err := rows.Scan(&id, &k.module, &k.body); err != nil {
			return err
		}
		f, ok := first[k]
		if !ok {
			return fmt.Errorf("inserted task %d matches no input", id)
		}
		out[f] = addOutcome{id: id, inserted: true}
		inserted++
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("insert tasks: %w", err)
	}

	if inserted < len(uniq) {
		if err := s.resolveExisting(ctx, tx, items, uniq, out, overwrite, headersOf, now); err != nil {
			return nil, err
		}
	}
	for i := range items {
		if f := owner[i]; f != i {
			out[i] = addOutcome{id: out[f].id, dup: true}
		}
	}
	return out, nil
}

// resolveExisting fills the outcomes of distinct items that were not
// inserted because their task exists, applying OVERWRITE.
func (s *Store) resolveExisting(ctx context.Context, tx *wtx, items []addItem, uniq []int, out []addOutcome,
	overwrite bool, headersOf func(int) string, now int64,
) error {
	var existing []int
	for _, f := range uniq {
		if out[f].id == 0 {
			existing = append(existing, f)
		}
	}
	status := make(map[int]int, len(existing))
	err := s.run(ctx, tx, lookupTasks, len(existing), nil, func(dst []any, j int) []any {
		f := existing[j]
		return append(dst, f, items[f].in.ModuleID, items[f].in.Body)
	}, func(rows *sql.Rows) error {
		var f, st int
		var id int64
		if err := rows.Scan(&f, &id, &st); err != nil {
			return err
		}
		if f < 0 || f >= len(out) {
			return fmt.Errorf("look up tasks: bad ordinal %d", f)
		}
		out[f] = addOutcome{id: id, dup: true}
		status[f] = st
		return nil
	})
	if err != nil {
		return fmt.Errorf("look up existing tasks: %w", err)
	}
	for _, f := range existing {
		if out[f].id == 0 {
			return fmt.Errorf("look up existing tasks: (module %d, body %q) neither inserted nor found", items[f].in.ModuleID, items[f].in.Body)
		}
	}
	if !overwrite {
		return nil
	}

	requeue, err := tx.stmt(ctx, `UPDATE tasks SET headers = ?1, status = ?2, app_failures = 0, infra_failures = 0,
pilot_id = 0, lease_expires = 0, updated_at = ?3 WHERE id = ?4`)
	if err != nil {
		return err
	}
	setHeaders, err := tx.stmt(ctx, `UPDATE tasks SET headers = ?1, updated_at = ?2 WHERE id = ?3`)
	if err != nil {
		return err
	}
	for _, f := range existing {
		if store.IsFinal(status[f]) {
			if _, err := requeue.ExecContext(ctx, headersOf(f), items[f].in.Status, now, out[f].id); err != nil {
				return fmt.Errorf("re-queue task %d: %w", out[f].id, translate(err))
			}
			out[f].inserted = true
			continue
		}
		if _, err := setHeaders.ExecContext(ctx, headersOf(f), now, out[f].id); err != nil {
			return fmt.Errorf("overwrite headers of task %d: %w", out[f].id, translate(err))
		}
	}
	return nil
}

// TaskAdd implements store.Tasks.
func (s *Store) TaskAdd(ctx context.Context, p store.TaskAddParams) (*store.TaskAddResult, error) {
	n := len(p.Tasks)
	res := &store.TaskAddResult{IDs: make([]int64, n), Duplicate: make([]bool, n)}
	if n == 0 {
		return res, nil
	}
	items := make([]addItem, n)
	for i := range p.Tasks {
		items[i] = addItem{appID: p.AppID, in: &p.Tasks[i]}
	}
	var outs []addOutcome
	err := s.write(ctx, func(tx *wtx) error {
		var err error
		outs, err = s.addTasks(ctx, tx, items, p.Conflict == store.ConflictOverwrite, nowMicros(p.Now))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("add %d tasks: %w", n, err)
	}
	for i, o := range outs {
		res.IDs[i], res.Duplicate[i] = o.id, o.dup
		if o.inserted {
			res.Inserted++
		} else {
			res.Duplicates++
		}
	}
	return res, nil
}

// nowMicros is t in microseconds, or the current time if t is zero.
func nowMicros(t time.Time) int64 {
	if t.IsZero() {
		return time.Now().UnixMicro()
	}
	return t.UnixMicro()
}
