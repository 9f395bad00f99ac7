#!/usr/bin/env bash
# Installs the peers that `make bench` measures side by side with Scalebox,
# from Debian's packages: Dask distributed and Snakemake. (Slurm comes from
# scripts/slurm-cluster.sh.) Without root it only says what is missing; the
# benchmarks of a missing peer are skipped, and the report says so.
set -euo pipefail
need=()
/usr/bin/python3 -c 'import distributed' 2>/dev/null || need+=(python3-distributed)
command -v snakemake >/dev/null || need+=(snakemake)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-peers: missing ${need[*]}; run as root: apt-get install ${need[*]}" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
