package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/scalebox-hpc/scalebox/store"
)

// AppCreate inserts an app and its modules in one transaction.
func (s *Store) AppCreate(ctx context.Context, p store.AppCreateParams) (*store.App, error) {
	seen := make(map[string]bool, len(p.Modules))
	for _, m := range p.Modules {
		if seen[m.Name] {
			return nil, fmt.Errorf("create app %q: module %q: %w", p.Name, m.Name, store.ErrConflict)
		}
		seen[m.Name] = true
	}
	status := p.Status
	if status == "" {
		status = store.AppInitial
	}
	t := now(p.Now)
	app := &store.App{Name: p.Name, Status: status, Spec: p.Spec, CreatedAt: t, UpdatedAt: t}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		app.Modules = nil
		if err := tx.QueryRow(ctx,
			`INSERT INTO apps (name, status, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) RETURNING id`,
			p.Name, status, p.Spec, t).Scan(&app.ID); err != nil {
			return err
		}
		if len(p.Modules) == 0 {
			return nil
		}
		names := make([]string, len(p.Modules))
		sites := make([]string, len(p.Modules))
		specs := make([][]byte, len(p.Modules))
		for i, m := range p.Modules {
			names[i], sites[i], specs[i] = m.Name, m.Site, m.Spec
		}
		rows, err := tx.Query(ctx, `
			INSERT INTO modules (app_id, name, site, spec)
			SELECT $1, u.name, u.site, u.spec FROM unnest($2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS u(name, site, spec, ord)
			ORDER BY u.ord
			RETURNING id, name`, app.ID, names, sites, specs)
		if err != nil {
			return err
		}
		ids := make(map[string]int64, len(names))
		for rows.Next() {
			var id int64
			var name string
			if err := rows.Scan(&id, &name); err != nil {
				rows.Close()
				return err
			}
			ids[name] = id
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, m := range p.Modules {
			app.Modules = append(app.Modules, &store.Module{ID: ids[m.Name], AppID: app.ID, Name: m.Name, Site: m.Site, Spec: m.Spec})
		}
		return nil
	})
	if err != nil {
		return nil, dbErr(fmt.Sprintf("create app %q", p.Name), err)
	}
	return app, nil
}

const appCols = `id, name, status, spec, result, created_at, updated_at`

func scanApp(row pgx.Row) (*store.App, error) {
	var a store.App
	var created, updated pgtype.Timestamptz
	if err := row.Scan(&a.ID, &a.Name, &a.Status, &a.Spec, &a.Result, &created, &updated); err != nil {
		return nil, err
	}
	a.CreatedAt, a.UpdatedAt = tv(created), tv(updated)
	return &a, nil
}

// AppGet returns an app with its modules.
func (s *Store) AppGet(ctx context.Context, id int64) (*store.App, error) {
	app, err := scanApp(s.pool.QueryRow(ctx, `SELECT `+appCols+` FROM apps WHERE id = $1`, id))
	if err != nil {
		return nil, dbErr(fmt.Sprintf("get app %d", id), err)
	}
	if err := s.attachModules(ctx, []*store.App{app}); err != nil {
		return nil, err
	}
	return app, nil
}

// AppList returns all apps, newest first, with their modules.
func (s *Store) AppList(ctx context.Context) ([]*store.App, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+appCols+` FROM apps ORDER BY id DESC`)
	if err != nil {
		return nil, dbErr("list apps", err)
	}
	var apps []*store.App
	for rows.Next() {
		a, err := scanApp(rows)
		if err != nil {
			rows.Close()
			return nil, dbErr("list apps", err)
		}
		apps = append(apps, a)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("list apps", err)
	}
	if err := s.attachModules(ctx, apps); err != nil {
		return nil, err
	}
	return apps, nil
}

// attachModules loads the modules of apps, ordered by id.
func (s *Store) attachModules(ctx context.Context, apps []*store.App) error {
	if len(apps) == 0 {
		return nil
	}
	byID := make(map[int64]*store.App, len(apps))
	ids := make([]int64, len(apps))
	for i, a := range apps {
		byID[a.ID] = a
		ids[i] = a.ID
	}
	rows, err := s.pool.Query(ctx, `SELECT id, app_id, name, site, spec FROM modules WHERE app_id = ANY($1) ORDER BY id`, ids)
	if err != nil {
		return dbErr("list modules", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m store.Module
		if err := rows.Scan(&m.ID, &m.AppID, &m.Name, &m.Site, &m.Spec); err != nil {
			return dbErr("list modules", err)
		}
		if a := byID[m.AppID]; a != nil {
			a.Modules = append(a.Modules, &m)
		}
	}
	return dbErr("list modules", rows.Err())
}

// AppSetStatus changes an app's status and, when result is non-nil, its
// result text.
func (s *Store) AppSetStatus(ctx context.Context, id int64, status string, result *string) error {
	tag, err := s.pool.Exec(ctx,
		`UPDATE apps SET status = $2, result = COALESCE($3, result), updated_at = $4 WHERE id = $1`,
		id, status, result, ts(timeNow()))
	if err != nil {
		return dbErr(fmt.Sprintf("set status of app %d", id), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("set status of app %d: %w", id, store.ErrNotFound)
	}
	return nil
}

// AppTaskCounts returns the number of tasks per module and status.
func (s *Store) AppTaskCounts(ctx context.Context, appID int64) ([]store.StatusCount, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT t.module_id, t.status, count(*)
		FROM modules m JOIN tasks t ON t.module_id = m.id
		WHERE m.app_id = $1 AND t.app_id = $1
		GROUP BY t.module_id, t.status
		ORDER BY t.module_id, t.status`, appID)
	if err != nil {
		return nil, dbErr(fmt.Sprintf("count tasks of app %d", appID), err)
	}
	defer rows.Close()
	var out []store.StatusCount
	for rows.Next() {
		var c store.StatusCount
		if err := rows.Scan(&c.ModuleID, &c.Status, &c.Count); err != nil {
			return nil, dbErr(fmt.Sprintf("count tasks of app %d", appID), err)
		}
		out = append(out, c)
	}
	return out, dbErr(fmt.Sprintf("count tasks of app %d", appID), rows.Err())
}
