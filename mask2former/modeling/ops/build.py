"""Building and loading the compiled multi-scale deformable attention kernels.

Two ways to get the kernels:

* ahead of time: ``setup.py`` (``pip install --no-build-isolation .``, torch installed first)
  compiles :func:`cuda_extension` into ``mask2former/modeling/ops/_C*.so`` when CUDA is
  available or ``FORCE_CUDA=1``. A build without torch (the default ``pip install .``, ``pip
  wheel .`` and ``python -m build`` run in an isolated environment) skips this step;
* just in time: on the first use with CUDA tensors under ``INSTAFORMER_MSDA_BACKEND=cuda``
  (without it, CUDA tensors take the Triton kernels when no ahead-of-time build exists; see
  ``dispatch.py``), :func:`load_library` compiles the same sources with ninja through
  ``torch.utils.cpp_extension.load`` (needs ``ninja`` and a CUDA toolkit, ``CUDA_HOME`` /
  ``nvcc``); the build is cached in ``TORCH_EXTENSIONS_DIR`` (default
  ``~/.cache/torch_extensions``), so later processes only load it. The sources ship with the
  package (package data), so this works from an installed wheel too.

Either way the shared library registers ``torch.ops.instaformer.ms_deform_attn_forward`` and
``torch.ops.instaformer.ms_deform_attn_backward`` (see ``csrc/ms_deform_attn.cpp``).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from setuptools import Extension

logger = logging.getLogger(__name__)

CSRC_DIR = Path(__file__).resolve().parent / "csrc"
SOURCES = ("ms_deform_attn.cpp", "ms_deform_attn_cuda.cu")
AOT_MODULE = "mask2former.modeling.ops._C"
JIT_NAME = "instaformer_ms_deform_attn"
CXX_FLAGS = ["-O3"]
NVCC_FLAGS = ["-O3", "-lineinfo"]


def source_paths(relative_to: Path | None = None) -> list[str]:
    """Paths of the kernel sources, relative to ``relative_to`` when given (setup.py)."""
    paths = [CSRC_DIR / name for name in SOURCES]
    if relative_to is not None:
        return [str(p.relative_to(relative_to.resolve())) for p in paths]
    return [str(p) for p in paths]


def cuda_extension(relative_to: Path) -> Extension:
    """The ahead-of-time ``CUDAExtension`` built by ``setup.py`` (sources relative to it)."""
    from torch.utils.cpp_extension import CUDAExtension

    return CUDAExtension(
        name=AOT_MODULE,
        sources=source_paths(relative_to),
        extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
    )


def aot_library_path() -> Path | None:
    """Path of the ahead-of-time built library, or None when it was not built."""
    spec = importlib.util.find_spec(AOT_MODULE)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin)


def load_library() -> str:
    """Load the compiled kernels into this process, building them just in time if needed.

    Returns:
        A short description of where the kernels came from (for the log).

    Raises:
        RuntimeError: the just-in-time build failed or no CUDA toolkit was found.
        OSError: the shared library could not be loaded.
    """
    aot = aot_library_path()
    if aot is not None:
        torch.ops.load_library(str(aot))
        return f"ahead-of-time build {aot.name}"
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        raise RuntimeError(
            "no ahead-of-time build and no CUDA toolkit (CUDA_HOME / nvcc) for a just-in-time "
            "build; install with FORCE_CUDA=1 or set CUDA_HOME"
        )
    logger.info(
        "Building the ms_deform_attn CUDA kernels just in time (cached after the first run)"
    )
    cpp_extension.load(
        name=JIT_NAME,
        sources=source_paths(),
        extra_cflags=CXX_FLAGS,
        extra_cuda_cflags=NVCC_FLAGS,
        is_python_module=False,
        verbose=False,
    )
    return f"just-in-time build {JIT_NAME} (cached in TORCH_EXTENSIONS_DIR)"
