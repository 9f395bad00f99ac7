// Command scalebox is Scalebox's command line for users on login nodes and
// for modules inside running tasks. SIGINT, SIGTERM and SIGUSR1 (what
// Slurm's --signal=B:USR1@N sends before the walltime) stop it gracefully:
// a pilot stops leasing, lets running tasks finish within its grace period
// and hands the rest back.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/scalebox-hpc/scalebox/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGUSR1)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
