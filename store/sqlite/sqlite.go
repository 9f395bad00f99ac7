// Package sqlite is the embedded store.Store: one SQLite file (modernc.org/sqlite,
// pure Go), no server to run. It is the zero-setup default for a single broker.
//
// Durability and concurrency:
//
//   - WAL journal with synchronous=FULL: a write is acknowledged only after
//     its commit is on disk.
//   - One writer connection (a *sql.DB limited to one connection, transactions
//     begin IMMEDIATE) serialises every write, so leases are exclusive without
//     locks and writers never see SQLITE_BUSY from each other. A separate
//     read-only pool serves reads, which WAL lets run beside the writer.
//   - Writes that belong together (a lease batch, a completion batch with its
//     attempt rows and emitted messages) are one transaction.
//
// Hot paths are set-based: multi-row INSERTs in chunks that respect SQLite's
// variable limit, UPDATE … FROM (VALUES …) for completions, and one
// UPDATE … WHERE id IN (SELECT … LIMIT) RETURNING per module for leases.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/scalebox-hpc/scalebox/schema"
	"github.com/scalebox-hpc/scalebox/store"
)

// maxVars is the most bound parameters one statement may carry
// (SQLITE_MAX_VARIABLE_NUMBER of the bundled SQLite is 32766).
const maxVars = 32766

// busyTimeout is how long a connection waits for a lock held by another
// process (or the checkpointer) before failing.
const busyTimeout = 10 * time.Second

// Store is the SQLite implementation of store.Store.
type Store struct {
	path   string  // the database file
	w      *sql.DB // the writer pool: exactly one connection
	r      *sql.DB // read-only pool
	tmpDir string  // removed on Close when the database is a temporary one

	// The writer connection is pinned; wsem (capacity 1) serialises its
	// transactions and guards wc, stmts and closed.
	wsem   chan struct{}
	qmu    sync.Mutex   // guards queue
	queue  []*writeReq  // writes waiting for the next group commit
	groups atomic.Int64 // transactions run (group commits)
	wc     *sql.Conn
	stmts  map[string]*sql.Stmt // prepared on wc, by SQL text
	closed bool

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and applies pending
// migrations. The parent directory is created. A path of "" or ":memory:"
// opens a private temporary database that is deleted on Close.
func Open(ctx context.Context, path string) (*Store, error) {
	s := &Store{}
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file::memory:") {
		dir, err := os.MkdirTemp("", "scalebox-sqlite-")
		if err != nil {
			return nil, fmt.Errorf("create temporary database dir: %w", err)
		}
		s.tmpDir = dir
		path = filepath.Join(dir, "scalebox.db")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		s.cleanupTmp()
		return nil, fmt.Errorf("resolve database path %q: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		s.cleanupTmp()
		return nil, fmt.Errorf("create database dir: %w", err)
	}

	s.path = abs
	s.wsem = make(chan struct{}, 1)
	fail := func(err error) (*Store, error) {
		if s.r != nil {
			_ = s.r.Close()
		}
		if s.wc != nil {
			_ = s.wc.Close()
		}
		if s.w != nil {
			_ = s.w.Close()
		}
		s.cleanupTmp()
		return nil, err
	}
	s.w, err = sql.Open("sqlite", dsn(abs, true))
	if err != nil {
		return fail(fmt.Errorf("open database %s: %w", abs, err))
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	// The writer connects first: it switches a new file to WAL before any
	// reader opens it.
	if s.wc, err = s.w.Conn(ctx); err != nil {
		return fail(fmt.Errorf("open database %s: %w", abs, err))
	}
	if err := s.migrate(ctx); err != nil {
		return fail(fmt.Errorf("migrate database %s: %w", abs, err))
	}

	if s.r, err = sql.Open("sqlite", dsn(abs, false)); err != nil {
		return fail(fmt.Errorf("open database %s for reading: %w", abs, err))
	}
	readers := max(4, 2*runtime.GOMAXPROCS(0))
	s.r.SetMaxOpenConns(readers)
	s.r.SetMaxIdleConns(readers)
	s.r.SetConnMaxIdleTime(5 * time.Minute)
	if err := s.r.PingContext(ctx); err != nil {
		return fail(fmt.Errorf("open database %s for reading: %w", abs, err))
	}
	return s, nil
}

// dsn builds the connection string of the writer or of a reader.
func dsn(path string, writer bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "temp_store(MEMORY)")
	if writer {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "cache_size(-65536)") // 64 MiB
	} else {
		q.Add("_pragma", "cache_size(-16384)") // 16 MiB per reader
		q.Add("_query_only", "1")
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: q.Encode()}
	return u.String()
}

// migrate applies the pending migrations in one transaction.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := schema.Migrations("sqlite")
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	return s.write(ctx, func(tx *wtx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		var applied []int
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				_ = rows.Close()
				return fmt.Errorf("read schema_migrations: %w", err)
			}
			applied = append(applied, v)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		pending, err := schema.Pending(ms, applied)
		if err != nil {
			return err
		}
		for _, m := range pending {
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("apply migration %03d_%s: %w", m.Version, m.Name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.Version, m.Name, time.Now().UnixMicro()); err != nil {
				return fmt.Errorf("record migration %03d_%s: %w", m.Version, m.Name, err)
			}
		}
		return nil
	})
}

// Path returns the database file.
func (s *Store) Path() string { return s.path }

// SchemaVersions returns the applied migration versions, in order.
func (s *Store) SchemaVersions(ctx context.Context) ([]int, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("read schema versions: %w", err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read schema versions: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema versions: %w", err)
	}
	return out, nil
}

// Close closes both pools; a temporary database is deleted. It waits for a
// running write to finish and is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.r != nil {
			errs = append(errs, s.r.Close())
		}
		s.wsem <- struct{}{}
		s.closed = true
		// Keep the planner's statistics fresh for the next open.
		_, _ = s.wc.ExecContext(context.Background(), `PRAGMA optimize`)
		for _, st := range s.stmts {
			_ = st.Close()
		}
		s.stmts = nil
		errs = append(errs, s.wc.Close(), s.w.Close())
		<-s.wsem
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("close database: %w", err)
		}
		s.cleanupTmp()
	})
	return s.closeErr
}

func (s *Store) cleanupTmp() {
	if s.tmpDir != "" {
		_ = os.RemoveAll(s.tmpDir)
	}
}

// errClosed is returned by writes after Close.
var errClosed = errors.New("store is closed")

// wtx is a write transaction on the pinned writer connection.
type wtx struct {
	s *Store
}

func (tx *wtx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return tx.s.wc.ExecContext(ctx, query, args...)
}

func (tx *wtx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return tx.s.wc.QueryContext(ctx, query, args...)
}

func (tx *wtx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return tx.s.wc.QueryRowContext(ctx, query, args...)
}

// stmt returns the prepared statement for query, preparing it once per
// store: the writer connection lives as long as the store.
func (tx *wtx) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := tx.s.stmts[query]; ok {
		return st, nil
	}
	st, err := tx.s.wc.PrepareContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if tx.s.stmts == nil {
		tx.s.stmts = map[string]*sql.Stmt{}
	}
	tx.s.stmts[query] = st
	return st, nil
}

// write runs fn in a write transaction (BEGIN IMMEDIATE on the writer
// connection), committing if fn returns nil and rolling back its work
// otherwise (also if fn panics, e.g. in a caller's RetryPolicy: the panic
// is raised again in the caller).
//
// Group commit: writes that arrive while another is running queue up, and
// the next writer to get the connection runs all queued ones in a single
// transaction, each inside a savepoint so that one's error undoes only its
// own work, and commits once. Every caller returns only after the commit
// that made its work durable (synchronous=FULL: one fsync for the group).
// A lone writer runs at once, without a savepoint.
func (s *Store) write(ctx context.Context, fn func(tx *wtx) error) error {
	req := &writeReq{ctx: ctx, fn: fn, done: make(chan struct{})}
	s.qmu.Lock()
	s.queue = append(s.queue, req)
	s.qmu.Unlock()
	for {
		select {
		case <-req.done:
			return req.result()
		case s.wsem <- struct{}{}:
			s.qmu.Lock()
			batch := s.queue
			s.queue = nil
			s.qmu.Unlock()
			if len(batch) > 0 {
				s.runGroup(batch)
			}
			<-s.wsem
		case <-ctx.Done():
			s.qmu.Lock()
			i := slices.Index(s.queue, req)
			if i >= 0 {
				s.queue = slices.Delete(s.queue, i, i+1)
			}
			s.qmu.Unlock()
			if i >= 0 {
				return fmt.Errorf("wait for writer: %w", context.Cause(ctx))
			}
			<-req.done // taken by a group already: its outcome is ours
			return req.result()
		}
	}
}

// writeReq is one caller's write, queued for a group commit.
type writeReq struct {
	ctx      context.Context
	fn       func(tx *wtx) error
	err      error
	panicked bool
	panicVal any
	done     chan struct{}
}

func (r *writeReq) result() error {
	if r.panicked {
		panic(r.panicVal)
	}
	return r.err
}

// runGroup runs queued writes in one transaction; the caller holds wsem.
func (s *Store) runGroup(batch []*writeReq) {
	defer func() {
		for _, r := range batch {
			close(r.done)
		}
	}()
	s.groups.Add(1)
	if s.closed {
		for _, r := range batch {
			r.err = errClosed
		}
		return
	}
	bg := context.Background()
	if _, err := s.wc.ExecContext(bg, `BEGIN IMMEDIATE`); err != nil {
		for _, r := range batch {
			r.err = fmt.Errorf("begin: %w", err)
		}
		return
	}
	single := len(batch) == 1
	ok := 0
	for _, r := range batch {
		if r.ctx.Err() != nil {
			r.err = fmt.Errorf("wait for writer: %w", context.Cause(r.ctx))
			continue
		}
		if !single {
			if _, err := s.wc.ExecContext(bg, `SAVEPOINT w`); err != nil {
				r.err = fmt.Errorf("savepoint: %w", err)
				continue
			}
		}
		s.runOne(r)
		switch {
		case single && (r.err != nil || r.panicked):
		case single:
			ok++
		case r.err != nil || r.panicked:
			// Undo this write only; RELEASE then ends the savepoint.
			if _, err := s.wc.ExecContext(bg, `ROLLBACK TO w`); err != nil {
				s.abortGroup(batch, fmt.Errorf("roll back to savepoint: %w", err))
				return
			}
			fallthrough
		default:
			if _, err := s.wc.ExecContext(bg, `RELEASE w`); err != nil {
				s.abortGroup(batch, fmt.Errorf("release savepoint: %w", err))
				return
			}
			if r.err == nil && !r.panicked {
				ok++
			}
		}
	}
	if ok == 0 {
		_, _ = s.wc.ExecContext(bg, `ROLLBACK`)
		return
	}
	// Commit regardless of the callers' cancellation now: the work is
	// done, and an interrupted COMMIT would leave the outcome unclear.
	if _, err := s.wc.ExecContext(bg, `COMMIT`); err != nil {
		s.abortGroup(batch, fmt.Errorf("commit: %w", err))
	}
}

// runOne runs one write's fn, turning a panic into a result its caller
// raises again.
func (s *Store) runOne(r *writeReq) {
	defer func() {
		if v := recover(); v != nil {
			r.panicked, r.panicVal = true, v
		}
	}()
	r.err = r.fn(&wtx{s: s})
}

// abortGroup rolls the whole transaction back: every write of the group
// that had succeeded fails with err.
func (s *Store) abortGroup(batch []*writeReq, err error) {
	_, _ = s.wc.ExecContext(context.Background(), `ROLLBACK`)
	for _, r := range batch {
		if r.err == nil && !r.panicked {
			r.err = err
		}
	}
}

// Commits returns how many write transactions the store has run: fewer
// than its writes when concurrent writes shared a group commit.
func (s *Store) Commits() int64 { return s.groups.Load() }

// Waiting returns how many writes wait for the next group commit.
func (s *Store) Waiting() int {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return len(s.queue)
}

// translate maps driver errors to the store's sentinels, keeping the cause.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%w: %w", store.ErrConflict, err)
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return fmt.Errorf("%w: %w", store.ErrNotFound, err)
		}
	}
	return err
}

// toMicros converts a time to unix microseconds; the zero time is 0.
func toMicros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// fromMicros converts unix microseconds back; 0 is the zero time.
func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}
