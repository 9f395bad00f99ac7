package postgres

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/scalebox-hpc/scalebox/store"
)

// leaseSQL leases READY tasks. For every requested module and every host
// name (the empty name: unbound tasks) it locks up to n of the oldest READY rows with
// SKIP LOCKED, each scan an ordered range of the tasks_ready index; of
// those it takes the n oldest per module and updates them. Rows locked but
// not taken (a pilot with tasks bound to its host and unbound ones) stay
// locked only until this statement's transaction ends.
//
// The plan must not depend on statistics (a queue's status distribution
// changes faster than ANALYZE runs, and pgx's cached statements get generic
// plans): to_host is bounded by a range instead of "=" and the scan is
// ordered by (to_host, id), an order only tasks_ready delivers, so the
// primary key (id order, but every task) is never walked instead; and the
// final UPDATE finds its rows with id = ANY(array), always a primary-key
// lookup, never a hash join over the table.
const leaseSQL = `
WITH req AS (
	SELECT * FROM unnest($1::bigint[], $2::bigint[]) AS r(module_id, n)
), hosts AS (
	SELECT DISTINCT h FROM unnest($3::text[]) AS h
), cand AS (
	SELECT req.module_id, req.n, c.id
	FROM req CROSS JOIN hosts CROSS JOIN LATERAL (
		SELECT r.id FROM tasks r
		WHERE r.status = -1 AND r.module_id = req.module_id AND r.to_host >= hosts.h AND r.to_host <= hosts.h
		ORDER BY r.to_host, r.id
		LIMIT req.n
		FOR UPDATE SKIP LOCKED
	) c
), pick AS (
	SELECT id FROM (
		SELECT id, n, row_number() OVER (PARTITION BY module_id ORDER BY id) AS rn FROM cand
	) x WHERE rn <= n
)
UPDATE tasks t SET status = -2, attempt = t.attempt + 1, pilot_id = $4, leased_at = $5, lease_expires = $6, updated_at = $5
WHERE t.id = ANY (ARRAY(SELECT id FROM pick))
RETURNING t.id, t.app_id, t.module_id, t.body, t.headers, t.attempt, t.created_at`

// TaskLease hands READY tasks of the requested modules to one pilot.
func (s *Store) TaskLease(ctx context.Context, p store.TaskLeaseParams) ([]*store.Lease, error) {
	// One entry per module; repeated modules add up.
	want := map[int64]int64{}
	var mods []int64
	for _, m := range p.Modules {
		if m.Max <= 0 {
			continue
		}
		if _, ok := want[m.ModuleID]; !ok {
			mods = append(mods, m.ModuleID)
		}
		// Capped before and after adding, so the sum cannot overflow.
		want[m.ModuleID] = min(want[m.ModuleID]+min(int64(m.Max), math.MaxInt32), math.MaxInt32)
	}
	if len(mods) == 0 {
		return nil, nil
	}
	ns := make([]int64, len(mods))
	for i, m := range mods {
		ns[i] = want[m]
	}
	hosts := []string{""}
	for _, h := range p.Hosts {
		if h != "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	t := now(p.Now)
	expires := ts(t.Add(p.TTL))
	rows, err := s.pool.Query(ctx, leaseSQL, mods, ns, hosts, p.PilotID, t, expires)
	if err != nil {
		return nil, dbErr(fmt.Sprintf("lease tasks to pilot %d", p.PilotID), err)
	}
	defer rows.Close()
	var out []*store.Lease
	for rows.Next() {
		l := &store.Lease{LeasedAt: t, Expires: expires}
		var created pgtype.Timestamptz
		if err := rows.Scan(&l.TaskID, &l.AppID, &l.ModuleID, &l.Body, &l.Headers, &l.Attempt, &created); err != nil {
			return nil, dbErr(fmt.Sprintf("lease tasks to pilot %d", p.PilotID), err)
		}
		l.CreatedAt = tv(created)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr(fmt.Sprintf("lease tasks to pilot %d", p.PilotID), err)
	}
	slices.SortFunc(out, func(a, b *store.Lease) int { return cmp.Compare(a.TaskID, b.TaskID) })
	return out, nil
}

// attemptPairs splits attempts into id and attempt arrays.
func attemptPairs(as []store.TaskAttempt) (ids []int64, attempts []int32, err error) {
	ids = make([]int64, len(as))
	attempts = make([]int32, len(as))
	for i, a := range as {
		if err := checkInt32("attempt", a.Attempt); err != nil {
			return nil, nil, err
		}
		ids[i], attempts[i] = a.TaskID, int32(a.Attempt)
	}
	return ids, attempts, nil
}

// TaskHeartbeat renews every lease the pilot holds, marks the listed
// attempts RUNNING, refreshes the pilot's last-seen time and returns the
// listed attempts the pilot no longer holds.
func (s *Store) TaskHeartbeat(ctx context.Context, p store.TaskHeartbeatParams) ([]store.TaskAttempt, error) {
	op := fmt.Sprintf("heartbeat of pilot %d", p.PilotID)
	// Attempts that cannot exist are stale without asking.
	var stale, listed, held []store.TaskAttempt
	for _, a := range p.Running {
		if checkInt32("attempt", a.Attempt) != nil {
			stale = append(stale, a)
		} else {
			listed = append(listed, a)
		}
	}
	if p.Reconcile {
		for _, a := range p.Held {
			if checkInt32("attempt", a.Attempt) != nil {
				stale = append(stale, a)
			} else {
				held = append(held, a)
			}
		}
	}
	ids, attempts, err := attemptPairs(listed)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	heldIDs, heldAttempts, err := attemptPairs(held)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	t := now(p.Now)
	b := &pgx.Batch{}
	// The pilot's leases are locked in id order, as TaskComplete locks, so
	// a heartbeat and a completion of the same pilot cannot deadlock. With
	// Reconcile only the held and running attempts are renewed.
	b.Queue(`
		UPDATE tasks t SET lease_expires = $3,
			updated_at = CASE WHEN t.status <> -3 AND (t.id, t.attempt) IN (SELECT * FROM unnest($4::bigint[], $5::int[])) THEN $2 ELSE t.updated_at END,
			status = CASE WHEN (t.id, t.attempt) IN (SELECT * FROM unnest($4::bigint[], $5::int[])) THEN -3 ELSE t.status END
		WHERE t.id = ANY (ARRAY(
				SELECT id FROM tasks WHERE pilot_id = $1 AND status IN (-2, -3) ORDER BY id FOR UPDATE))
			AND t.pilot_id = $1 AND t.status IN (-2, -3)
			AND (NOT $6 OR (t.id, t.attempt) IN (SELECT * FROM unnest($4::bigint[], $5::int[]))
				OR (t.id, t.attempt) IN (SELECT * FROM unnest($7::bigint[], $8::int[])))
		RETURNING t.id, t.attempt`, p.PilotID, t, ts(t.Add(p.TTL)), ids, attempts, p.Reconcile, heldIDs, heldAttempts)
	b.Queue(`UPDATE pilots SET last_seen = $2 WHERE id = $1`, p.PilotID, t)
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()
	rows, err := br.Query()
	if err != nil {
		return nil, dbErr(op, err)
	}
	got := map[store.TaskAttempt]bool{}
	for rows.Next() {
		var a store.TaskAttempt
		if err := rows.Scan(&a.TaskID, &a.Attempt); err != nil {
			rows.Close()
			return nil, dbErr(op, err)
		}
		got[a] = true
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr(op, err)
	}
	if _, err := br.Exec(); err != nil {
		return nil, dbErr(op, err)
	}
	if err := br.Close(); err != nil {
		return nil, dbErr(op, err)
	}
	for _, a := range append(listed, held...) {
		if !got[a] {
			stale = append(stale, a)
		}
	}
	return stale, nil
}

// TaskRelease hands the pilot's still-current leases (or all of them) back
// to READY without spending budget, recording "released" attempt rows.
func (s *Store) TaskRelease(ctx context.Context, p store.TaskReleaseParams) (int, error) {
	op := fmt.Sprintf("release leases of pilot %d", p.PilotID)
	var valid []store.TaskAttempt
	for _, a := range p.Attempts {
		if checkInt32("attempt", a.Attempt) == nil {
			valid = append(valid, a)
		}
	}
	if !p.All && len(valid) == 0 {
		return 0, nil
	}
	ids, attempts, err := attemptPairs(valid)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	t := now(p.Now)
	// Locked in id order, as everywhere (see TaskHeartbeat).
	tag, err := s.pool.Exec(ctx, `
		WITH rel AS (
			UPDATE tasks t SET status = -1, pilot_id = NULL, lease_expires = NULL, updated_at = $2
			WHERE t.id = ANY (ARRAY(
					SELECT id FROM tasks r
					WHERE r.pilot_id = $1 AND r.status IN (-2, -3)
						AND ($3 OR (r.id, r.attempt) IN (SELECT * FROM unnest($4::bigint[], $5::int[])))
					ORDER BY id FOR UPDATE))
				AND t.pilot_id = $1 AND t.status IN (-2, -3)
			RETURNING t.id, t.app_id, t.module_id, t.attempt, t.created_at, t.leased_at
		)
		INSERT INTO attempts (task_id, app_id, module_id, attempt, pilot_id, kind, exit_code, code, reason,
			created_at, leased_at, recorded_at)
		SELECT id, app_id, module_id, attempt, $1, $6, -1, -1, $7, created_at, leased_at, $2
		FROM rel ORDER BY id`,
		p.PilotID, t, p.All, ids, attempts, store.KindReleased, p.Reason)
	if err != nil {
		return 0, dbErr(op, err)
	}
	return int(tag.RowsAffected()), nil
}

// TaskExpireLeases records an "infra" attempt for every lease that expired
// before p.Now and moves its task to the status the policy returns.
func (s *Store) TaskExpireLeases(ctx context.Context, p store.TaskExpireParams) ([]*store.Task, error) {
	policy := p.Policy
	reason := p.Reason
	if reason == "" {
		reason = "lease expired"
	}
	t := now(p.Now)
	var out []*store.Task
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		out = nil
		// Rows being completed right now are locked: skip them, their
		// completion decides.
		rows, err := tx.Query(ctx, `
			SELECT id, module_id, app_failures, infra_failures FROM tasks
			WHERE status IN (-2, -3) AND lease_expires < $1
			ORDER BY id FOR UPDATE SKIP LOCKED`, t)
		if err != nil {
			return err
		}
		var ids []int64
		var statuses, infra []int32
		for rows.Next() {
			var id, mod int64
			var af, inf int
			if err := rows.Scan(&id, &mod, &af, &inf); err != nil {
				rows.Close()
				return err
			}
			next := store.StatusReady
			if policy != nil {
				next = normalizeNext(policy.Next(mod, store.StatusSysLost, store.KindInfra, af, inf))
			}
			ids = append(ids, id)
			statuses = append(statuses, int32(next))
			infra = append(infra, int32(inf+1))
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		b := &pgx.Batch{}
		b.Queue(`
			INSERT INTO attempts (task_id, app_id, module_id, attempt, pilot_id, kind, exit_code, code, reason,
				created_at, leased_at, recorded_at)
			SELECT id, app_id, module_id, attempt, COALESCE(pilot_id, 0), $2, -1, $3, $4, created_at, leased_at, $5
			FROM tasks WHERE id = ANY($1) ORDER BY id`,
			ids, store.KindInfra, store.StatusSysLost, reason, t)
		b.Queue(`
			UPDATE tasks t SET status = u.status, infra_failures = u.infra, pilot_id = NULL, lease_expires = NULL, updated_at = $1
			FROM unnest($2::bigint[], $3::int[], $4::int[]) AS u(id, status, infra)
			WHERE t.id = u.id
			RETURNING `+taskColumns("t"), t, ids, statuses, infra)
		br := tx.SendBatch(ctx, b)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return err
		}
		rows, err = br.Query()
		if err != nil {
			return err
		}
		if out, err = collectTasks(rows); err != nil {
			return err
		}
		return br.Close()
	})
	if err != nil {
		return nil, dbErr("expire leases", err)
	}
	slices.SortFunc(out, func(a, b *store.Task) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// normalizeNext maps a policy's answer to a status a finished attempt can
// leave: READY, INITIAL or a final code. Leased statuses become READY.
func normalizeNext(next int) int {
	if next == store.StatusQueued || next == store.StatusRunning || next == store.StatusRetryWait {
		return store.StatusReady
	}
	if checkInt32("status", next) != nil {
		return store.StatusSysLost
	}
	return next
}
