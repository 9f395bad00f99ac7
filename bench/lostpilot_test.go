package bench

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/internal/testenv"
	"github.com/scalebox-hpc/scalebox/store/sqlite"
)

// BenchmarkLostPilot measures, with the broker's default lease settings,
// how long after a pilot process dies (SIGKILL, while it runs a task) the
// broker declares it lost (detection) and puts its task back to READY
// (requeue). The broker runs in this process on SQLite over real HTTP; the
// pilot is the scalebox binary.
func BenchmarkLostPilot(b *testing.B) {
	bin := testenv.Scalebox(b)
	var detect, requeue time.Duration
	for i := 0; i < b.N; i++ {
		d, r := lostPilotOnce(b, bin)
		detect += d
		requeue += r
	}
	b.ReportMetric(detect.Seconds()/float64(b.N), "s-detect")
	b.ReportMetric(requeue.Seconds()/float64(b.N), "s-requeue")
}

func lostPilotOnce(b *testing.B, bin string) (detect, requeue time.Duration) {
	ctx := context.Background()
	dir := b.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "s.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	br := broker.New(st, broker.Config{}, zap.NewNop()) // default lease TTL
	if err := br.Start(ctx); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(br.Handler())
	defer func() { br.Close(); srv.Close() }()
	client := api.NewClient(srv.URL, "")

	code := filepath.Join(dir, "code")
	if err := os.MkdirAll(code, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(code, "run.sh"), []byte("#!/bin/sh\nexec sleep 600\n"), 0o755); err != nil {
		b.Fatal(err)
	}
	a, err := client.AppCreate(ctx, &api.AppCreateRequest{YAML: "name: lost\nmodules:\n  m:\n    arguments: {code_path: " + code + "}\n    parameters: {start_task: x}\n"})
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "--broker", srv.URL, "pilot", "run", "--app-id", strconv.FormatInt(a.ID, 10), "--scratch", dir)
	cmd.Env = append(os.Environ(), "SCALEBOX_TOKEN=", "SCALEBOX_TOKEN_FILE="+filepath.Join(dir, "no-token"))
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	task := func() *api.Task {
		l, err := client.TaskList(ctx, api.TaskListParams{AppID: a.ID})
		if err != nil || len(l.Tasks) != 1 {
			b.Fatalf("task list: %v", err)
		}
		return &l.Tasks[0]
	}
	poll := func(what string, cond func() bool) time.Time {
		deadline := time.Now().Add(3 * time.Minute)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for !cond() {
			if time.Now().After(deadline) {
				b.Fatalf("%s: not within 3 minutes", what)
			}
			<-tk.C
		}
		return time.Now()
	}
	poll("task running", func() bool { return task().Status == api.StatusRunning })
	pilotID := task().PilotID

	b.ResetTimer()
	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		b.Fatal(err)
	}
	var lostAt, readyAt time.Time
	poll("lost and requeued", func() bool {
		if lostAt.IsZero() {
			if ps, err := client.PilotList(ctx); err == nil {
				for _, p := range ps {
					if p.ID == pilotID && p.Status == "LOST" {
						lostAt = time.Now()
					}
				}
			}
		}
		if readyAt.IsZero() && task().Status == api.StatusReady {
			readyAt = time.Now()
		}
		return !lostAt.IsZero() && !readyAt.IsZero()
	})
	b.StopTimer()
	return lostAt.Sub(killed), readyAt.Sub(killed)
}
