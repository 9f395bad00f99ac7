package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/scalebox-hpc/scalebox/store"
)

// TaskActivate implements store.Store.
func (s *Store) TaskActivate(ctx context.Context, p store.TaskActivateParams) (int, error) {
	limit := any(nil) // LIMIT NULL = all
	if p.Limit > 0 {
		limit = p.Limit
	}
	ids := p.IDs
	if ids == nil {
		ids = []int64{}
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE tasks SET status = -1, updated_at = $1
		WHERE id IN (
			SELECT id FROM tasks
			WHERE app_id = $2 AND status = -9 AND ($3 = 0 OR module_id = $3)
				AND (cardinality($4::bigint[]) = 0 OR id = ANY ($4))
			ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED)`,
		now(p.Now), p.AppID, p.ModuleID, ids, limit)
	if err != nil {
		return 0, dbErr(fmt.Sprintf("activate tasks of app %d", p.AppID), err)
	}
	return int(tag.RowsAffected()), nil
}

// TaskPromoteRetries implements store.Store.
func (s *Store) TaskPromoteRetries(ctx context.Context, at time.Time) ([]int64, error) {
	rows, err := s.pool.Query(ctx, `
		UPDATE tasks SET status = -1, retry_at = NULL, updated_at = $1
		WHERE status = -4 AND retry_at <= $1 RETURNING module_id`, now(at))
	if err != nil {
		return nil, dbErr("promote due retries", err)
	}
	mods, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, dbErr("promote due retries", err)
	}
	return mods, nil
}
