package sqlite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/scalebox-hpc/scalebox/store"
)

// AppCreate implements store.Apps.
func (s *Store) AppCreate(ctx context.Context, p store.AppCreateParams) (*store.App, error) {
	now := nowMicros(p.Now)
	status := p.Status
	if status == "" {
		status = store.AppInitial
	}
	app := &store.App{
		Name:      p.Name,
		Status:    status,
		Spec:      p.Spec,
		CreatedAt: fromMicros(now),
		UpdatedAt: fromMicros(now),
	}
	err := s.write(ctx, func(tx *wtx) error {
		err := tx.QueryRowContext(ctx,
			`INSERT INTO apps (name, status, spec, result, created_at, updated_at) VALUES (?, ?, ?, '', ?, ?) RETURNING id`,
			p.Name, status, p.Spec, now, now).Scan(&app.ID)
		if err != nil {
			return translate(err)
		}
		for _, m := range p.Modules {
			mod := &store.Module{AppID: app.ID, Name: m.Name, Site: m.Site, Spec: m.Spec}
			err := tx.QueryRowContext(ctx,
				`INSERT INTO modules (app_id, name, site, spec) VALUES (?, ?, ?, ?) RETURNING id`,
				app.ID, m.Name, m.Site, m.Spec).Scan(&mod.ID)
			if err != nil {
				return fmt.Errorf("module %q: %w", m.Name, translate(err))
			}
			app.Modules = append(app.Modules, mod)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create app %q: %w", p.Name, err)
	}
	return app, nil
}

const appCols = `id, name, status, spec, result, created_at, updated_at`

func scanApp(sc interface{ Scan(...any) error }) (*store.App, error) {
	var (
		a                store.App
		created, updated int64
	)
	if err := sc.Scan(&a.ID, &a.Name, &a.Status, &a.Spec, &a.Result, &created, &updated); err != nil {
		return nil, err
	}
	a.CreatedAt, a.UpdatedAt = fromMicros(created), fromMicros(updated)
	return &a, nil
}

// modules loads the modules of the given apps (all apps if ids is nil).
func (s *Store) modules(ctx context.Context, appID int64) (map[int64][]*store.Module, error) {
	q := `SELECT id, app_id, name, site, spec FROM modules ORDER BY app_id, id`
	var args []any
	if appID != 0 {
		q = `SELECT id, app_id, name, site, spec FROM modules WHERE app_id = ? ORDER BY id`
		args = append(args, appID)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64][]*store.Module{}
	for rows.Next() {
		var m store.Module
		if err := rows.Scan(&m.ID, &m.AppID, &m.Name, &m.Site, &m.Spec); err != nil {
			return nil, err
		}
		out[m.AppID] = append(out[m.AppID], &m)
	}
	return out, rows.Err()
}

// AppGet implements store.Apps.
func (s *Store) AppGet(ctx context.Context, id int64) (*store.App, error) {
	app, err := scanApp(s.r.QueryRowContext(ctx, `SELECT `+appCols+` FROM apps WHERE id = ?`, id))
	if err != nil {
		return nil, fmt.Errorf("get app %d: %w", id, translate(err))
	}
	mods, err := s.modules(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get modules of app %d: %w", id, err)
	}
	app.Modules = mods[id]
	return app, nil
}

// AppList implements store.Apps.
func (s *Store) AppList(ctx context.Context) ([]*store.App, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+appCols+` FROM apps ORDER BY id DESC`)
	if err != nil {
		return nil, fmt.Errorf("list apps: %w", err)
	}
	defer rows.Close()
	var apps []*store.App
	for rows.Next() {
		app, err := scanApp(rows)
		if err != nil {
			return nil, fmt.Errorf("list apps: %w", err)
		}
		apps = append(apps, app)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list apps: %w", err)
	}
	if len(apps) == 0 {
		return apps, nil
	}
	mods, err := s.modules(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("list modules: %w", err)
	}
	for _, a := range apps {
		a.Modules = mods[a.ID]
	}
	return apps, nil
}

// AppSetStatus implements store.Apps.
func (s *Store) AppSetStatus(ctx context.Context, id int64, status string, result *string) error {
	var res any
	if result != nil {
		res = *result
	}
	err := s.write(ctx, func(tx *wtx) error {
		r, err := tx.ExecContext(ctx,
			`UPDATE apps SET status = ?, result = COALESCE(?, result), updated_at = ? WHERE id = ?`,
			status, res, time.Now().UnixMicro(), id)
		if err != nil {
			return err
		}
		if n, err := r.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set status of app %d: %w", id, err)
	}
	return nil
}

// AppTaskCounts implements store.Apps.
func (s *Store) AppTaskCounts(ctx context.Context, appID int64) ([]store.StatusCount, error) {
	rows, err := s.r.QueryContext(ctx, `
SELECT module_id, status, count(*) FROM tasks
WHERE module_id IN (SELECT id FROM modules WHERE app_id = ?)
GROUP BY module_id, status
ORDER BY module_id, status`, appID)
	if err != nil {
		return nil, fmt.Errorf("count tasks of app %d: %w", appID, err)
	}
	defer rows.Close()
	var out []store.StatusCount
	for rows.Next() {
		var c store.StatusCount
		if err := rows.Scan(&c.ModuleID, &c.Status, &c.Count); err != nil {
			return nil, fmt.Errorf("count tasks of app %d: %w", appID, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count tasks of app %d: %w", appID, err)
	}
	return out, nil
}

// errNilArg reports a nil pointer argument.
var errNilArg = errors.New("nil argument")
