package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/scalebox-hpc/scalebox/store"
)

// ---- pilot jobs ----

const pilotJobCols = `id, site, app_id, job_id, count, state, native, reason, exit_code, final, submitted_at, updated_at`

func scanPilotJob(row pgx.Row) (*store.PilotJob, error) {
	var (
		j                  store.PilotJob
		exit               pgtype.Int4
		submitted, updated pgtype.Timestamptz
	)
	if err := row.Scan(&j.ID, &j.Site, &j.AppID, &j.JobID, &j.Count, &j.State, &j.Native, &j.Reason, &exit, &j.Final,
		&submitted, &updated); err != nil {
		return nil, err
	}
	if exit.Valid {
		c := int(exit.Int32)
		j.ExitCode = &c
	}
	j.SubmittedAt, j.UpdatedAt = tv(submitted), tv(updated)
	return &j, nil
}

// PilotJobAdd implements store.PilotJobs.
func (s *Store) PilotJobAdd(ctx context.Context, in *store.PilotJob) (*store.PilotJob, error) {
	if in == nil {
		return nil, errors.New("add pilot job: nil job")
	}
	submitted := now(in.SubmittedAt)
	updated := submitted
	if !in.UpdatedAt.IsZero() {
		updated = ts(in.UpdatedAt)
	}
	j, err := scanPilotJob(s.pool.QueryRow(ctx, `
		INSERT INTO pilot_jobs (site, app_id, job_id, count, state, native, reason, exit_code, final, submitted_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING `+pilotJobCols,
		in.Site, in.AppID, in.JobID, in.Count, in.State, in.Native, in.Reason, in.ExitCode, in.Final, submitted, updated))
	if err != nil {
		return nil, dbErr("add pilot job", err)
	}
	return j, nil
}

// PilotJobGet implements store.PilotJobs.
func (s *Store) PilotJobGet(ctx context.Context, id int64) (*store.PilotJob, error) {
	j, err := scanPilotJob(s.pool.QueryRow(ctx, `SELECT `+pilotJobCols+` FROM pilot_jobs WHERE id = $1`, id))
	if err != nil {
		return nil, dbErr(fmt.Sprintf("get pilot job %d", id), err)
	}
	return j, nil
}

// PilotJobList implements store.PilotJobs.
func (s *Store) PilotJobList(ctx context.Context, f store.PilotJobFilter) ([]*store.PilotJob, error) {
	var (
		where []string
		args  []any
	)
	if f.Site != "" {
		args = append(args, f.Site)
		where = append(where, fmt.Sprintf("site = $%d", len(args)))
	}
	if f.AppID != 0 {
		args = append(args, f.AppID)
		where = append(where, fmt.Sprintf("app_id = $%d", len(args)))
	}
	if f.Active {
		where = append(where, "NOT final")
	}
	q := `SELECT ` + pilotJobCols + ` FROM pilot_jobs`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY id DESC`
	if f.Limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, f.Limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, dbErr("list pilot jobs", err)
	}
	defer rows.Close()
	var out []*store.PilotJob
	for rows.Next() {
		j, err := scanPilotJob(rows)
		if err != nil {
			return nil, dbErr("list pilot jobs", err)
		}
		out = append(out, j)
	}
	return out, dbErr("list pilot jobs", rows.Err())
}

// PilotJobUpdate implements store.PilotJobs.
func (s *Store) PilotJobUpdate(ctx context.Context, us []store.PilotJobUpdate) error {
	if len(us) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, u := range us {
			b.Queue(`UPDATE pilot_jobs SET state = $1, native = $2, reason = $3, exit_code = $4, final = $5, updated_at = $6
				WHERE id = $7`, u.State, u.Native, u.Reason, u.ExitCode, u.Final, now(u.At), u.ID)
		}
		br := tx.SendBatch(ctx, b)
		defer br.Close()
		for _, u := range us {
			tag, err := br.Exec()
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return fmt.Errorf("pilot job %d: %w", u.ID, store.ErrNotFound)
			}
		}
		return br.Close()
	})
	return dbErr("update pilot jobs", err)
}
