#!/bin/bash
# Main router of app-primes. $1 = task body, $2 = task headers (JSON).
#
# - No from_module header (the start task): $1 is N. Split [1, N] into
#   NUM_GROUPS ranges of ceil(N/NUM_GROUPS) numbers and emit one calc task
#   per range, "my-module,<start>_<end>" (9-digit, zero-padded), into
#   ${WORK_DIR}/sink-tasks.txt.
# - from_module=my-module: add the part_primes header to the semaphore
#   app-primes:sum_value.
set -euo pipefail

body=${1:-}
headers=${2:-}
[[ -n $headers ]] || headers='{}'

# header NAME: value of a string or number field of the headers JSON.
header() {
    local re="\"$1\"[[:space:]]*:[[:space:]]*(\"([^\"]*)\"|([-0-9.]+))"
    if [[ $headers =~ $re ]]; then
        echo "${BASH_REMATCH[2]}${BASH_REMATCH[3]}"
    fi
}

from_module=$(header from_module)
case $from_module in
"")
    if ! [[ $body =~ ^[0-9]+$ ]] || ((10#$body < 1)); then
        echo "router: start task body must be a positive integer, got '$body'" >&2
        exit 110
    fi
    : "${WORK_DIR:?WORK_DIR is not set}"
    total=$((10#$body))
    groups=${NUM_GROUPS:-10}
    if ! [[ $groups =~ ^[0-9]+$ ]] || ((groups < 1)); then
        echo "router: NUM_GROUPS must be a positive integer, got '$groups'" >&2
        exit 112
    fi
    size=$(((total + groups - 1) / groups))
    for ((start = 1; start <= total; start += size)); do
        end=$((start + size - 1))
        ((end > total)) && end=$total
        printf 'my-module,%09d_%09d\n' "$start" "$end"
    done >>"${WORK_DIR}/sink-tasks.txt"
    ;;
my-module)
    n=$(header part_primes)
    if ! [[ $n =~ ^[0-9]+$ ]]; then
        echo "router: task '$body' from my-module has no numeric part_primes header" >&2
        exit 110
    fi
    SEMAPHORE_AUTO_CREATE=yes scalebox semaphore increment-n app-primes:sum_value "$n"
    ;;
*)
    echo "router: unexpected task '$body' from module '$from_module'" >&2
    exit 110
    ;;
esac
