package sqlite

import (
	"context"
	"fmt"
	"strings"

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
