package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/scalebox-hpc/scalebox/store"
)

// ---- pilots ----

const pilotCols = `id, site, host, ip, cores, memory_mb, gpus, slots, job_id, deadline, status, version, registered_at, last_seen`

func scanPilot(sc interface{ Scan(...any) error }) (*store.Pilot, error) {
	var (
		p                              store.Pilot
		deadline, registered, lastSeen int64
	)
	if err := sc.Scan(&p.ID, &p.Site, &p.Host, &p.IP, &p.Cores, &p.MemoryMB, &p.GPUs, &p.Slots, &p.JobID,
		&deadline, &p.Status, &p.Version, &registered, &lastSeen); err != nil {
		return nil, err
	}
	p.Deadline, p.RegisteredAt, p.LastSeen = fromMicros(deadline), fromMicros(registered), fromMicros(lastSeen)
	return &p, nil
}

// PilotRegister implements store.Pilots.
func (s *Store) PilotRegister(ctx context.Context, in *store.Pilot) (*store.Pilot, error) {
	if in == nil {
		return nil, fmt.Errorf("register pilot: %w", errNilArg)
	}
	now := in.RegisteredAt
	if now.IsZero() {
		now = time.Now()
	}
	var out *store.Pilot
	err := s.write(ctx, func(tx *wtx) error {
		var err error
		out, err = scanPilot(tx.QueryRowContext(ctx, `
INSERT INTO pilots (site, host, ip, cores, memory_mb, gpus, slots, job_id, deadline, status, version, registered_at, last_seen)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING `+pilotCols,
			in.Site, in.Host, in.IP, in.Cores, in.MemoryMB, in.GPUs, in.Slots, in.JobID, toMicros(in.Deadline),
			store.PilotActive, in.Version, toMicros(now), toMicros(now)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("register pilot: %w", translate(err))
	}
	return out, nil
}

// PilotGet implements store.Pilots.
func (s *Store) PilotGet(ctx context.Context, id int64) (*store.Pilot, error) {
	p, err := scanPilot(s.r.QueryRowContext(ctx, `SELECT `+pilotCols+` FROM pilots WHERE id = ?`, id))
	if err != nil {
		return nil, fmt.Errorf("get pilot %d: %w", id, translate(err))
	}
	return p, nil
}

// PilotList implements store.Pilots.
func (s *Store) PilotList(ctx context.Context, f store.PilotFilter) ([]*store.Pilot, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+pilotCols+` FROM pilots
WHERE (?1 = '' OR site = ?1) AND (?2 = '' OR status = ?2) ORDER BY id DESC`, f.Site, f.Status)
	if err != nil {
		return nil, fmt.Errorf("list pilots: %w", err)
	}
	return collectPilots(rows, "list pilots")
}

func collectPilots(rows *sql.Rows, what string) ([]*store.Pilot, error) {
	defer rows.Close()
	var out []*store.Pilot
	for rows.Next() {
		p, err := scanPilot(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// PilotSetStatus implements store.Pilots.
func (s *Store) PilotSetStatus(ctx context.Context, id int64, status string) error {
	err := s.write(ctx, func(tx *wtx) error {
		return execOne(ctx, tx, `UPDATE pilots SET status = ? WHERE id = ?`, status, id)
	})
	if err != nil {
		return fmt.Errorf("set status of pilot %d: %w", id, err)
	}
	return nil
}

// PilotMarkLost implements store.Pilots.
func (s *Store) PilotMarkLost(ctx context.Context, before time.Time) ([]*store.Pilot, error) {
	var out []*store.Pilot
	err := s.write(ctx, func(tx *wtx) error {
		rows, err := tx.QueryContext(ctx, `UPDATE pilots SET status = 'LOST'
WHERE status IN ('ACTIVE', 'DRAINING') AND last_seen < ? RETURNING `+pilotCols, toMicros(before))
		if err != nil {
			return err
		}
		out, err = collectPilots(rows, "read lost pilots")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mark pilots lost: %w", err)
	}
	return out, nil
}

// execOne runs an UPDATE that must match a row; ErrNotFound otherwise.
func execOne(ctx context.Context, tx *wtx, query string, args ...any) error {
	r, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return translate(err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// ---- sites ----

// SitePut implements store.Sites.
func (s *Store) SitePut(ctx context.Context, site *store.Site) error {
	if site == nil {
		return fmt.Errorf("put site: %w", errNilArg)
	}
	now := time.Now()
	created, updated := site.CreatedAt, site.UpdatedAt
	if created.IsZero() {
		created = now
	}
	if updated.IsZero() {
		updated = created
	}
	err := s.write(ctx, func(tx *wtx) error {
		_, err := tx.ExecContext(ctx, `
INSERT INTO sites (name, kind, spec, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, spec = excluded.spec, updated_at = excluded.updated_at`,
			site.Name, site.Kind, site.Spec, toMicros(created), toMicros(updated))
		return err
	})
	if err != nil {
		return fmt.Errorf("put site %q: %w", site.Name, translate(err))
	}
	return nil
}

const siteCols = `name, kind, spec, created_at, updated_at`

func scanSite(sc interface{ Scan(...any) error }) (*store.Site, error) {
	var (
		st               store.Site
		created, updated int64
	)
	if err := sc.Scan(&st.Name, &st.Kind, &st.Spec, &created, &updated); err != nil {
		return nil, err
	}
	st.CreatedAt, st.UpdatedAt = fromMicros(created), fromMicros(updated)
	return &st, nil
}

// SiteGet implements store.Sites.
func (s *Store) SiteGet(ctx context.Context, name string) (*store.Site, error) {
	st, err := scanSite(s.r.QueryRowContext(ctx, `SELECT `+siteCols+` FROM sites WHERE name = ?`, name))
	if err != nil {
		return nil, fmt.Errorf("get site %q: %w", name, translate(err))
	}
	return st, nil
}

// SiteList implements store.Sites.
func (s *Store) SiteList(ctx context.Context) ([]*store.Site, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+siteCols+` FROM sites ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list sites: %w", err)
	}
	defer rows.Close()
	var out []*store.Site
	for rows.Next() {
		st, err := scanSite(rows)
		if err != nil {
			return nil, fmt.Errorf("list sites: %w", err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sites: %w", err)
	}
	return out, nil
}

// ---- semaphores and variables ----

// SemaphoreCreate implements store.Coordination.
func (s *Store) SemaphoreCreate(ctx context.Context, appID int64, name string, value int64, conflict string) error {
	q := `INSERT INTO semaphores (app_id, name, value) VALUES (?, ?, ?)`
	if conflict == store.ConflictOverwrite {
		q += ` ON CONFLICT (app_id, name) DO UPDATE SET value = excluded.value`
	}
	err := s.write(ctx, func(tx *wtx) error {
		_, err := tx.ExecContext(ctx, q, appID, name, value)
		return translate(err)
	})
	if err != nil {
		return fmt.Errorf("create semaphore %q: %w", name, err)
	}
	return nil
}

// SemaphoreGet implements store.Coordination.
func (s *Store) SemaphoreGet(ctx context.Context, appID int64, name string) (int64, error) {
	var v int64
	err := s.r.QueryRowContext(ctx, `SELECT value FROM semaphores WHERE app_id = ? AND name = ?`, appID, name).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("get semaphore %q: %w", name, translate(err))
	}
	return v, nil
}

// SemaphoreList implements store.Coordination.
func (s *Store) SemaphoreList(ctx context.Context, appID int64, prefix string) ([]store.NameValue[int64], error) {
	rows, err := s.r.QueryContext(ctx, `SELECT name, value FROM semaphores
WHERE app_id = ?1 AND name >= ?2 AND substr(name, 1, length(?2)) = ?2 ORDER BY name`, appID, prefix)
	if err != nil {
		return nil, fmt.Errorf("list semaphores: %w", err)
	}
	defer rows.Close()
	var out []store.NameValue[int64]
	for rows.Next() {
		var nv store.NameValue[int64]
		if err := rows.Scan(&nv.Name, &nv.Value); err != nil {
			return nil, fmt.Errorf("list semaphores: %w", err)
		}
		out = append(out, nv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list semaphores: %w", err)
	}
	return out, nil
}

// SemaphoreSet implements store.Coordination.
func (s *Store) SemaphoreSet(ctx context.Context, appID int64, name string, value int64) error {
	err := s.write(ctx, func(tx *wtx) error {
		return execOne(ctx, tx, `UPDATE semaphores SET value = ? WHERE app_id = ? AND name = ?`, value, appID, name)
	})
	if err != nil {
		return fmt.Errorf("set semaphore %q: %w", name, err)
	}
	return nil
}

// SemaphoreAdd implements store.Coordination.
func (s *Store) SemaphoreAdd(ctx context.Context, appID int64, name string, delta int64, autoCreate bool) (int64, error) {
	q := `UPDATE semaphores SET value = value + ?3 WHERE app_id = ?1 AND name = ?2 RETURNING value`
	if autoCreate {
		q = `INSERT INTO semaphores (app_id, name, value) VALUES (?1, ?2, ?3)
ON CONFLICT (app_id, name) DO UPDATE SET value = value + excluded.value RETURNING value`
	}
	var v int64
	err := s.write(ctx, func(tx *wtx) error {
		return translate(tx.QueryRowContext(ctx, q, appID, name, delta).Scan(&v))
	})
	if err != nil {
		return 0, fmt.Errorf("add to semaphore %q: %w", name, err)
	}
	return v, nil
}

// VariableGet implements store.Coordination.
func (s *Store) VariableGet(ctx context.Context, appID int64, name string) (string, error) {
	var v string
	err := s.r.QueryRowContext(ctx, `SELECT value FROM variables WHERE app_id = ? AND name = ?`, appID, name).Scan(&v)
	if err != nil {
		return "", fmt.Errorf("get variable %q: %w", name, translate(err))
	}
	return v, nil
}

// VariableSet implements store.Coordination.
func (s *Store) VariableSet(ctx context.Context, appID int64, name, value string) error {
	err := s.write(ctx, func(tx *wtx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO variables (app_id, name, value) VALUES (?, ?, ?)
ON CONFLICT (app_id, name) DO UPDATE SET value = excluded.value`, appID, name, value)
		return translate(err)
	})
	if err != nil {
		return fmt.Errorf("set variable %q: %w", name, err)
	}
	return nil
}

// VariableList implements store.Coordination.
func (s *Store) VariableList(ctx context.Context, appID int64, prefix string) ([]store.NameValue[string], error) {
	rows, err := s.r.QueryContext(ctx, `SELECT name, value FROM variables
WHERE app_id = ?1 AND name >= ?2 AND substr(name, 1, length(?2)) = ?2 ORDER BY name`, appID, prefix)
	if err != nil {
		return nil, fmt.Errorf("list variables: %w", err)
	}
	defer rows.Close()
	var out []store.NameValue[string]
	for rows.Next() {
		var nv store.NameValue[string]
		if err := rows.Scan(&nv.Name, &nv.Value); err != nil {
			return nil, fmt.Errorf("list variables: %w", err)
		}
		out = append(out, nv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list variables: %w", err)
	}
	return out, nil
}

// ---- tokens ----

// TokenCreate implements store.Tokens.
func (s *Store) TokenCreate(ctx context.Context, t *store.Token) error {
	if t == nil {
		return fmt.Errorf("create token: %w", errNilArg)
	}
	created := t.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	err := s.write(ctx, func(tx *wtx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO tokens (hash, name, role, site, created_at) VALUES (?, ?, ?, ?, ?)`,
			t.Hash, t.Name, t.Role, t.Site, toMicros(created))
		return translate(err)
	})
	if err != nil {
		return fmt.Errorf("create token %q: %w", t.Name, err)
	}
	return nil
}

// TokenLookup implements store.Tokens.
func (s *Store) TokenLookup(ctx context.Context, hash string) (*store.Token, error) {
	var (
		t       store.Token
		created int64
	)
	err := s.r.QueryRowContext(ctx, `SELECT hash, name, role, site, created_at FROM tokens WHERE hash = ?`, hash).
		Scan(&t.Hash, &t.Name, &t.Role, &t.Site, &created)
	if err != nil {
		return nil, fmt.Errorf("look up token: %w", translate(err))
	}
	t.CreatedAt = fromMicros(created)
	return &t, nil
}

// TokenCount implements store.Tokens.
func (s *Store) TokenCount(ctx context.Context) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM tokens`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count tokens: %w", err)
	}
	return n, nil
}
