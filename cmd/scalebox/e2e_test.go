package main_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/api"
)

// TestScaleboxRunAppPrimes builds both binaries and runs Scalebox's
// app-primes the way a user does: `echo 1000 | scalebox run` in the app's
// directory, with no broker running (scalebox run starts one on SQLite).
// Then it restarts the broker on the same store and reads the sum back.
func TestScaleboxRunAppPrimes(t *testing.T) {
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "../scalebox", "../scalebox-broker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, string(out))

	home := t.TempDir()
	env := append(os.Environ(), "HOME="+home, "SCALEBOX_BROKER=http://127.0.0.1:1", "SCALEBOX_TOKEN=",
		"SCALEBOX_TOKEN_FILE="+home+"/.scalebox/token", "SCALEBOX_SCRATCH="+t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := exec.CommandContext(ctx, filepath.Join(bin, "scalebox"), "run")
	run.Dir = "../../examples/app-primes"
	run.Env = env
	run.Stdin = strings.NewReader("1000\n")
	var stdout, stderr bytes.Buffer
	run.Stdout, run.Stderr = &stdout, &stderr
	require.NoError(t, run.Run(), "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	require.Contains(t, stdout.String(), `{"app_id":1}`)
	require.Regexp(t, `my-module\s+local\s+OK=10\n`, stdout.String())
	require.Regexp(t, `mr-module\s+local\s+OK=11\n`, stdout.String())

	// The store kept everything: serve it again and read the result.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	broker := exec.CommandContext(ctx, filepath.Join(bin, "scalebox-broker"), "--listen", addr, "--log-level", "warn")
	broker.Env = env
	broker.Stderr = &stderr
	require.NoError(t, broker.Start())
	defer func() { _ = broker.Process.Kill(); _ = broker.Wait() }()
	tok, err := os.ReadFile(filepath.Join(home, ".scalebox", "token"))
	require.NoError(t, err)
	client := api.NewClient("http://"+addr, strings.TrimSpace(string(tok)))
	require.Eventually(t, func() bool { return client.Healthz(ctx) == nil }, 30*time.Second, 10*time.Millisecond)
	s, err := client.SemaphoreGet(ctx, 1, "app-primes:sum_value")
	require.NoError(t, err)
	require.EqualValues(t, 168, s.Value)
}
