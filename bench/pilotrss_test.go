package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/internal/testenv"
)

// BenchmarkPilotRSS runs a pilot as its own process (the scalebox binary,
// as on a compute node) with 2 slots through SCALEBOX_BENCH_RSS_TASKS
// (default 20,000) /bin/true tasks, then reads its peak resident set
// (VmHWM) before stopping it: the memory a pilot costs a node.
func BenchmarkPilotRSS(b *testing.B) {
	n := envInt("SCALEBOX_BENCH_RSS_TASKS", 20000)
	bin := testenv.Scalebox(b)
	var peak, idle float64
	for range b.N {
		h := newHarness(b, "sqlite")
		app := h.createApp(b)
		cmd := exec.Command(bin, "--broker", h.url, "pilot", "run", "--app-id", strconv.FormatInt(app.ID, 10),
			"--slots", "noop:2", "--scratch", filepath.Join(h.dir, "scratch"))
		var logs testenv.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		stopped := false
		stop := func() {
			if !stopped {
				stopped = true
				_ = cmd.Process.Signal(syscall.SIGTERM)
				_ = cmd.Wait()
			}
		}
		b.Cleanup(stop)
		deadline := time.Now().Add(30 * time.Second)
		for h.brk.Waiting() < 1 {
			if time.Now().After(deadline) {
				b.Fatalf("pilot not long-polling after 30 s:\n%s", logs.String())
			}
			time.Sleep(time.Millisecond)
		}
		idle += vmKB(b, cmd.Process.Pid, "VmRSS") / 1024
		ctx := context.Background()
		for off := 0; off < n; off += e2eBatch {
			in := make([]api.TaskInput, min(e2eBatch, n-off))
			for j := range in {
				in[j] = api.TaskInput{Body: fmt.Sprintf("task-%07d", off+j)}
			}
			if _, err := h.client.TaskAdd(ctx, app.ID, &api.TaskAddRequest{Module: "noop", Tasks: in}); err != nil {
				b.Fatal(err)
			}
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		err := h.st.waitOK(wctx, int64(n))
		cancel()
		if err != nil {
			b.Fatalf("%v\n%s", err, logs.String())
		}
		peak += vmKB(b, cmd.Process.Pid, "VmHWM") / 1024
		stop()
	}
	b.ReportMetric(peak/float64(b.N), "rss-mb")
	b.ReportMetric(idle/float64(b.N), "idle-rss-mb")
}

// vmKB reads one kB field of /proc/<pid>/status.
func vmKB(tb testing.TB, pid int, field string) float64 {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				tb.Fatalf("%s of pid %d: %v", field, pid, err)
			}
			return kb
		}
	}
	tb.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
