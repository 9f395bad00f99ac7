// Package pbstest provides a TEST DOUBLE of OpenPBS for Scalebox's tests:
// qsub, qstat and qdel executables (cmd/pbsdouble) that run job scripts as
// local processes and print OpenPBS 23.06's formats. No PBS server is
// packaged for Debian, so the pbs package (and anything that submits
// pilots through PBS) is tested against this double, not a real PBS.
// It is test code, not product code.
package pbstest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"

	"github.com/scalebox-hpc/scalebox/batch"
)

var (
	once     sync.Once
	binDir   string
	buildErr error
	buildOut []byte
)

// Install builds the double once per test binary and returns a directory
// holding qsub, qstat and qdel (symlinks to pbsdouble), to put on PATH or
// use as batch.Exec{Path: dir}. The commands need PBS_DOUBLE_DIR; see New.
func Install(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		src := filepath.Join(filepath.Dir(file), "cmd", "pbsdouble")
		binDir, buildErr = os.MkdirTemp("", "pbsdouble-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, "pbsdouble"), ".")
		cmd.Dir = src
		buildOut, buildErr = cmd.CombinedOutput()
		if buildErr != nil {
			return
		}
		for _, c := range []string{"qsub", "qstat", "qdel"} {
			if buildErr = os.Symlink("pbsdouble", filepath.Join(binDir, c)); buildErr != nil {
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("pbstest: build the PBS double: %v\n%s", buildErr, buildOut)
	}
	return binDir
}

// Server is one instance of the double: its state directory and the
// environment its commands need.
type Server struct {
	Bin string // qsub, qstat, qdel
	Dir string // PBS_DOUBLE_DIR
	Env []string
}

// New installs the double and starts an empty "server" in a temp dir.
// extraEnv (e.g. "PBS_DOUBLE_KILL_DELAY=1") is added to the commands'
// environment. On cleanup every job process and supervisor still alive is
// killed.
func New(t testing.TB, extraEnv ...string) *Server {
	t.Helper()
	s := &Server{Bin: Install(t), Dir: t.TempDir()}
	s.Env = append(os.Environ(), "PBS_DOUBLE_DIR="+s.Dir, "PBS_DOUBLE_SERVER=pbshost")
	s.Env = append(s.Env, extraEnv...)
	t.Cleanup(s.killAll)
	return s
}

// Exec returns a batch.Commander running the double's commands.
func (s *Server) Exec() batch.Exec { return batch.Exec{Path: s.Bin, Env: s.Env} }

func (s *Server) killAll() {
	ents, _ := os.ReadDir(filepath.Join(s.Dir, "jobs"))
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(s.Dir, "jobs", e.Name()))
		if err != nil {
			continue
		}
		var j struct {
			State      string
			SessionID  int
			Supervisor int
		}
		if json.Unmarshal(b, &j) != nil || j.State == "F" || j.State == "X" {
			continue
		}
		if j.SessionID > 0 {
			syscall.Kill(-j.SessionID, syscall.SIGKILL)
		}
		if j.Supervisor > 0 {
			syscall.Kill(j.Supervisor, syscall.SIGKILL)
		}
	}
}
