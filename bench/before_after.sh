#!/usr/bin/env bash
# Reload latency of two devrun binaries in one sitting, alternating, with
# the shared reload_probe.py (DEVRUN_BENCH_SHARED, default /work/shared/bench) on its FastAPI
# fixture app.
# Usage: bench/before_after.sh BEFORE_BINARY AFTER_BINARY [N] [ROUNDS]
# (needs .venv-test from scripts/test). Prints the probe's summary line of each run.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1 after=$2 n=${3:-15} rounds=${4:-2}
py=$PWD/.venv-test/bin/python
shared=${DEVRUN_BENCH_SHARED:-/work/shared/bench}
probe=$shared/reload_probe.py
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r "$shared/app" "$scratch/"
for round in $(seq "$rounds"); do
  for which in before after; do
    binary=${!which}
    python3 "$probe" --quiet --label "$which-$round" --cwd "$scratch" \
      --results-dir "$scratch/results" -n "$n" --port 8011 --edit app/version.py \
      --cmd "$binary --port 8011 -- $py -m uvicorn app.main:app --port 8011" </dev/null 2>&1 | grep "reload median"
  done
done
