#!/usr/bin/env bash
# Starts scalebox-broker on a fresh embedded SQLite store, creates the
# app-primes example with the CLI, adds tasks and shows the app.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
work=$(mktemp -d)
trap 'kill $broker_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SCALEBOX_BROKER=http://127.0.0.1:$port SCALEBOX_TOKEN_FILE=$work/token
"$BIN/scalebox-broker" --db "$work/scalebox.db" --listen "127.0.0.1:$port" --token-file "$work/token" --log-level warn &
broker_pid=$!
for _ in $(seq 100); do curl -fsS "$SCALEBOX_BROKER/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

echo "== scalebox app validate examples/app-primes/app.yaml"
"$BIN/scalebox" app validate examples/app-primes/app.yaml
echo "== scalebox app create"
app_id=$("$BIN/scalebox" --json app create examples/app-primes/app.yaml | python3 -c 'import json,sys; print(json.load(sys.stdin)["app_id"])')
echo "app_id=$app_id"
echo "== scalebox task add (start task 1000 to the router)"
APP_ID=$app_id "$BIN/scalebox" task add --sink-module mr-module 1000
echo "== scalebox task add --task-file (10 calc chunks)"
for i in $(seq 0 9); do printf 'my-module,%09d_%09d\n' $((i*100+1)) $((i*100+100)); done > "$work/tasks.txt"
APP_ID=$app_id "$BIN/scalebox" task add --task-file "$work/tasks.txt"
echo "== scalebox semaphore"
APP_ID=$app_id SEMAPHORE_AUTO_CREATE=yes "$BIN/scalebox" semaphore increment-n app-primes:sum_value 0
echo "== scalebox app show $app_id"
"$BIN/scalebox" app show "$app_id"
echo "== scalebox task list --app-id $app_id"
"$BIN/scalebox" task list --app-id "$app_id"
