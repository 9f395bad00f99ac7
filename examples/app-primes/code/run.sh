#!/bin/bash
# Calc module of app-primes. $1 = "<start>_<end>" (e.g. 000000001_000000100,
# both inclusive). Counts the primes in the range with a segmented sieve in
# awk and returns the count to the router as the header part_primes.
# With task_batch_size > 1 the bodies of the batch are the second field of
# each line of ${WORK_DIR}/input-messages.txt ("task_id,body,headers").
set -euo pipefail

calc() {
    if ! [[ ${1:-} =~ ^([0-9]+)_([0-9]+)$ ]]; then
        echo "calc: body must be <start>_<end>, got '${1:-}'" >&2
        exit 110
    fi
    local start=$((10#${BASH_REMATCH[1]}))
    local end=$((10#${BASH_REMATCH[2]}))
    if ((start > end)); then
        echo "calc: empty range '$1'" >&2
        exit 111
    fi

    local num
    num=$(awk -v s="$start" -v e="$end" 'BEGIN {
        if (s < 2) s = 2
        if (e < s) { print 0; exit }
        # integer square root by Newton steps (no sqrt: busybox awk may lack libm)
        r = e; while (r * r > e) r = int((r + int(e / r)) / 2)
        while ((r + 1) * (r + 1) <= e) r++
        # small primes up to sqrt(e)
        for (i = 2; i <= r; i++) small[i] = 1
        for (i = 2; i * i <= r; i++) if (small[i]) for (j = i * i; j <= r; j += i) small[j] = 0
        # cross out their multiples inside [s, e]
        for (i = 2; i <= r; i++) if (small[i]) {
            j = int((s + i - 1) / i) * i
            if (j < i * i) j = i * i
            for (; j <= e; j += i) comp[j - s] = 1
        }
        n = 0
        for (k = s; k <= e; k++) if (!((k - s) in comp)) n++
        print n
    }')

    echo "primes in [$start, $end]: $num"
    scalebox task add -H "part_primes=$num" "$1"
}

if ((${TASK_BATCH_SIZE:-1} > 1)) && [[ -f ${WORK_DIR}/input-messages.txt ]]; then
    while IFS=, read -r _ body _; do
        calc "$body"
    done <"${WORK_DIR}/input-messages.txt"
else
    calc "${1:-}"
fi
