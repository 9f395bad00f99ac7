package pgtest

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { Main(m) }

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestDSNFreshDatabases(t *testing.T) {
	ctx := context.Background()
	a, b := DSN(t), DSN(t)
	require.NotEqual(t, a, b)

	ca, cb := connect(t, a), connect(t, b)
	_, err := ca.Exec(ctx, "CREATE TABLE only_in_a (x int)")
	require.NoError(t, err)
	var n int
	require.NoError(t, cb.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'").Scan(&n))
	require.Zero(t, n, "databases are isolated")

	var fsync, version string
	require.NoError(t, ca.QueryRow(ctx, "SHOW server_version").Scan(&version))
	require.NotEmpty(t, version)
	if current != nil && current.priv != nil {
		require.NoError(t, ca.QueryRow(ctx, "SHOW fsync").Scan(&fsync))
		require.Equal(t, "off", fsync)
	}
}

func TestDSNDroppedAfterTest(t *testing.T) {
	ctx := context.Background()
	var name string
	t.Run("inner", func(t *testing.T) {
		conn := connect(t, DSN(t))
		require.NoError(t, conn.QueryRow(ctx, "SELECT current_database()").Scan(&name))
	})
	require.NotEmpty(t, name)
	srv, err := get()
	require.NoError(t, err)
	var n int
	require.NoError(t, srv.admin.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n))
	require.Zero(t, n, "database %s is dropped when its test ends", name)
}

func TestDSNParallel(t *testing.T) {
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			conn := connect(t, DSN(t))
			var one int
			require.NoError(t, conn.QueryRow(context.Background(), "SELECT 1").Scan(&one))
			require.Equal(t, 1, one)
		})
	}
}

func TestWithDatabase(t *testing.T) {
	require.Equal(t, "postgres://u:p@h:5/db2?sslmode=disable", withDatabase("postgres://u:p@h:5/db1?sslmode=disable", "db2"))
	require.Equal(t, "postgresql://h/x", withDatabase("postgresql://h", "x"))
	require.Equal(t, "host=h dbname=a dbname=b", withDatabase("host=h dbname=a", "b"))
}

func TestSanitize(t *testing.T) {
	require.Equal(t, "teststore_apps_createget", sanitize("TestStore/Apps/CreateGet"))
	require.Len(t, sanitize(string(make([]byte, 100))), 40)
}
