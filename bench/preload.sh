#!/usr/bin/env bash
# Issues 12 and 19: save → new code served, with ../shared/bench/reload_probe.py, in one sitting:
# uvicorn --reload, devrun (cold start each generation) and devrun --preload, each with devrun's
# fast stop (the default) and with uvicorn's own (--no-fast-stop), on the shared
# FastAPI fixture and on bench/heavy_app (FastAPI + SQLAlchemy + pydantic-settings + httpx + pandas:
# a cold start, launch → ready, of about 1.2 s here, as the issue asks for ≥ 1 s).
# Usage: bench/preload.sh [N]. DEVRUN_BEFORE=/path/to/an/older/devrun adds its --preload rows
# (and breakdown) to the same sitting, for before/after quotes. Needs .venv-bench (made here once; never used by CI):
# fastapi, uvicorn[standard], sqlalchemy, pydantic-settings, httpx, pandas.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-15}
port=${BENCH_PORT:-8411}
venv=.venv-bench
if ! "$venv/bin/python" -c 'import fastapi, uvicorn, sqlalchemy, pydantic_settings, httpx, pandas' 2>/dev/null; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check fastapi 'uvicorn[standard]' \
    sqlalchemy pydantic-settings httpx pandas
fi
py=$PWD/$venv/bin/python
# numpy's OpenBLAS starts a thread pool at import, which preload refuses (README): one BLAS
# thread makes pandas preloadable. Set for every row, uvicorn --reload's too, so they compare.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
probe=$PWD/../shared/bench/reload_probe.py
[ -f "$probe" ] || probe=/work/shared/bench/reload_probe.py
cargo build --release --quiet
devrun=$PWD/target/release/devrun
before=${DEVRUN_BEFORE:-}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/fastapi" "$scratch/heavy"
cp -r "$(dirname "$probe")/app" "$scratch/fastapi/"
cp -r bench/heavy_app/app "$scratch/heavy/"
run() {
  local dir=$1 label=$2 cmd=$3
  python3 "$probe" --quiet --label "$label" --cwd "$scratch/$dir" --results-dir "$scratch/results" \
    -n "$n" --port $port --edit app/version.py --cmd "$cmd" | tail -1
}
for dir in fastapi heavy; do
  uv="$py -m uvicorn app.main:app --port $port"
  run "$dir" "$dir uvicorn-reload" "$uv --reload"
  run "$dir" "$dir devrun-cold-stockstop" "$devrun --port $port --no-fast-stop -- $uv"
  run "$dir" "$dir devrun-cold" "$devrun --port $port -- $uv"
  run "$dir" "$dir devrun-preload-stockstop" "$devrun --port $port --preload --no-fast-stop -- $uv"
  run "$dir" "$dir devrun-preload" "$devrun --port $port --preload -- $uv"
  # Issue 19 (3): a warm spare interpreter instead of a fork (a devrun.toml in a copy).
  mkdir -p "$scratch/$dir-spare" && cp -r "$scratch/$dir/app" "$scratch/$dir-spare/"
  printf '[server]\npreload = "auto"\npreload_method = "spare"\n' >"$scratch/$dir-spare/devrun.toml"
  run "$dir-spare" "$dir devrun-preload-spare" "$devrun --port $port -- $uv"
  if [ -n "$before" ]; then
    run "$dir" "$dir devrun-preload-before" "$before --port $port --preload -- $uv"
  fi
done
# Per phase, devrun cold and preloaded (with the fast stop, and with uvicorn's own), on both
# fixtures.
for dir in fastapi heavy; do
  for mode in "" --preload --spare "--no-fast-stop" "--preload --no-fast-stop"; do
    echo "breakdown: $dir ${mode:-cold}"
    python3 bench/reload_breakdown.py --devrun "$devrun" --python "$py" --app-dir "$scratch/$dir" \
      -n "$n" --port "$port" $mode | tail -8
  done
  if [ -n "$before" ]; then
    echo "breakdown: $dir --preload, before"
    python3 bench/reload_breakdown.py --devrun "$before" --python "$py" --app-dir "$scratch/$dir" \
      -n "$n" --port "$port" --preload | tail -8
  fi
done
# The preloader's RSS (heavy fixture), and one cold import time for scale.
cd "$scratch/heavy"
"$devrun" --port $port --preload -- $py -m uvicorn app.main:app --port $port >"$scratch/rss.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf localhost:$port/health >/dev/null && break; sleep 0.1; done
for child in $(pgrep -P "$pid"); do
  echo "preloader pid $child: $(grep VmRSS /proc/"$child"/status)"
  for fork in $(pgrep -P "$child"); do
    echo "  its fork $fork: $(grep VmRSS /proc/"$fork"/status); ps: $(ps -o args= -p "$fork" | cut -c1-100)"
  done
done
kill -INT "$pid"; wait "$pid" || true
echo "cold import of app.main (heavy): $("$py" -c 'import time; t=time.perf_counter(); import app.main; print(round(time.perf_counter()-t, 3))') s"
