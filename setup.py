"""Optional ahead-of-time build of the multi-scale deformable attention CUDA kernels.

All project metadata lives in pyproject.toml; this file only adds the ``CUDAExtension``
``mask2former.modeling.ops._C`` when a CUDA toolkit is usable (``torch.cuda.is_available()``)
or ``FORCE_CUDA=1`` is set (building on a machine without a GPU, e.g. in a container; set
``TORCH_CUDA_ARCH_LIST`` too). Otherwise no extension is built and the kernels are compiled
just in time on first CUDA use, or the PyTorch path runs. The build needs torch at build
time: ``pip install --no-build-isolation .``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def _load_build_helpers():
    # load ops/build.py by path: importing the mask2former package here would pull in the model
    path = ROOT / "mask2former" / "modeling" / "ops" / "build.py"
    spec = importlib.util.spec_from_file_location("_instaformer_ops_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _want_cuda() -> bool:
    force = os.environ.get("FORCE_CUDA", "0")
    if force not in ("0", "1"):
        raise ValueError(f"FORCE_CUDA must be 0 or 1, got {force!r}")
    if force == "1":
        return True
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.cuda.is_available() and CUDA_HOME is not None


def _extensions() -> dict:
    if not _want_cuda():
        return {}
    from torch.utils.cpp_extension import BuildExtension

    build = _load_build_helpers()
    return {
        "ext_modules": [build.cuda_extension(relative_to=ROOT)],
        "cmdclass": {"build_ext": BuildExtension},
    }


setup(**_extensions())
