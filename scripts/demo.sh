#!/usr/bin/env bash
# The end-to-end demo: a broker on a fresh embedded SQLite store, then
# Scalebox's app-primes pipeline (router → 10 calc tasks → router) run by a
# pilot on this machine with `scalebox run`, then the result and the task
# perspective read back with the CLI. Fails unless the sum is 168.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$root/bin}
work=$(mktemp -d)
broker_pid=
cleanup() {
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SCALEBOX_BROKER=http://127.0.0.1:$port SCALEBOX_TOKEN_FILE=$work/token PATH=$BIN:$PATH
scalebox-broker --db "$work/scalebox.db" --listen "127.0.0.1:$port" --token-file "$work/token" --log-level warn &
broker_pid=$!
for _ in $(seq 100); do scalebox app list >/dev/null 2>&1 && break; sleep 0.1; done

cd "$root/examples/app-primes"
echo "== scalebox app validate"
scalebox app validate
echo "== echo 1000 | scalebox run"
out=$(echo 1000 | scalebox run)
echo "$out"
app_id=$(echo "$out" | head -1 | sed -E 's/[^0-9]//g')
echo "== scalebox semaphore get app-primes:sum_value"
sum=$(APP_ID=$app_id scalebox semaphore get app-primes:sum_value)
echo "$sum"
echo "== scalebox task list --app-id $app_id --module my-module"
scalebox task list --app-id "$app_id" --module my-module
first=$(scalebox --json task list --app-id "$app_id" --module my-module --limit 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["tasks"][0]["id"])')
echo "== scalebox task show $first"
scalebox task show "$first"
if [ "$sum" != 168 ]; then
  echo "demo: expected 168 primes below 1000, got $sum" >&2
  exit 1
fi
echo "demo: OK (168 primes in [1, 1000])"
