// Command pbsdouble is a TEST DOUBLE of OpenPBS's qsub, qstat and qdel,
// used by Scalebox's tests because no PBS server is packaged for Debian.
// It is not product code and not a scheduler: every job runs at once as a
// local process.
//
// It dispatches on argv[0] (qsub, qstat, qdel as symlinks) or on its first
// argument. State lives in $PBS_DOUBLE_DIR (one JSON file per job, a flock
// as the "server" lock). qsub starts a detached supervisor (`pbsdouble
// _run ID`) that runs the job script with bash in its own process group,
// with the PBS_* environment, -o/-e/-j oe files, the walltime (SIGTERM,
// then SIGKILL after $PBS_DOUBLE_KILL_DELAY seconds, default 10; Exit_status
// -29) and -J arrays (all subjobs at once). qdel of a queued/held job ends
// it without Exit_status; of a running one SIGTERMs its group (Exit_status
// 256+signal, 271 for SIGTERM). Output follows OpenPBS 23.06 as recorded
// in pbs/testdata/samples, including its quirks: backslashes in
// Variable_List are not escaped, "timestamp" is "" when time%256 == 0, no
// trailing newline when there are no jobs.
//
// Other settings: PBS_DOUBLE_SERVER (server name, default the short host
// name), PBS_DOUBLE_REFUSE_ROOT=1 (refuse root like a server without
// acl_roots: "qsub: Bad UID for job execution", rc 175),
// PBS_DOUBLE_START_DELAY (a Go duration jobs stay queued before running).
package main

import (
	"os"
	"path/filepath"
)

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	switch name {
	case "qsub", "qstat", "qdel":
	default:
		if len(args) == 0 {
			fatal(2, "usage: pbsdouble qsub|qstat|qdel|_run ARGS (a test double of OpenPBS)")
		}
		name, args = args[0], args[1:]
	}
	st, err := openState()
	if err != nil {
		fatal(1, "%s: %v", name, err)
	}
	switch name {
	case "qsub":
		os.Exit(qsub(st, args))
	case "qstat":
		os.Exit(qstat(st, args))
	case "qdel":
		os.Exit(qdel(st, args))
	case "_run":
		supervise(st, args[0])
	default:
		fatal(2, "pbsdouble: unknown command %q", name)
	}
}
