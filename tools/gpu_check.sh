#!/usr/bin/env bash
# GPU check in one call (at most ~8 minutes on one GPU): kernels, op speed, inference, training
# step, InstaOrderNet batching and a short train_net.py run; see tools/gpu_check.py.
#
#   bash tools/gpu_check.sh OUT_DIR [--wheels DIR] [--site DIR] [tools/gpu_check.py options]
#
# OUT_DIR receives gpu_check.json, gpu_check.log, install.log and the steps' work files (also the
# kernel build cache and compiler caches). An install.log or site/ in an OUT_DIR without
# gpu_check.json (a folder the check did not write) is refused before anything is installed;
# tools/gpu_check.py checks the rest. The project runs from this checkout (PYTHONPATH); the
# Python is PYTHON (default python3). On a machine without internet, --wheels DIR installs every
# wheel of DIR (pip --no-index --no-deps) into a folder put first on PYTHONPATH (--site, default
# OUT_DIR/site): only what that Python lacks (a bare Python: everything, torch included).
# Before any step runs, the script checks that every module the steps import is there and names
# the missing ones. docs/benchmarks.md ("GPU") lists the wheels.
set -euo pipefail

usage="usage: $0 OUT_DIR [--wheels DIR] [--site DIR] [--dry-run] [--steps NAME ...]"
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
mkdir -p "$1"
out=$(cd "$1" && pwd)
shift
wheels=""
site=""
args=()
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels=$(cd "${2:?--wheels needs a folder}" && pwd); shift 2 ;;
    --site) site="${2:?--site needs a folder}"; shift 2 ;;
    --dry-run) dry_run=1; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"

if [ -n "$wheels" ]; then
  ours=("install.log")
  [ -n "$site" ] || ours+=("site")
  for name in "${ours[@]}"; do
    if { [ -e "$out/$name" ] || [ -L "$out/$name" ]; } && [ ! -e "$out/gpu_check.json" ]; then
      echo "gpu_check: error: $out/$name exists, and $out has no gpu_check.json: it was not" \
        "written by gpu_check and is left as it is; move or delete it, or choose another" \
        "OUT_DIR" >&2
      exit 2
    fi
  done
  site="${site:-$out/site}"
  echo "installing the wheels of $wheels into $site (log: $out/install.log)"
  "$python" -m pip install --no-index --no-deps --no-compile --upgrade --target "$site" \
    "$wheels"/*.whl >"$out/install.log" 2>&1 || {
    echo "install failed: see $out/install.log" >&2
    exit 1
  }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$site/bin:$PATH"  # the ninja command
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# every module the steps import, and the ninja command of the just-in-time kernel build
GPU_CHECK_DRY_RUN=$dry_run "$python" - <<'PY' || exit 1
import importlib.util
import os
import shutil
import sys

modules = ["torch", "torchvision", "numpy", "scipy", "fvcore", "iopath", "pycocotools", "cv2",
           "PIL", "tqdm", "yaml", "tensorboard", "pytest"]
missing = [m for m in modules if importlib.util.find_spec(m) is None]
if os.environ["GPU_CHECK_DRY_RUN"] == "0" and not shutil.which("ninja"):
    missing.append("ninja (command)")
if missing:
    sys.exit(f"missing for the GPU check: {', '.join(missing)} (add their wheels to --wheels)")
PY

exec "$python" tools/gpu_check.py --output-dir "$out" ${args[@]+"${args[@]}"}
