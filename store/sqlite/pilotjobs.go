package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/scalebox-hpc/scalebox/store"
)

// ---- pilot jobs ----

const pilotJobCols = `id, site, app_id, job_id, count, state, native, reason, exit_code, final, submitted_at, updated_at`

func scanPilotJob(sc interface{ Scan(...any) error }) (*store.PilotJob, error) {
	var (
		j                  store.PilotJob
		exit               sql.NullInt64
		submitted, updated int64
	)
	if err := sc.Scan(&j.ID, &j.Site, &j.AppID, &j.JobID, &j.Count, &j.State, &j.Native, &j.Reason, &exit, &j.Final,
		&submitted, &updated); err != nil {
		return nil, err
	}
	if exit.Valid {
		c := int(exit.Int64)
		j.ExitCode = &c
	}
	j.SubmittedAt, j.UpdatedAt = fromMicros(submitted), fromMicros(updated)
	return &j, nil
}

// PilotJobAdd implements store.PilotJobs.
func (s *Store) PilotJobAdd(ctx context.Context, in *store.PilotJob) (*store.PilotJob, error) {
	if in == nil {
		return nil, fmt.Errorf("add pilot job: %w", errNilArg)
	}
	submitted := nowMicros(in.SubmittedAt)
	updated := submitted
	if !in.UpdatedAt.IsZero() {
		updated = in.UpdatedAt.UnixMicro()
	}
	var out *store.PilotJob
	err := s.write(ctx, func(tx *wtx) error {
		var err error
		out, err = scanPilotJob(tx.QueryRowContext(ctx, `
INSERT INTO pilot_jobs (site, app_id, job_id, count, state, native, reason, exit_code, final, submitted_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING `+pilotJobCols,
			in.Site, in.AppID, in.JobID, in.Count, in.State, in.Native, in.Reason, in.ExitCode, in.Final, submitted, updated))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("add pilot job: %w", translate(err))
	}
	return out, nil
}

// PilotJobGet implements store.PilotJobs.
func (s *Store) PilotJobGet(ctx context.Context, id int64) (*store.PilotJob, error) {
	j, err := scanPilotJob(s.r.QueryRowContext(ctx, `SELECT `+pilotJobCols+` FROM pilot_jobs WHERE id = ?`, id))
	if err != nil {
		return nil, fmt.Errorf("get pilot job %d: %w", id, translate(err))
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
		where, args = append(where, "site = ?"), append(args, f.Site)
	}
	if f.AppID != 0 {
		where, args = append(where, "app_id = ?"), append(args, f.AppID)
	}
	if f.Active {
		where = append(where, "final = 0")
	}
	q := `SELECT ` + pilotJobCols + ` FROM pilot_jobs`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY id DESC`
	if f.Limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list pilot jobs: %w", err)
	}
	defer rows.Close()
	var out []*store.PilotJob
	for rows.Next() {
		j, err := scanPilotJob(rows)
		if err != nil {
			return nil, fmt.Errorf("list pilot jobs: %w", err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list pilot jobs: %w", err)
	}
	return out, nil
}

// PilotJobUpdate implements store.PilotJobs.
func (s *Store) PilotJobUpdate(ctx context.Context, us []store.PilotJobUpdate) error {
	if len(us) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *wtx) error {
		for _, u := range us {
			if err := execOne(ctx, tx, `UPDATE pilot_jobs SET state = ?, native = ?, reason = ?, exit_code = ?, final = ?, updated_at = ?
WHERE id = ?`, u.State, u.Native, u.Reason, u.ExitCode, u.Final, nowMicros(u.At), u.ID); err != nil {
				return fmt.Errorf("pilot job %d: %w", u.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update pilot jobs: %w", err)
	}
	return nil
}
