#!/usr/bin/env bash
# Issue 19: the cold rows interleaved (the machine's load drifts more than a sequential sitting
# can hide): R rounds of N saves each of `uvicorn --reload`, devrun cold with uvicorn's own stop
# (--no-fast-stop), devrun cold with the fast stop, and the floor of any cold restart (the probe
# itself SIGKILLs uvicorn at the save and starts it fresh: no detection, no stop, only a new
# interpreter's start), on FIXTURE (fastapi: the shared FastAPI fixture; heavy:
# bench/heavy_app), with ../shared/bench/reload_probe.py. Prints each run's line, then the
# pooled medians and their ratio to `uvicorn --reload`.
# Usage: R=3 N=8 bench/fast_stop_cold.sh [fastapi|heavy]. Needs .venv-bench (bench/preload.sh).
# DEVRUN_BEFORE=/path/to/an/older/devrun adds its cold row to each round, for before/after.
set -euo pipefail
cd "$(dirname "$0")/.."
fixture=${1:-fastapi}
py=$PWD/.venv-bench/bin/python
port=${BENCH_PORT:-8411}
n=${N:-8}
probe=$PWD/../shared/bench/reload_probe.py
[ -f "$probe" ] || probe=/work/shared/bench/reload_probe.py
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
cargo build --release --quiet
devrun=$PWD/target/release/devrun
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/app"
case $fixture in
  fastapi) cp -r "$(dirname "$probe")/app" "$scratch/app/" ;;
  heavy) cp -r bench/heavy_app/app "$scratch/app/" ;;
  *) echo "fixture: fastapi or heavy" >&2; exit 2 ;;
esac
uv="$py -m uvicorn app.main:app --port $port"
for r in $(seq "${R:-3}"); do
  for row in "uvicorn-reload|$uv --reload" \
             "devrun-cold-stockstop|$devrun --port $port --no-fast-stop -- $uv" \
             "devrun-cold|$devrun --port $port -- $uv" \
             "floor-kill-and-start|$uv" \
             ${DEVRUN_BEFORE:+"devrun-cold-before|$DEVRUN_BEFORE --port $port -- $uv"}; do
    label=${row%%|*}
    floor=()
    [ "$label" = floor-kill-and-start ] && floor=(--restart-self --restart-signal KILL)
    python3 "$probe" --label "$label" --cwd "$scratch/app" --results-dir "$scratch/results" \
      -n "$n" --port "$port" --edit app/version.py "${floor[@]}" --cmd "${row#*|}" 2>&1 \
      | tee -a "$scratch/log" | tail -1
  done
done
python3 - "$scratch/log" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"\s*\[(\S+)\] reload \d+/\d+: ([\d.]+)s", line)
    if m:
        rows.setdefault(m[1], []).append(float(m[2]))
base = statistics.median(rows["uvicorn-reload"])
for label, values in rows.items():
    median = statistics.median(values)
    print(f"{label:24s} median {median:.3f} s over {len(values)} saves ({median / base:.2f} x)")
PY
