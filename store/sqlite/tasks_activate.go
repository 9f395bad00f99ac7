package sqlite

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/store"
)

// TaskActivate implements store.Store.
func (s *Store) TaskActivate(ctx context.Context, p store.TaskActivateParams) (int, error) {
	where := []string{"app_id = ?", "status = -9"}
	args := []any{p.AppID}
	if p.ModuleID != 0 {
		where, args = append(where, "module_id = ?"), append(args, p.ModuleID)
	}
	if len(p.IDs) > 0 {
		where = append(where, "id IN (SELECT value FROM json_each(?))")
		ids := make([]string, len(p.IDs))
		for i, id := range p.IDs {
			ids[i] = fmt.Sprint(id)
		}
		args = append(args, "["+strings.Join(ids, ",")+"]")
	}
	limit := -1
	if p.Limit > 0 {
		limit = p.Limit
	}
	q := `UPDATE tasks SET status = -1, updated_at = ? WHERE id IN (SELECT id FROM tasks WHERE ` +
		strings.Join(where, " AND ") + ` ORDER BY id LIMIT ?)`
	var n int64
	err := s.write(ctx, func(tx *wtx) error {
		r, err := tx.ExecContext(ctx, q, append(append([]any{nowMicros(p.Now)}, args...), limit)...)
		if err != nil {
			return err
		}
		n, err = r.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("activate tasks of app %d: %w", p.AppID, err)
	}
	return int(n), nil
}

// TaskPromoteRetries implements store.Store.
func (s *Store) TaskPromoteRetries(ctx context.Context, now time.Time) ([]int64, error) {
	at := nowMicros(now)
	var due int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = -4 AND retry_at <= ? LIMIT 1)`, at).Scan(&due)
	if err != nil || due == 0 {
		return nil, err // nothing due: no write transaction
	}
	var mods []int64
	err = s.write(ctx, func(tx *wtx) error {
		mods = mods[:0]
		rows, err := tx.QueryContext(ctx, `UPDATE tasks SET status = -1, retry_at = 0, updated_at = ?1
WHERE status = -4 AND retry_at <= ?1 RETURNING module_id`, at)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var m int64
			if err := rows.Scan(&m); err != nil {
				return err
			}
			mods = append(mods, m)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("promote due retries: %w", err)
	}
	return mods, nil
}
