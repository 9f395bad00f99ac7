// Package storeopen opens a store.Store from a database address: a
// postgres:// or postgresql:// URL selects PostgreSQL, anything else
// (sqlite:PATH, sqlite://PATH or a plain file path) the embedded SQLite.
package storeopen

import (
	"context"
	"fmt"
	"strings"

	"github.com/scalebox-hpc/scalebox/store"
	"github.com/scalebox-hpc/scalebox/store/postgres"
	"github.com/scalebox-hpc/scalebox/store/sqlite"
)

// Open opens the store at addr.
func Open(ctx context.Context, addr string) (store.Store, error) {
	switch {
	case strings.HasPrefix(addr, "postgres://"), strings.HasPrefix(addr, "postgresql://"):
		s, err := postgres.Open(ctx, addr)
		if err != nil {
			return nil, fmt.Errorf("open postgres store: %w", err)
		}
		return s, nil
	default:
		path := strings.TrimPrefix(strings.TrimPrefix(addr, "sqlite://"), "sqlite:")
		if path == "" {
			return nil, fmt.Errorf("empty sqlite path in %q", addr)
		}
		s, err := sqlite.Open(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
		}
		return s, nil
	}
}

// Redact hides a password in a database URL for logs.
func Redact(addr string) string {
	at := strings.Index(addr, "@")
	scheme := strings.Index(addr, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return addr
	}
	cred := addr[scheme+3 : at]
	if user, _, ok := strings.Cut(cred, ":"); ok {
		return addr[:scheme+3] + user + ":***" + addr[at:]
	}
	return addr
}
