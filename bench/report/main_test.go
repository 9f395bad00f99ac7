package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/scalebox-hpc/scalebox/bench
cpu: Test CPU @ 2.0GHz
BenchmarkEndToEnd/sqlite/pilots=2/slots=4-2         	       1	4000000000 ns/op	      1600 tasks/s	       625.0 us/task
BenchmarkEndToEnd/postgres/pilots=2/slots=4-2       	       1	4000000000 ns/op	      1400 tasks/s
BenchmarkForkExecCeiling/os-exec/goroutines=2-2     	       1	4000000000 ns/op	      2400 tasks/s
BenchmarkPeerDask-2                                  	       1	4000000000 ns/op	       450.0 proc-tasks/s	       600.0 noop-tasks/s
BenchmarkDispatchLatency/sqlite-2                    	       1	1 ns/op	         0.40 add-leased-p50-ms	         1.20 add-leased-p99-ms
BenchmarkDispatchLatency/postgres-2                  	       1	1 ns/op	         0.50 add-leased-p50-ms	        25.0 add-leased-p99-ms
some log line the reader skips
PASS
`

func TestReport(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "bench.out")
	md := filepath.Join(dir, "BENCHMARKS.md")
	require.NoError(t, os.WriteFile(in, []byte(sample), 0o644))
	require.NoError(t, os.WriteFile(md, []byte("# Benchmarks\n\nHand-written notes.\n"), 0o644))
	js := filepath.Join(dir, "bench.json")
	require.NoError(t, run(in, js, md))
	out, err := os.ReadFile(md)
	require.NoError(t, err)
	doc := string(out)
	require.True(t, strings.HasPrefix(doc, "# Benchmarks\n\nHand-written notes.\n"), "the hand-written part is kept")
	require.Contains(t, doc, "| End to end, real-process tasks | **1,600 tasks/s** (EndToEnd/sqlite/pilots=2/slots=4) |  | ≥ 1,500 tasks/s | ✔ |")
	require.Contains(t, doc, "… vs Dask distributed, same /bin/true tasks | **3.56 ×**")
	require.Contains(t, doc, "| Dispatch latency to an idle pilot, p99 | **25.0 ms** (DispatchLatency/postgres)")
	require.Contains(t, doc, "not measured: no Snakemake, jobs/s figure in this run")
	require.Contains(t, doc, "Test CPU @ 2.0GHz")

	// Run again: the generated section is replaced, not appended.
	require.NoError(t, os.WriteFile(in, []byte(strings.ReplaceAll(sample, "1600 tasks/s", "1700 tasks/s")), 0o644))
	require.NoError(t, run(in, js, md))
	out, err = os.ReadFile(md)
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(string(out), beginMark))
	require.Contains(t, string(out), "**1,700 tasks/s**")
	require.NotContains(t, string(out), "**1,600 tasks/s**")
	raw, err := os.ReadFile(js)
	require.NoError(t, err)
	require.Contains(t, string(raw), `"tasks/s": 1700`)
}

func TestReportRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "bench.out")
	require.NoError(t, os.WriteFile(in, []byte("PASS\nok  pkg 1s\n"), 0o644))
	err := run(in, filepath.Join(dir, "j"), filepath.Join(dir, "m"))
	require.ErrorContains(t, err, "no benchmark results")

	require.NoError(t, os.WriteFile(in, []byte("BenchmarkX-2  1  notanumber ns/op\n"), 0o644))
	err = run(in, filepath.Join(dir, "j"), filepath.Join(dir, "m"))
	require.ErrorContains(t, err, "bench.out:1")

	md := filepath.Join(dir, "BENCHMARKS.md")
	require.NoError(t, os.WriteFile(in, []byte(sample), 0o644))
	require.NoError(t, os.WriteFile(md, []byte(endMark+"\n"+beginMark+"\n"), 0o644))
	require.ErrorContains(t, run(in, filepath.Join(dir, "j"), md), "not in order")
}
