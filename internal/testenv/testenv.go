// Package testenv gives tests of several packages the real parts they
// share, each made once per test binary: the scalebox binary (for batch
// jobs to exec) and a single-node Slurm cluster (scripts/slurm-cluster.sh).
// Call Cleanup from TestMain after m.Run.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binDir  string
	binErr  error
	cluster struct {
		once    sync.Once
		skip    string // why the Slurm tests skip
		missing string // binaries missing (fail unless SCALEBOX_SKIP_SLURM=1)
		dir     string
		env     []string
		err     error
		started time.Duration
	}
)

// Repo returns the absolute path of rel in the repository (the directory
// holding go.mod, found from the working directory up).
func Repo(rel string) string {
	dir, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, rel)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			panic("testenv: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Scalebox builds ./cmd/scalebox and ./cmd/scalebox-broker once, with
// -race when the test binary has it (a race in a pilot then shows in its
// job's output), in a directory outside per-test temp dirs (batch jobs
// exec it), and returns the path of scalebox.
func Scalebox(tb testing.TB) string {
	tb.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "scalebox-test-bin-")
		if binErr != nil {
			return
		}
		args := []string{"build", "-o", binDir + "/"}
		cgo := "CGO_ENABLED=0"
		if RaceEnabled() {
			args, cgo = append(args, "-race"), "CGO_ENABLED=1"
		}
		build := exec.Command("go", append(args, "./cmd/scalebox", "./cmd/scalebox-broker")...)
		build.Dir = Repo("")
		build.Env = append(os.Environ(), cgo)
		if out, err := build.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		tb.Fatal(binErr)
	}
	return filepath.Join(binDir, "scalebox")
}

// ScaleboxBroker is the path of the scalebox-broker built with Scalebox.
func ScaleboxBroker(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(filepath.Dir(Scalebox(tb)), "scalebox-broker")
}

// RaceEnabled reports whether the running binary was built with -race.
func RaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// SlurmCluster starts the test binary's Slurm cluster on first use and
// returns the environment of its clients (SLURM_CONF). Without the Slurm
// binaries it fails the test, unless SCALEBOX_SKIP_SLURM=1 (then it skips
// and says why).
func SlurmCluster(tb testing.TB) []string {
	tb.Helper()
	cluster.once.Do(func() {
		var missing []string
		for _, b := range []string{"slurmctld", "slurmd", "sbatch", "squeue", "scancel", "munged", "mungekey"} {
			if _, err := exec.LookPath(b); err != nil {
				missing = append(missing, b)
			}
		}
		if len(missing) > 0 {
			msg := fmt.Sprintf("Slurm binaries missing (%s): apt-get install -y slurmctld slurmd slurm-client munge", strings.Join(missing, ", "))
			if os.Getenv("SCALEBOX_SKIP_SLURM") == "1" {
				cluster.skip = msg + "; SCALEBOX_SKIP_SLURM=1"
			} else {
				cluster.missing = msg + " (or set SCALEBOX_SKIP_SLURM=1 to skip the Slurm tests)"
			}
			return
		}
		dir, err := os.MkdirTemp("", "scalebox-test-slurm-")
		if err != nil {
			cluster.err = err
			return
		}
		cluster.dir = dir
		script := Repo("scripts/slurm-cluster.sh")
		t0 := time.Now()
		if out, err := exec.Command(script, "start", dir).CombinedOutput(); err != nil {
			cluster.err = fmt.Errorf("%s start: %w\n%s", script, err, out)
			return
		}
		cluster.started = time.Since(t0)
		cluster.env = append(os.Environ(), "SLURM_CONF="+filepath.Join(dir, "slurm.conf"))
	})
	if cluster.skip != "" {
		tb.Skip(cluster.skip)
	}
	if cluster.missing != "" {
		tb.Fatal(cluster.missing)
	}
	if cluster.err != nil {
		tb.Fatal(cluster.err)
	}
	return cluster.env
}

// SlurmDir starts the cluster as SlurmCluster does and returns its
// directory (the argument of scripts/slurm-cluster.sh).
func SlurmDir(tb testing.TB) string {
	tb.Helper()
	SlurmCluster(tb)
	return cluster.dir
}

// SlurmStarted is how long the cluster took to start (0 before it has).
func SlurmStarted() time.Duration { return cluster.started }

// Cleanup stops the Slurm cluster and removes the built binary.
func Cleanup() {
	if cluster.dir != "" {
		script := Repo("scripts/slurm-cluster.sh")
		if out, err := exec.Command(script, "stop", cluster.dir).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "%s stop: %v\n%s", script, err, out)
		}
		_ = os.RemoveAll(cluster.dir)
	}
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
}
