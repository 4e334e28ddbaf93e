#!/usr/bin/env bash
# Issue 19 (3): the warm spare interpreter against uvicorn --reload and a fork from the
# preloader, save → new code served, in one sitting on the shared FastAPI fixture
# (../shared/bench/app), with ../shared/bench/reload_probe.py; then the per-phase breakdown of
# each devrun row (bench/reload_breakdown.py) and the waiting spare's RSS.
# Usage: bench/spare.sh [N]. PY (default .venv-test/bin/python) needs fastapi and uvicorn.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-15}
port=${BENCH_PORT:-8413}
py=${PY:-$PWD/.venv-test/bin/python}
probe=$PWD/../shared/bench/reload_probe.py
[ -f "$probe" ] || probe=/work/shared/bench/reload_probe.py
cargo build --release --quiet
devrun=$PWD/target/release/devrun
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for dir in plain spare; do
  mkdir -p "$scratch/$dir"
  cp -r "$(dirname "$probe")/app" "$scratch/$dir/"
done
printf '[server]\npreload = "auto"\npreload_method = "spare"\n' >"$scratch/spare/devrun.toml"
uv="$py -m uvicorn app.main:app --port $port"
run() {
  local dir=$1 label=$2 cmd=$3
  python3 "$probe" --quiet --label "$label" --cwd "$scratch/$dir" --results-dir "$scratch/results" \
    -n "$n" --port "$port" --edit app/version.py --cmd "$cmd" | tail -1
}
run plain "fastapi uvicorn-reload" "$uv --reload"
run plain "fastapi devrun-cold" "$devrun --port $port -- $uv"
run plain "fastapi devrun-preload-fork" "$devrun --port $port --preload -- $uv"
run spare "fastapi devrun-preload-spare" "$devrun --port $port -- $uv"
for mode in "" --preload --spare; do
  echo "breakdown: fastapi ${mode:-cold}"
  python3 bench/reload_breakdown.py --devrun "$devrun" --python "$py" --app-dir "$scratch/plain" \
    -n "$n" --port "$port" $mode | tail -9
done
