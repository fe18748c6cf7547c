#!/usr/bin/env bash
# GPU check in one call (at most ~8 minutes on one GPU): kernels, op speed, inference, training
# step, InstaOrderNet batching and a short train_net.py run; see tools/gpu_check.py.
#
#   bash tools/gpu_check.sh OUT_DIR [--wheels DIR] [--venv DIR] [tools/gpu_check.py options]
#
# OUT_DIR receives gpu_check.json, gpu_check.log, install.log and the steps' work files (also the
# kernel build cache and compiler caches). With --wheels DIR (a machine without internet), a
# virtual environment that sees the base Python's packages is created (--venv, default
# OUT_DIR/venv) and whatever the project's dependencies, ninja and pytest still lack is installed
# from DIR only (pip --no-index --find-links DIR): on a bare Python that is everything, torch
# included. The project itself runs from this checkout. Without --wheels the current Python
# (PYTHON, default python3) must already have them. docs/benchmarks.md ("GPU") lists the wheels.
set -euo pipefail

usage="usage: $0 OUT_DIR [--wheels DIR] [--venv DIR] [--dry-run] [--steps NAME ...]"
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
mkdir -p "$1"
out=$(cd "$1" && pwd)
shift
wheels=""
venv=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels=$(cd "${2:?--wheels needs a folder}" && pwd); shift 2 ;;
    --venv) venv="${2:?--venv needs a folder}"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"

if [ -n "$wheels" ]; then
  venv="${venv:-$out/venv}"
  echo "installing from $wheels into $venv (log: $out/install.log)"
  {
    "$python" -m venv --system-site-packages "$venv"
    # the project's dependencies as pyproject.toml declares them, plus the check's own tools
    mapfile -t deps < <("$venv/bin/python" -c \
      'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
    "$venv/bin/pip" install --no-index --find-links "$wheels" "${deps[@]}" ninja pytest
  } >"$out/install.log" 2>&1 || { echo "install failed: see $out/install.log" >&2; exit 1; }
  python="$venv/bin/python"
  export PATH="$venv/bin:$PATH"  # ninja for the just-in-time kernel build
fi

PYTHONPATH="$PWD" exec "$python" tools/gpu_check.py --output-dir "$out" ${args[@]+"${args[@]}"}
