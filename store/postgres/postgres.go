// Package postgres is the production store.Store, on PostgreSQL through
// jackc/pgx v5 and a connection pool.
//
// Hot paths are set-based, with array parameters and no round trip per row:
//
//   - TaskAdd inserts a batch with one INSERT … SELECT FROM unnest(…). The
//     first try is a plain INSERT (all new tasks, the common case); a unique
//     violation or a deadlock redoes the call with ON CONFLICT DO NOTHING
//     against the (module_id, md5(body)::uuid) unique index, inserting in
//     key order (ids still follow input order) so that concurrent adds of the
//     same tasks cannot deadlock.
//   - TaskLease locks the oldest READY rows per (module, host) with
//     FOR UPDATE SKIP LOCKED and updates them in the same statement.
//   - TaskComplete locks the batch's tasks, runs the retry policy in Go,
//     then applies task updates and attempt rows in one round trip and the
//     emitted messages like TaskAdd, all in one transaction.
//
// Open applies the embedded migrations (schema/postgres) in one
// transaction under an advisory lock, so concurrent Opens are safe.
//
// Times are stored as timestamptz (microseconds): every time passed in is
// truncated to microseconds, and times come back in UTC; zero times are
// NULL. Transactions that die in a deadlock or serialization failure are
// retried a few times, so a RetryPolicy may be asked again about the same
// attempt.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/scalebox-hpc/scalebox/schema"
	"github.com/scalebox-hpc/scalebox/store"
)

// Store is a store.Store backed by PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
}

var _ store.Store = (*Store)(nil)

// migrationLock is the pg_advisory_xact_lock key that serialises migrations.
const migrationLock int64 = 0x5ca1eb0c_0000_0001

// Open connects to the database named by dsn (a postgres:// URL or
// keyword/value string; pool settings such as pool_max_conns are honoured)
// and migrates its schema to the latest version.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse postgres dsn: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres pool: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Pool returns the underlying connection pool (for metrics and tools).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// migrate applies the migrations that are not yet recorded, all in one
// transaction holding an advisory lock.
func (s *Store) migrate(ctx context.Context) error {
	migs, err := schema.Migrations("postgres")
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		rows, err := tx.Query(ctx, "SELECT version FROM schema_migrations")
		if err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		pending, err := schema.Pending(migs, applied)
		if err != nil {
			return err
		}
		for _, m := range pending {
			// No arguments: simple protocol, so a file may hold many statements.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("apply migration %03d_%s: %w", m.Version, m.Name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
				return fmt.Errorf("record migration %03d_%s: %w", m.Version, m.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate postgres schema: %w", err)
	}
	return nil
}

// inTx runs fn in a transaction, retrying a few times on deadlocks and
// serialization failures (fn must be safe to run again).
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	for try := 0; ; try++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		if err == nil || try >= 3 || !retryable(err) || ctx.Err() != nil {
			return err
		}
	}
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// dbErr wraps err as "op: …", translating pgx.ErrNoRows to
// store.ErrNotFound and unique violations to store.ErrConflict.
func dbErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505": // unique_violation
			return fmt.Errorf("%s: %w (%w)", op, store.ErrConflict, err)
		case "23503": // foreign_key_violation
			return fmt.Errorf("%s: %w (%w)", op, store.ErrNotFound, err)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// now returns t at the store's precision, or the current time if t is zero.
func now(t time.Time) time.Time {
	if t.IsZero() {
		t = time.Now()
	}
	return ts(t)
}

// ts truncates t to microseconds in UTC (the precision of timestamptz).
func ts(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Truncate(time.Microsecond).UTC()
}

// nt encodes t as a nullable timestamptz (zero is NULL).
func nt(t time.Time) pgtype.Timestamptz {
	if t.IsZero() {
		return pgtype.Timestamptz{}
	}
	return pgtype.Timestamptz{Time: ts(t), Valid: true}
}

// tv decodes a nullable timestamptz (NULL is zero) in UTC.
func tv(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

// checkInt32 rejects ints that do not fit an integer column.
func checkInt32(what string, v int) error {
	if v < -1<<31 || v > 1<<31-1 {
		return fmt.Errorf("%s %d out of range", what, v)
	}
	return nil
}
