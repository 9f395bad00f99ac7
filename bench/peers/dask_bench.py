#!/usr/bin/python3
"""Dask distributed, side by side with Scalebox's EndToEnd benchmark.

Starts a LocalCluster of W worker processes (1 thread each) and measures
N no-op tasks (a Python function returning its argument) and N tasks that
each run the real process ``/bin/true task-NNNNNNN {}`` (the argv shape
the Scalebox pilot uses) through subprocess.run. Tasks are submitted with
client.map and gathered; each figure is timed from the submit to the last
result gathered. The cluster's start and a warm-up of 2*W tasks of each
kind (so that every worker has the function loaded, as Scalebox's pilots
are long-polling when its clock starts) are not timed.

Usage: dask_bench.py [WORKERS [TASKS]]   (defaults 2 and 5000)

Prints one JSON line on stdout:
  {"peer":"dask","version":...,"workers":W,"tasks":N,
   "noop_tasks_per_s":...,"proc_tasks_per_s":...,
   "noop_s":...,"proc_s":...,"noop_cpu_us_per_task":...,"proc_cpu_us_per_task":...}
The CPU figures are the CPU time of this process, the worker processes
and the programs they ran, over the timed window, per task.

Run it with Debian's /usr/bin/python3 (python3-distributed).
"""

import json
import logging
import subprocess
import sys
import time
import warnings


def noop(x):
    return x


def run_true(body):
    # The pilot exec's the module's command with argv (body, headers).
    return subprocess.run(["/bin/true", body, "{}"], check=True).returncode


def cpu_seconds(procs):
    """CPU time of the given processes and of their reaped children."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except Exception:  # a process that has gone
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def measure(client, procs, fn, args):
    """Submit fn over args with client.map, gather; wall and CPU seconds."""
    c0 = cpu_seconds(procs)
    t0 = time.perf_counter()
    futures = client.map(fn, args)
    results = client.gather(futures)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(procs) - c0
    del futures
    return wall, cpu, results


def main(argv):
    workers = int(argv[1]) if len(argv) > 1 else 2
    tasks = int(argv[2]) if len(argv) > 2 else 5000

    # Quiet stderr: distributed logs at WARNING by default, and warns about
    # things the benchmark does not care about.
    warnings.simplefilter("ignore")
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    logging.getLogger("tornado").setLevel(logging.CRITICAL)

    import dask
    import distributed
    import psutil
    from distributed import Client, LocalCluster

    dask.config.set({"distributed.admin.tick.limit": "1h"})  # no "event loop unresponsive" warnings
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    )
    client = Client(cluster)
    try:
        client.wait_for_workers(workers)
        me = psutil.Process()
        procs = [me] + me.children(recursive=True)  # the worker processes

        # Warm-up (not timed), with arguments the timed runs do not use, so
        # that no result is served from a key already in memory.
        warm = 2 * workers
        measure(client, procs, noop, [-1 - i for i in range(warm)])
        measure(client, procs, run_true, ["warm-%07d" % i for i in range(warm)])

        noop_s, noop_cpu, res = measure(client, procs, noop, list(range(tasks)))
        if res != list(range(tasks)):
            raise SystemExit("dask_bench: no-op results differ from their arguments")
        proc_s, proc_cpu, res = measure(client, procs, run_true, ["task-%07d" % i for i in range(tasks)])
        if any(r != 0 for r in res) or len(res) != tasks:
            raise SystemExit("dask_bench: a /bin/true task failed")
    finally:
        client.close()
        cluster.close()

    print(json.dumps({
        "peer": "dask",
        "version": distributed.__version__,
        "dask_version": dask.__version__,
        "python": "%d.%d.%d" % sys.version_info[:3],
        "workers": workers,
        "tasks": tasks,
        "noop_tasks_per_s": tasks / noop_s,
        "proc_tasks_per_s": tasks / proc_s,
        "noop_s": noop_s,
        "proc_s": proc_s,
        "noop_cpu_us_per_task": noop_cpu * 1e6 / tasks,
        "proc_cpu_us_per_task": proc_cpu * 1e6 / tasks,
    }), flush=True)


if __name__ == "__main__":  # the workers are spawned: they import this file
    main(sys.argv)
