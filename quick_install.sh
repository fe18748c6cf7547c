#!/usr/bin/env bash
# Install InstaFormer and everything it needs into the active Python environment (>= 3.10).
#
#   python3 -m venv .venv && source .venv/bin/activate   # recommended
#   bash quick_install.sh
#
# PyTorch is pinned here to the build the project is tested with; the package itself accepts any
# torch >= 2.1. On a machine with CUDA (or with FORCE_CUDA=1) the deformable-attention CUDA
# extension is compiled during the install; without it CUDA inputs take the Triton kernels.
set -euo pipefail
PYTHON="${PYTHON:-python}"
cd "$(dirname "${BASH_SOURCE[0]}")"
"$PYTHON" -m pip install --upgrade pip setuptools wheel
"$PYTHON" -m pip install "torch==2.14.1" "torchvision==0.29.1"
"$PYTHON" -m pip install --no-build-isolation -e ".[dev,app,export]"
"$PYTHON" -c "import instaformer, mask2former; print('InstaFormer installed:', instaformer.__version__)"
