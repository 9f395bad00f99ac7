package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/scalebox-hpc/scalebox/store"
)

// timeNow is the clock for methods without a Now parameter.
var timeNow = time.Now

// ---- pilots ----

const pilotCols = `id, site, host, ip, cores, memory_mb, gpus, slots, job_id, deadline, status, version, registered_at, last_seen`

func scanPilot(row pgx.Row) (*store.Pilot, error) {
	var p store.Pilot
	var deadline, registered, seen pgtype.Timestamptz
	if err := row.Scan(&p.ID, &p.Site, &p.Host, &p.IP, &p.Cores, &p.MemoryMB, &p.GPUs, &p.Slots, &p.JobID,
		&deadline, &p.Status, &p.Version, &registered, &seen); err != nil {
		return nil, err
	}
	p.Deadline, p.RegisteredAt, p.LastSeen = tv(deadline), tv(registered), tv(seen)
	return &p, nil
}

func collectPilots(rows pgx.Rows) ([]*store.Pilot, error) {
	defer rows.Close()
	var out []*store.Pilot
	for rows.Next() {
		p, err := scanPilot(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// PilotRegister inserts a pilot, ACTIVE and last seen at its registration
// time (p.RegisteredAt, or now when zero).
func (s *Store) PilotRegister(ctx context.Context, p *store.Pilot) (*store.Pilot, error) {
	if p == nil {
		return nil, errors.New("register pilot: nil pilot")
	}
	if err := errors.Join(checkInt32("cores", p.Cores), checkInt32("gpus", p.GPUs)); err != nil {
		return nil, fmt.Errorf("register pilot: %w", err)
	}
	t := now(p.RegisteredAt)
	slots := p.Slots
	if slots == "" {
		slots = "{}"
	}
	out, err := scanPilot(s.pool.QueryRow(ctx, `
		INSERT INTO pilots (site, host, ip, cores, memory_mb, gpus, slots, job_id, deadline, status, version, registered_at, last_seen)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
		RETURNING `+pilotCols,
		p.Site, p.Host, p.IP, p.Cores, p.MemoryMB, p.GPUs, slots, p.JobID, nt(p.Deadline), store.PilotActive, p.Version, t))
	if err != nil {
		return nil, dbErr("register pilot", err)
	}
	return out, nil
}

// PilotGet returns one pilot.
func (s *Store) PilotGet(ctx context.Context, id int64) (*store.Pilot, error) {
	p, err := scanPilot(s.pool.QueryRow(ctx, `SELECT `+pilotCols+` FROM pilots WHERE id = $1`, id))
	if err != nil {
		return nil, dbErr(fmt.Sprintf("get pilot %d", id), err)
	}
	return p, nil
}

// PilotList returns pilots, newest first; empty filter fields match all.
func (s *Store) PilotList(ctx context.Context, f store.PilotFilter) ([]*store.Pilot, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+pilotCols+` FROM pilots
		WHERE ($1 = '' OR site = $1) AND ($2 = '' OR status = $2) ORDER BY id DESC`, f.Site, f.Status)
	if err != nil {
		return nil, dbErr("list pilots", err)
	}
	ps, err := collectPilots(rows)
	return ps, dbErr("list pilots", err)
}

// PilotSetStatus changes a pilot's status.
func (s *Store) PilotSetStatus(ctx context.Context, id int64, status string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE pilots SET status = $2 WHERE id = $1`, id, status)
	if err != nil {
		return dbErr(fmt.Sprintf("set status of pilot %d", id), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("set status of pilot %d: %w", id, store.ErrNotFound)
	}
	return nil
}

// PilotMarkLost marks ACTIVE and DRAINING pilots last seen before `before`
// as LOST and returns them, by id.
func (s *Store) PilotMarkLost(ctx context.Context, before time.Time) ([]*store.Pilot, error) {
	rows, err := s.pool.Query(ctx, `
		WITH lost AS (
			UPDATE pilots SET status = $1
			WHERE status IN ($2, $3) AND last_seen < $4
			RETURNING `+pilotCols+`)
		SELECT * FROM lost ORDER BY id`,
		store.PilotLost, store.PilotActive, store.PilotDraining, ts(before))
	if err != nil {
		return nil, dbErr("mark lost pilots", err)
	}
	ps, err := collectPilots(rows)
	return ps, dbErr("mark lost pilots", err)
}

// ---- sites ----

// SitePut inserts or replaces a site by name. A replaced site keeps its
// CreatedAt. Zero times mean now.
func (s *Store) SitePut(ctx context.Context, site *store.Site) error {
	if site == nil {
		return errors.New("put site: nil site")
	}
	updated := now(site.UpdatedAt)
	created := updated
	if !site.CreatedAt.IsZero() {
		created = ts(site.CreatedAt)
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO sites (name, kind, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, spec = excluded.spec, updated_at = excluded.updated_at`,
		site.Name, site.Kind, site.Spec, created, updated)
	return dbErr(fmt.Sprintf("put site %q", site.Name), err)
}

func scanSite(row pgx.Row) (*store.Site, error) {
	var s store.Site
	var created, updated pgtype.Timestamptz
	if err := row.Scan(&s.Name, &s.Kind, &s.Spec, &created, &updated); err != nil {
		return nil, err
	}
	s.CreatedAt, s.UpdatedAt = tv(created), tv(updated)
	return &s, nil
}

// SiteGet returns one site.
func (s *Store) SiteGet(ctx context.Context, name string) (*store.Site, error) {
	site, err := scanSite(s.pool.QueryRow(ctx, `SELECT name, kind, spec, created_at, updated_at FROM sites WHERE name = $1`, name))
	if err != nil {
		return nil, dbErr(fmt.Sprintf("get site %q", name), err)
	}
	return site, nil
}

// SiteList returns all sites by name.
func (s *Store) SiteList(ctx context.Context) ([]*store.Site, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, kind, spec, created_at, updated_at FROM sites ORDER BY name COLLATE "C"`)
	if err != nil {
		return nil, dbErr("list sites", err)
	}
	defer rows.Close()
	var out []*store.Site
	for rows.Next() {
		site, err := scanSite(rows)
		if err != nil {
			return nil, dbErr("list sites", err)
		}
		out = append(out, site)
	}
	return out, dbErr("list sites", rows.Err())
}

// ---- semaphores ----

// SemaphoreCreate creates a semaphore; with ConflictOverwrite an existing
// one is set to value, otherwise it is ErrConflict.
func (s *Store) SemaphoreCreate(ctx context.Context, appID int64, name string, value int64, conflict string) error {
	op := fmt.Sprintf("create semaphore %q of app %d", name, appID)
	if strings.EqualFold(conflict, store.ConflictOverwrite) {
		_, err := s.pool.Exec(ctx, `INSERT INTO semaphores (app_id, name, value) VALUES ($1, $2, $3)
			ON CONFLICT (app_id, name) DO UPDATE SET value = excluded.value`, appID, name, value)
		return dbErr(op, err)
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO semaphores (app_id, name, value) VALUES ($1, $2, $3)
		ON CONFLICT (app_id, name) DO NOTHING`, appID, name, value)
	if err != nil {
		return dbErr(op, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", op, store.ErrConflict)
	}
	return nil
}

// SemaphoreGet returns a semaphore's value.
func (s *Store) SemaphoreGet(ctx context.Context, appID int64, name string) (int64, error) {
	var v int64
	err := s.pool.QueryRow(ctx, `SELECT value FROM semaphores WHERE app_id = $1 AND name = $2`, appID, name).Scan(&v)
	return v, dbErr(fmt.Sprintf("get semaphore %q of app %d", name, appID), err)
}

// SemaphoreList returns an app's semaphores whose name starts with prefix
// (literally, case-sensitively), by name.
func (s *Store) SemaphoreList(ctx context.Context, appID int64, prefix string) ([]store.NameValue[int64], error) {
	op := fmt.Sprintf("list semaphores of app %d", appID)
	rows, err := s.pool.Query(ctx, `SELECT name, value FROM semaphores
		WHERE app_id = $1 AND starts_with(name, $2) ORDER BY name COLLATE "C"`, appID, prefix)
	if err != nil {
		return nil, dbErr(op, err)
	}
	defer rows.Close()
	var out []store.NameValue[int64]
	for rows.Next() {
		var nv store.NameValue[int64]
		if err := rows.Scan(&nv.Name, &nv.Value); err != nil {
			return nil, dbErr(op, err)
		}
		out = append(out, nv)
	}
	return out, dbErr(op, rows.Err())
}

// SemaphoreSet sets an existing semaphore.
func (s *Store) SemaphoreSet(ctx context.Context, appID int64, name string, value int64) error {
	op := fmt.Sprintf("set semaphore %q of app %d", name, appID)
	tag, err := s.pool.Exec(ctx, `UPDATE semaphores SET value = $3 WHERE app_id = $1 AND name = $2`, appID, name, value)
	if err != nil {
		return dbErr(op, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	return nil
}

// SemaphoreAdd adds delta atomically and returns the new value; with
// autoCreate a missing semaphore is created at delta.
func (s *Store) SemaphoreAdd(ctx context.Context, appID int64, name string, delta int64, autoCreate bool) (int64, error) {
	op := fmt.Sprintf("add to semaphore %q of app %d", name, appID)
	var v int64
	var err error
	if autoCreate {
		err = s.pool.QueryRow(ctx, `INSERT INTO semaphores (app_id, name, value) VALUES ($1, $2, $3)
			ON CONFLICT (app_id, name) DO UPDATE SET value = semaphores.value + excluded.value
			RETURNING value`, appID, name, delta).Scan(&v)
	} else {
		err = s.pool.QueryRow(ctx, `UPDATE semaphores SET value = value + $3 WHERE app_id = $1 AND name = $2
			RETURNING value`, appID, name, delta).Scan(&v)
	}
	return v, dbErr(op, err)
}

// ---- variables ----

// VariableGet returns a variable's value.
func (s *Store) VariableGet(ctx context.Context, appID int64, name string) (string, error) {
	var v string
	err := s.pool.QueryRow(ctx, `SELECT value FROM variables WHERE app_id = $1 AND name = $2`, appID, name).Scan(&v)
	return v, dbErr(fmt.Sprintf("get variable %q of app %d", name, appID), err)
}

// VariableSet creates or replaces a variable.
func (s *Store) VariableSet(ctx context.Context, appID int64, name, value string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO variables (app_id, name, value) VALUES ($1, $2, $3)
		ON CONFLICT (app_id, name) DO UPDATE SET value = excluded.value`, appID, name, value)
	return dbErr(fmt.Sprintf("set variable %q of app %d", name, appID), err)
}

// VariableList returns an app's variables whose name starts with prefix, by
// name.
func (s *Store) VariableList(ctx context.Context, appID int64, prefix string) ([]store.NameValue[string], error) {
	op := fmt.Sprintf("list variables of app %d", appID)
	rows, err := s.pool.Query(ctx, `SELECT name, value FROM variables
		WHERE app_id = $1 AND starts_with(name, $2) ORDER BY name COLLATE "C"`, appID, prefix)
	if err != nil {
		return nil, dbErr(op, err)
	}
	defer rows.Close()
	var out []store.NameValue[string]
	for rows.Next() {
		var nv store.NameValue[string]
		if err := rows.Scan(&nv.Name, &nv.Value); err != nil {
			return nil, dbErr(op, err)
		}
		out = append(out, nv)
	}
	return out, dbErr(op, rows.Err())
}

// ---- tokens ----

// TokenCreate stores a token; ErrConflict if its hash exists.
func (s *Store) TokenCreate(ctx context.Context, t *store.Token) error {
	if t == nil {
		return errors.New("create token: nil token")
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO tokens (hash, name, role, site, created_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (hash) DO NOTHING`, t.Hash, t.Name, t.Role, t.Site, now(t.CreatedAt))
	if err != nil {
		return dbErr(fmt.Sprintf("create token %q", t.Name), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("create token %q: %w", t.Name, store.ErrConflict)
	}
	return nil
}

// TokenLookup finds a token by its hash.
func (s *Store) TokenLookup(ctx context.Context, hash string) (*store.Token, error) {
	var t store.Token
	var created pgtype.Timestamptz
	err := s.pool.QueryRow(ctx, `SELECT hash, name, role, site, created_at FROM tokens WHERE hash = $1`, hash).
		Scan(&t.Hash, &t.Name, &t.Role, &t.Site, &created)
	if err != nil {
		return nil, dbErr("look up token", err)
	}
	t.CreatedAt = tv(created)
	return &t, nil
}

// TokenCount returns the number of stored tokens.
func (s *Store) TokenCount(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM tokens`).Scan(&n)
	return n, dbErr("count tokens", err)
}
