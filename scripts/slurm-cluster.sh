#!/usr/bin/env bash
# A real single-node Slurm cluster on loopback, run as root, for tests and
# benchmarks. Everything (munge key and socket, slurm.conf, state, spool,
# logs, pid files) lives under DIR, so several clusters can run side by side.
#
#   scripts/slurm-cluster.sh start  DIR   # idempotent: a running cluster is left alone
#   scripts/slurm-cluster.sh stop   DIR   # cancels its jobs, stops slurmctld, slurmd, munged of DIR
#   scripts/slurm-cluster.sh status DIR   # exit 0 if the controller answers and the node is usable
#   scripts/slurm-cluster.sh env    DIR   # prints `export SLURM_CONF=…` for clients
#
# Needs Debian's slurmctld slurmd slurm-client munge (slurm-wlm 22.05).
# SLURM_CLUSTER_CPUS (default 8) is the number of CPUs the node advertises
# (SlurmdParameters=config_overrides lets it advertise more than it has);
# SLURM_CLUSTER_TIMEOUT (default 60) bounds the wait for readiness, in seconds.
set -euo pipefail

die() { echo "slurm-cluster: $*" >&2; exit 1; }
usage() { die "usage: $0 start|stop|status|env DIR"; }

[ $# -eq 2 ] || usage
action=$1
mkdir -p "$2" 2>/dev/null || true
[ -d "$2" ] || die "no directory $2"
DIR=$(cd "$2" && pwd)
CONF=$DIR/slurm.conf
CPUS=${SLURM_CLUSTER_CPUS:-8}
TIMEOUT=${SLURM_CLUSTER_TIMEOUT:-60}
export SLURM_CONF=$CONF

# alive PIDFILE NAME: the pid in PIDFILE is a live process whose command is NAME.
alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2" || return 1
}

# stop_pid PIDFILE NAME: SIGTERM, then SIGKILL after 10 s; waits for exit.
stop_pid() {
  local pid i
  alive "$1" "$2" || { rm -f "$1"; return 0; }
  pid=$(cat "$1")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do
    [ -d "/proc/$pid" ] || break
    # a zombie is gone for our purposes
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
    sleep 0.1
  done
  if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$1"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ready: the controller answers and the node is idle, mixed or allocated.
ready() {
  scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
  sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated|completing)$'
}

write_conf() {
  local host node ctld_port slurmd_port mem
  host=$(hostname -s)
  node=$(slurmd -C | head -1)
  [[ $node == NodeName=* ]] || die "unexpected slurmd -C output: $node"
  mem=$(sed -nE 's/.*RealMemory=([0-9]+).*/\1/p' <<<"$node")
  [ -n "$mem" ] || die "no RealMemory in: $node"
  ctld_port=$(free_port)
  slurmd_port=$(free_port)
  while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done
  # The node line of `slurmd -C`, reshaped so that it can advertise $CPUS
  # CPUs (one socket of $CPUS cores) with config_overrides.
  cat >"$CONF.tmp" <<EOF
# Written by scalebox scripts/slurm-cluster.sh for $DIR
ClusterName=sbx$(printf '%s' "$DIR" | cksum | cut -d' ' -f1)
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
KillWait=5
MinJobAge=300
ReturnToService=2
SlurmdParameters=config_overrides
InactiveLimit=0
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

start_munge() {
  alive "$DIR/run/munged.pid" munged && return 0
  mkdir -p "$DIR/munge" "$DIR/run" "$DIR/log"
  chmod 0700 "$DIR/munge"
  if [ ! -s "$DIR/munge/munge.key" ]; then
    mungekey -c -k "$DIR/munge/munge.key" >/dev/null
  fi
  chmod 0600 "$DIR/munge/munge.key"
  rm -f "$DIR/munge/munge.socket" "$DIR/munge/munge.socket.lock"
  # --force: the temp dir's parents (e.g. /tmp, world-writable with the
  # sticky bit) would otherwise be refused by munged's directory checks.
  munged --force \
    --socket="$DIR/munge/munge.socket" \
    --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/run/munged.pid" \
    --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed" \
    || die "munged failed to start: $(tail -5 "$DIR/log/munged.log" 2>/dev/null)"
}

start() {
  for b in slurmctld slurmd sinfo scontrol munged mungekey python3; do
    command -v "$b" >/dev/null || die "$b not found (apt-get install -y slurmctld slurmd slurm-client munge)"
  done
  if alive "$DIR/run/slurmctld.pid" slurmctld && alive "$DIR/run/slurmd.pid" slurmd &&
    alive "$DIR/run/munged.pid" munged && ready; then
    echo "slurm-cluster: already running in $DIR"
    return 0
  fi
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
  [ -s "$CONF" ] || write_conf
  start_munge
  if ! alive "$DIR/run/slurmctld.pid" slurmctld; then
    slurmctld -f "$CONF" || die "slurmctld failed: $(tail -5 "$DIR/log/slurmctld.log" 2>/dev/null)"
  fi
  if ! alive "$DIR/run/slurmd.pid" slurmd; then
    slurmd -f "$CONF" || die "slurmd failed: $(tail -5 "$DIR/log/slurmd.log" 2>/dev/null)"
  fi
  local deadline=$((SECONDS + TIMEOUT))
  until ready; do
    if [ $SECONDS -ge $deadline ]; then
      sinfo -N 2>&1 | sed 's/^/  /' >&2 || true
      tail -5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 2>/dev/null || true
      die "cluster in $DIR not ready after ${TIMEOUT}s"
    fi
    # a dead daemon will not come back: fail fast (the daemon writes its
    # pid file a moment after it forks: no pid file yet is not death, for a
    # while, on a loaded machine)
    if ! alive "$DIR/run/slurmctld.pid" slurmctld && { [ -s "$DIR/run/slurmctld.pid" ] || [ $SECONDS -ge $((deadline - TIMEOUT + 10)) ]; }; then
      die "slurmctld died: $(tail -5 "$DIR/log/slurmctld.log" 2>/dev/null)"
    fi
    sleep 0.1
  done
  echo "slurm-cluster: running in $DIR (SLURM_CONF=$CONF)"
}

stop() {
  # Cancel this cluster's jobs and give them KillWait to go, so that no job
  # process outlives the cluster (slurmstepd survives slurmd otherwise).
  if alive "$DIR/run/slurmctld.pid" slurmctld && [ -s "$CONF" ]; then
    scancel --full --quiet -u "$(id -un)" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while [ $SECONDS -lt $deadline ] &&
      squeue -h -t running,completing,configuring,suspended -o %i 2>/dev/null | grep -q .; do
      sleep 0.2
    done
  fi
  stop_pid "$DIR/run/slurmd.pid" slurmd
  stop_pid "$DIR/run/slurmctld.pid" slurmctld
  stop_pid "$DIR/run/munged.pid" munged
  echo "slurm-cluster: stopped in $DIR"
}

status() {
  local rc=0 d
  for d in munged slurmctld slurmd; do
    if alive "$DIR/run/$d.pid" "$d"; then echo "$d: running (pid $(cat "$DIR/run/$d.pid"))"; else
      echo "$d: stopped"
      rc=1
    fi
  done
  if [ $rc -eq 0 ]; then
    sinfo -N -h -o '%N %T %c CPUs %m MB' 2>&1 | sed 's/^/node: /' || rc=1
    ready || rc=1
  fi
  return $rc
}

case $action in
start) start ;;
stop) stop ;;
status) status ;;
env) echo "export SLURM_CONF=$(printf '%q' "$CONF")" ;;
*) usage ;;
esac
