// Command scalebox is Scalebox's command line for users on login nodes and
// for modules inside running tasks.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/scalebox-hpc/scalebox/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
