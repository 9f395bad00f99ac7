package sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPragmas checks the durability settings each pool runs with.
func TestPragmas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "scalebox.db"))
	require.NoError(t, err)
	defer s.Close()

	var mode string
	var sync, fk, busy, queryOnly int
	require.NoError(t, s.wc.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode))
	require.Equal(t, "wal", mode)
	require.NoError(t, s.wc.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync))
	require.Equal(t, 2, sync, "synchronous=FULL")
	require.NoError(t, s.wc.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk))
	require.Equal(t, 1, fk)
	require.NoError(t, s.wc.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy))
	require.Equal(t, int(busyTimeout.Milliseconds()), busy)

	require.NoError(t, s.r.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode))
	require.Equal(t, "wal", mode)
	require.NoError(t, s.r.QueryRowContext(ctx, `PRAGMA query_only`).Scan(&queryOnly))
	require.Equal(t, 1, queryOnly)
	_, err = s.r.ExecContext(ctx, `INSERT INTO tokens (hash, role) VALUES ('x', 'admin')`)
	require.Error(t, err, "the read pool cannot write")
}

func TestChunkSizes(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 3, 4, 5, 500, 4095, 4096, 5000, 12345} {
		for _, maxRows := range []int{1, 10, 1092, 4095, 32766} {
			total := 0
			for _, c := range chunkSizes(n, maxRows) {
				require.LessOrEqual(t, c, maxRows)
				total += c
			}
			require.Equal(t, n, total, "n=%d max=%d", n, maxRows)
		}
	}
	require.Equal(t, []int{256, 64, 64, 64, 16, 16, 16, 4}, chunkSizes(500, 1092))
}

// TestNewerSchemaRefused checks that a binary does not open a database
// migrated by a newer one.
func TestNewerSchemaRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "scalebox.db")
	s, err := Open(ctx, path)
	require.NoError(t, err)
	_, err = s.wc.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)`)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	_, err = Open(ctx, path)
	require.ErrorContains(t, err, "newer")
}
