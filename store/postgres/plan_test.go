package postgres

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/internal/pgtest"
	"github.com/scalebox-hpc/scalebox/store"
)

// TestLeasePlanIsIndexed guards against the plan flip this statement had:
// with a generic plan and statistics saying every task is READY, the
// planner walked the primary key and hash-joined the whole table. The
// lease must scan tasks_ready and update by primary key, whatever the
// statistics.
func TestLeasePlanIsIndexed(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.DSN(t))
	require.NoError(t, err)
	defer s.Close()
	app, err := s.AppCreate(ctx, store.AppCreateParams{Name: "a", Modules: []store.ModuleParams{{Name: "m"}}})
	require.NoError(t, err)
	in := make([]store.TaskInput, 20000)
	for i := range in {
		in[i] = store.TaskInput{ModuleID: app.Modules[0].ID, Body: strings.Repeat("b", 20) + string(rune('a'+i%26)) + itoa(i), Status: store.StatusReady}
	}
	_, err = s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Tasks: in})
	require.NoError(t, err)

	conn, err := s.pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	for _, q := range []string{
		"ANALYZE tasks",
		"SET plan_cache_mode = force_generic_plan",
		"PREPARE lease_plan(bigint[], bigint[], text[], bigint, timestamptz, timestamptz) AS " + leaseSQL,
	} {
		_, err := conn.Exec(ctx, q)
		require.NoError(t, err, q)
	}
	rows, err := conn.Query(ctx, "EXPLAIN EXECUTE lease_plan('{1}', '{500}', '{\"\"}', 1, now(), now())")
	require.NoError(t, err)
	var plan strings.Builder
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan.WriteString(line + "\n")
	}
	require.NoError(t, rows.Err())
	require.Contains(t, plan.String(), "Index Scan using tasks_ready")
	require.Contains(t, plan.String(), "Index Scan using tasks_pkey on tasks t")
	require.NotContains(t, plan.String(), "Seq Scan on tasks", plan.String())
	require.NotContains(t, plan.String(), "Hash Join", plan.String())
	_, err = conn.Exec(ctx, "DEALLOCATE lease_plan; RESET plan_cache_mode")
	require.NoError(t, err)
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			return string(b[n:])
		}
	}
}
