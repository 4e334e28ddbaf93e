#!/usr/bin/env bash
# Reload latency, side by side in one sitting, with ../shared/bench/reload_probe.py:
# uvicorn --reload, devrun, and the graceful and hard restart-by-hand floors; then devrun's
# per-phase breakdown. Usage: bench/compare.sh [N]   (needs .venv-test from scripts/test)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-45}
py=$PWD/.venv-test/bin/python
probe=../shared/bench/reload_probe.py
cargo build --release --quiet
devrun=$PWD/target/release/devrun
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r ../shared/bench/app "$scratch/"
run() {
  python3 "$probe" --quiet --label "$1" --cwd "$scratch" --results-dir "$scratch/results" \
    -n "$n" --port 8011 --edit app/version.py --cmd "$2" "${@:3}" | tail -1
}
run uvicorn-reload "$py -m uvicorn app.main:app --port 8011 --reload"
run devrun "$devrun --port 8011 -- $py -m uvicorn app.main:app --port 8011"
run floor-graceful "$py -m uvicorn app.main:app --port 8011" --restart-self
run floor-hard "$py -m uvicorn app.main:app --port 8011" --restart-self --restart-signal KILL
python3 bench/reload_breakdown.py --devrun "$devrun" --python "$py" --app-dir "$scratch" -n "$n"
