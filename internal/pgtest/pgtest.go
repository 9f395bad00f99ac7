// Package pgtest gives tests a real PostgreSQL server.
//
// One private server is started per test binary, lazily, on the first call
// to DSN: initdb into a temporary directory (trust authentication, no
// fsync), then postgres listening on 127.0.0.1 on a free port with its
// socket in the same directory. Every DSN call creates a fresh, uniquely
// named database on that server and drops it when the test ends, so tests
// can run in parallel without seeing each other's rows.
//
// A package that uses DSN should call Main from its TestMain so that the
// server is stopped and its directory removed as soon as the tests end:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Without it (or when the test binary is killed) the server still dies
// with the test binary (SIGQUIT is its parent-death signal), and the next
// run removes the directory left behind.
//
// Environment:
//
//   - SCALEBOX_TEST_POSTGRES=<dsn>: use that server instead of starting one
//     (the role needs CREATEDB). Databases are still created per call.
//   - SCALEBOX_SKIP_POSTGRES=1: skip tests that need PostgreSQL when no
//     server binaries are installed. Without it their absence fails the test:
//     CI installs PostgreSQL, and silently skipped store tests prove nothing.
//
// The binaries are found through `pg_config --bindir`, then
// /usr/lib/postgresql/<version>/bin (newest first), then PATH. As root,
// initdb and postgres run as the "postgres" user (initdb refuses root).
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

const (
	// EnvDSN names an existing server to use instead of a private one.
	EnvDSN = "SCALEBOX_TEST_POSTGRES"
	// EnvSkip lets tests skip when no PostgreSQL binaries are installed.
	EnvSkip = "SCALEBOX_SKIP_POSTGRES"

	// maxConnections leaves room for many parallel tests, each with a pool.
	maxConnections = 400
	// startTimeout bounds initdb + start + first connection.
	startTimeout = 60 * time.Second
	dirPrefix    = "scalebox-pgtest-"
)

// ErrNoBinaries is returned when no PostgreSQL server binaries are installed.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries found (install postgresql, or set " +
	EnvDSN + " to a server's DSN, or " + EnvSkip + "=1 to skip)")

var (
	dbCounter atomic.Int64

	mu      sync.Mutex
	current *server // nil until started
	failed  error   // sticky start failure
)

// server is a running PostgreSQL, private or external.
type server struct {
	base   string        // DSN of the maintenance database, without dbname for private servers
	admin  *pgxpool.Pool // connection to the maintenance database
	pg15   bool          // CREATE DATABASE … STRATEGY is available
	priv   *private      // nil for an external server
	encode func(db string) string
}

// Main runs the tests of a package that uses DSN, then stops the private
// server (if one was started) and removes its directory. Call it from
// TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if err := Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// DSN returns the connection string of a new, empty database on the shared
// server; the database is dropped when tb ends. It starts the server on the
// first call. Missing binaries fail tb unless SCALEBOX_SKIP_POSTGRES=1.
func DSN(tb testing.TB) string {
	tb.Helper()
	srv, err := get()
	if err != nil {
		if errors.Is(err, ErrNoBinaries) && os.Getenv(EnvSkip) == "1" {
			tb.Skipf("pgtest: %v", err)
		}
		tb.Fatalf("pgtest: %v", err)
	}
	name := fmt.Sprintf("t%d_%d_%s", os.Getpid(), dbCounter.Add(1), sanitize(tb.Name()))
	if len(name) > 63 {
		name = name[:63]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	create := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if srv.pg15 {
		// FILE_COPY is about 3x faster than WAL_LOG for a small template.
		create += " STRATEGY FILE_COPY"
	}
	if _, err := srv.admin.Exec(ctx, create); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		drop := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)"
		if _, err := srv.admin.Exec(ctx, drop); err != nil {
			tb.Logf("pgtest: drop database %s: %v", name, err)
		}
	})
	return srv.encode(name)
}

// Stop stops the private server and removes its directory. Main calls it;
// it is safe to call when nothing was started, and more than once.
func Stop() error {
	mu.Lock()
	defer mu.Unlock()
	srv := current
	current = nil
	if failed == nil {
		failed = errors.New("pgtest: server already stopped")
	}
	if srv == nil {
		return nil
	}
	srv.admin.Close()
	if srv.priv != nil {
		return srv.priv.stop()
	}
	return nil
}

// Restart shuts the private server down at once (SIGQUIT: no checkpoint,
// as a crash would) and starts it again on the same port and data, for
// tests of what clients do when their database goes away and comes back.
// Every database and its rows survive. It fails tb with an external
// server.
func Restart(tb testing.TB) {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	srv := current
	if srv == nil || srv.priv == nil {
		tb.Fatal("pgtest: Restart needs the private server, started by DSN")
	}
	p := srv.priv
	srv.admin.Close()
	if err := p.kill(); err != nil {
		tb.Fatalf("pgtest: restart: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	next, err := p.start(ctx, p.bindir, p.cred, p.port)
	if err != nil {
		current, failed = nil, err
		tb.Fatalf("pgtest: restart: %v", err)
	}
	current = next
}

// get returns the shared server, starting it on first use.
func get() (*server, error) {
	mu.Lock()
	defer mu.Unlock()
	if current != nil {
		return current, nil
	}
	if failed != nil {
		return nil, failed
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var srv *server
	var err error
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		srv, err = external(ctx, dsn)
	} else {
		srv, err = startPrivate(ctx)
	}
	if err != nil {
		failed = err
		return nil, err
	}
	current = srv
	return srv, nil
}

// external connects to the server named by dsn.
func external(ctx context.Context, dsn string) (*server, error) {
	admin, err := connectAdmin(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to %s server: %w", EnvDSN, err)
	}
	srv := &server{base: dsn, admin: admin, encode: func(db string) string { return withDatabase(dsn, db) }}
	srv.pg15, err = atLeast15(ctx, admin)
	if err != nil {
		admin.Close()
		return nil, err
	}
	return srv, nil
}

func connectAdmin(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse dsn: %w", err)
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping: %w", err)
	}
	return pool, nil
}

func atLeast15(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	var v string
	if err := pool.QueryRow(ctx, "SHOW server_version_num").Scan(&v); err != nil {
		return false, fmt.Errorf("query server version: %w", err)
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return false, fmt.Errorf("parse server version %q: %w", v, err)
	}
	return n >= 150000, nil
}

// withDatabase returns dsn with its database replaced by db. URL and
// keyword/value forms are both accepted (a later dbname keyword wins).
func withDatabase(dsn, db string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			u.Path = "/" + db
			u.RawPath = ""
			return u.String()
		}
	}
	return dsn + " dbname=" + db
}

// sanitize turns a test name into an identifier fragment.
func sanitize(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 40 {
			break
		}
	}
	return b.String()
}

// private is a server this process started.
type private struct {
	dir    string // removed on stop
	data   string
	bindir string
	cred   *syscall.Credential
	port   int
	cmd    *exec.Cmd
	exited chan struct{} // closed when the postmaster has exited
	err    error         // its exit status, valid after exited
}

// startPrivate runs initdb and starts a postgres on a free port.
func startPrivate(ctx context.Context) (*server, error) {
	bindir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred, err = postgresUser()
		if err != nil {
			return nil, err
		}
	}
	reapStale()
	dir, err := makeDir(cred)
	if err != nil {
		return nil, err
	}
	p := &private{dir: dir, data: filepath.Join(dir, "data"), bindir: bindir, cred: cred}
	ok := false
	defer func() {
		if !ok {
			_ = p.stop()
		}
	}()

	if err := p.initdb(ctx, bindir, cred); err != nil {
		return nil, err
	}
	// A port found free may be taken before postgres binds it: retry.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		srv, err := p.start(ctx, bindir, cred, port)
		if err == nil {
			ok, p.port = true, port
			return srv, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "could not bind") && !strings.Contains(err.Error(), "in use") {
			break
		}
	}
	return nil, lastErr
}

// findBinDir finds a directory holding initdb and postgres.
func findBinDir() (string, error) {
	var candidates []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	versions, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(versions, func(i, j int) bool { return pgVersion(versions[i]) > pgVersion(versions[j]) })
	candidates = append(candidates, versions...)
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			candidates = append(candidates, filepath.Dir(real))
		}
		candidates = append(candidates, filepath.Dir(p))
	}
	for _, dir := range candidates {
		if isExec(filepath.Join(dir, "initdb")) && isExec(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

// pgVersion extracts the major version of /usr/lib/postgresql/<v>/bin.
func pgVersion(bin string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(bin)), 64)
	return v
}

func isExec(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// postgresUser returns the credentials of the "postgres" user.
func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a %q user to run initdb and postgres: %w", "postgres", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid of postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid of postgres: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// makeDir creates the server's directory: data and socket directories owned
// by the server's user, inside a directory every user can traverse.
func makeDir(cred *syscall.Credential) (string, error) {
	parent := os.TempDir()
	if cred != nil && !traversable(parent) {
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, fmt.Sprintf("%s%d-", dirPrefix, os.Getpid()))
	if err != nil {
		return "", fmt.Errorf("create server directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return dir, fmt.Errorf("chmod server directory: %w", err)
	}
	for _, sub := range []string{"data", "sock"} {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, 0o700); err != nil {
			return dir, fmt.Errorf("create %s: %w", p, err)
		}
		if cred != nil {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return dir, fmt.Errorf("chown %s: %w", p, err)
			}
		}
	}
	return dir, nil
}

// traversable reports whether every directory from / to dir can be searched
// by other users.
func traversable(dir string) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for p := abs; ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if p == filepath.Dir(p) {
			return true
		}
	}
}

// reapStale removes directories of earlier test binaries that were killed
// before they could clean up (their pid and their postmaster are gone).
func reapStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	more, _ := filepath.Glob(filepath.Join("/tmp", dirPrefix+"*"))
	dirs = append(dirs, more...)
	seen := map[string]bool{}
	for _, d := range dirs {
		if seen[d] {
			continue
		}
		seen[d] = true
		rest := strings.TrimPrefix(filepath.Base(d), dirPrefix)
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid == os.Getpid() || alive(pid) {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			first, _, _ := strings.Cut(string(b), "\n")
			if pm, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && alive(pm) {
				continue
			}
		}
		_ = os.RemoveAll(d)
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// command builds a command that runs as cred's user (directly when cred is
// nil); initdb goes through runuser, which sets up the user's environment.
func command(ctx context.Context, cred *syscall.Credential, name string, args ...string) *exec.Cmd {
	if cred == nil {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
}

func (p *private) initdb(ctx context.Context, bindir string, cred *syscall.Credential) error {
	cmd := command(ctx, cred, filepath.Join(bindir, "initdb"),
		"-D", p.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C", "--no-instructions")
	cmd.Dir = p.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out.String())
	}
	return nil
}

// start starts the postmaster as a child process and waits until it
// accepts connections. The child gets SIGQUIT (immediate shutdown) if this
// process dies without stopping it.
func (p *private) start(ctx context.Context, bindir string, cred *syscall.Credential, port int) (*server, error) {
	logPath := filepath.Join(p.dir, fmt.Sprintf("postgres-%d.log", port))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create server log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(filepath.Join(bindir, "postgres"),
		"-D", p.data,
		"-p", strconv.Itoa(port),
		"-k", filepath.Join(p.dir, "sock"),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections="+strconv.Itoa(maxConnections),
		"-c", "shared_buffers=128MB",
		"-c", "max_wal_size=2GB",
		"-c", "checkpoint_timeout=30min",
		"-c", "log_min_messages=warning",
		"-c", "timezone=UTC",
	)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	// Linux sends the parent-death signal when the thread that forked the
	// child exits, not the process: start and wait on a thread of its own
	// that lives exactly as long as the server.
	p.cmd, p.exited = nil, make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	p.cmd = cmd

	base := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	if err := p.waitReady(ctx, base); err != nil {
		_ = p.kill()
		logText, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("postgres on port %d: %w\n%s", port, err, logText)
	}
	admin, err := connectAdmin(ctx, base)
	if err != nil {
		_ = p.kill()
		return nil, fmt.Errorf("connect to private server: %w", err)
	}
	srv := &server{base: base, admin: admin, priv: p, encode: func(db string) string {
		return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, db)
	}}
	if srv.pg15, err = atLeast15(ctx, admin); err != nil {
		admin.Close()
		_ = p.kill()
		return nil, err
	}
	return srv, nil
}

// waitReady connects until the server answers, it exits, or ctx ends.
func (p *private) waitReady(ctx context.Context, dsn string) error {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("parse dsn: %w", err)
	}
	backoff := 2 * time.Millisecond
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgconn.ConnectConfig(attempt, cfg)
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		timer := time.NewTimer(backoff)
		select {
		case <-p.exited:
			timer.Stop()
			return fmt.Errorf("server exited during startup: %v", p.err)
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("server not ready: %w (last error: %v)", ctx.Err(), err)
		case <-timer.C:
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
}

// kill shuts the postmaster down immediately (SIGQUIT, as pg_ctl stop -m
// immediate does) and waits for it to exit.
func (p *private) kill() error {
	if p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGQUIT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal postgres: %w", err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return errors.New("postgres did not stop within 30s after SIGQUIT; killed")
	}
}

// stop stops the server and removes its directory.
func (p *private) stop() error {
	err := p.kill()
	if rmErr := os.RemoveAll(p.dir); rmErr != nil && err == nil {
		err = fmt.Errorf("remove server directory: %w", rmErr)
	}
	return err
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
