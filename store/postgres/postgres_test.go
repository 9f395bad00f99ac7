package postgres_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/internal/pgtest"
	"github.com/scalebox-hpc/scalebox/store"
	"github.com/scalebox-hpc/scalebox/store/postgres"
	"github.com/scalebox-hpc/scalebox/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// open returns a store on a fresh database of the shared test server.
func open(tb testing.TB) *postgres.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), pgtest.DSN(tb))
	require.NoError(tb, err)
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
}
