// Command scalebox-broker is Scalebox's central service: the REST API over
// the durable store that holds apps, tasks, pilots and sites.
//
//	scalebox-broker                                  # SQLite in ~/.scalebox/scalebox.db, 127.0.0.1:8080
//	scalebox-broker --db postgres://user@host/db --listen :8080
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/internal/logging"
	"github.com/scalebox-hpc/scalebox/internal/storeopen"
	"github.com/scalebox-hpc/scalebox/provision"
)

var version = "dev"

type options struct {
	DB                string        `env:"SCALEBOX_DB" default:"~/.scalebox/scalebox.db" help:"Store: a SQLite file path (default) or a postgres:// URL."`
	Listen            string        `env:"SCALEBOX_LISTEN" default:"127.0.0.1:8080" help:"Address to serve the API on (use :8080 so compute nodes can reach it)."`
	TokenFile         string        `env:"SCALEBOX_TOKEN_FILE" default:"~/.scalebox/token" help:"Admin token file: created (mode 0600) on first start, registered if it exists."`
	NoAuth            bool          `name:"no-auth" help:"Accept requests without tokens (a trusted single-user machine only)."`
	LeaseTTL          time.Duration `default:"20s" help:"Lease lifetime without a heartbeat; a pilot silent this long is lost and its tasks are requeued (pilots heartbeat every third of it)."`
	InfraRetries      int           `default:"5" help:"Attempts ended by infrastructure failures (lost pilot, expired lease) retried without spending the module's retry budget."`
	NoProvision       bool          `name:"no-provision" help:"Do not submit, watch or cancel pilot jobs on slurm/pbs sites."`
	ProvisionInterval time.Duration `default:"10s" help:"How often the provisioner looks at the backlog and at each site's pilot jobs (one scheduler query per site; the period grows while nothing changes)."`
	JobLogDir         string        `default:"~/.scalebox/jobs" help:"Where pilot job outputs go (one directory per site)."`
	PprofListen       string        `name:"pprof-listen" env:"SCALEBOX_PPROF_LISTEN" placeholder:"127.0.0.1:6060" help:"Serve Go's profiler (net/http/pprof, under /debug/pprof/) on this address, apart from the API and without its auth: keep it on a loopback address. Off by default."`
	LogLevel          string        `default:"info" help:"debug, info, warn or error."`
	LogFormat         string        `default:"console" enum:"console,json" help:"console or json."`
	Version           bool          `help:"Print the version and exit."`
}

func main() {
	var o options
	kong.Parse(&o, kong.Name("scalebox-broker"), kong.Description("Scalebox broker: REST API, dispatch and durable state."))
	if o.Version {
		fmt.Println("scalebox-broker", version)
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "scalebox-broker:", err)
		os.Exit(1)
	}
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, rest)
		}
	}
	return p
}

func run(o options) error {
	log, err := logging.New(o.LogLevel, o.LogFormat)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	st, err := storeopen.Open(ctx, expandHome(o.DB))
	if err != nil {
		return err
	}
	defer st.Close()
	cfg := broker.Config{LeaseTTL: o.LeaseTTL, InfraRetries: o.InfraRetries, Auth: !o.NoAuth}
	if !o.NoProvision {
		p := provision.New(st, provision.Config{Interval: o.ProvisionInterval, LogDir: expandHome(o.JobLogDir)}, log)
		cfg.Provisioner = p
		go func() { _ = p.Run(ctx) }()
	}
	b := broker.New(st, cfg, log.Named("broker"))
	if !o.NoAuth {
		if err := b.BootstrapAdminToken(ctx, expandHome(o.TokenFile)); err != nil {
			return err
		}
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	if o.PprofListen != "" {
		addr, err := servePprof(ctx, o.PprofListen)
		if err != nil {
			return err
		}
		log.Info("profiler serving", zap.String("addr", "http://"+addr+"/debug/pprof/"))
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log.Info("scalebox-broker serving", zap.String("addr", "http://"+ln.Addr().String()),
		zap.String("db", storeopen.Redact(o.DB)), zap.Bool("auth", !o.NoAuth), zap.String("version", version))
	return b.Serve(ctx, ln)
}

// servePprof serves net/http/pprof on addr until ctx ends and returns the
// address it listens on.
func servePprof(ctx context.Context, addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("pprof listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	return ln.Addr().String(), nil
}
