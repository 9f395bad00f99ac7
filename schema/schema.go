// Package schema holds Scalebox's published formats: the SQL migrations of
// both stores, the JSON Schema of app.yaml and the OpenAPI document of the
// broker's REST API, embedded so that binaries carry them.
package schema

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

//go:embed sqlite/*.sql postgres/*.sql
var migrations embed.FS

// Migration is one numbered SQL script.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the up-migrations of a dialect ("sqlite" or
// "postgres"), ordered by version. Files are named NNN_name.up.sql.
func Migrations(dialect string) ([]Migration, error) {
	entries, err := fs.ReadDir(migrations, dialect)
	if err != nil {
		return nil, fmt.Errorf("read migrations of %q: %w", dialect, err)
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".up.sql") {
			continue
		}
		num, rest, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s/%s: name must be NNN_name.up.sql", dialect, name)
		}
		b, err := migrations.ReadFile(path.Join(dialect, name))
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: strings.TrimSuffix(rest, ".up.sql"), SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("migrations of %s: version %d repeats", dialect, out[i].Version)
		}
	}
	return out, nil
}

// Pending returns the migrations of all that are not in applied, in order.
// A database with an applied version newer than every migration here was
// migrated by a newer program: that is an error, not something to ignore.
func Pending(all []Migration, applied []int) ([]Migration, error) {
	done := make(map[int]bool, len(applied))
	latest := 0
	for _, v := range applied {
		done[v] = true
		latest = max(latest, v)
	}
	if len(all) > 0 && latest > all[len(all)-1].Version {
		return nil, fmt.Errorf("database schema version %d is newer than this program's %d", latest, all[len(all)-1].Version)
	}
	var out []Migration
	for _, m := range all {
		if !done[m.Version] {
			out = append(out, m)
		}
	}
	return out, nil
}
