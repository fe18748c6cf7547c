"""Build steps that pyproject.toml cannot declare: the released configs and the CUDA kernels.

All project metadata lives in pyproject.toml; this file adds two things.

* Configs: the top-level ``configs/`` tree is the single source of the released configs. The
  ``build_py`` step copies it into the built package as ``instaformer/configs/`` (package data of
  wheels, so an installed copy finds configs by name; MANIFEST.in puts ``configs/`` in the sdist).
  Editable installs skip the copy: ``instaformer.config.config_roots`` then finds the checkout's
  ``configs/`` next to the package.
* CUDA kernels: the ``CUDAExtension`` ``mask2former.modeling.ops._C`` is compiled ahead of time
  only when torch is importable at build time and a CUDA toolkit is usable
  (``torch.cuda.is_available()``), or ``FORCE_CUDA=1`` is set (building on a machine without a
  GPU, e.g. in a container; set ``TORCH_CUDA_ARCH_LIST`` too). With build isolation torch is
  absent, so nothing is compiled: CUDA inputs then take the Triton kernels, or the CUDA kernels
  built just in time with ninja when ``INSTAFORMER_MSDA_BACKEND=cuda`` asks
  (``mask2former/modeling/ops/build.py``). To compile ahead of time, install torch first and use
  ``pip install --no-build-isolation .``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CONFIGS = ROOT / "configs"
CONFIGS_IN_PACKAGE = Path("instaformer") / "configs"


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies ``configs/`` to ``<build_lib>/instaformer/configs/``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        if not CONFIGS.is_dir():
            raise FileNotFoundError(f"{CONFIGS}: the released configs are missing from the source")
        self.copy_tree(str(CONFIGS), str(Path(self.build_lib) / CONFIGS_IN_PACKAGE))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        target = Path(self.build_lib) / CONFIGS_IN_PACKAGE
        return outputs + [str(target / p.relative_to(CONFIGS)) for p in _config_files()]


def _config_files() -> list[Path]:
    return sorted(p for p in CONFIGS.rglob("*") if p.is_file())


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
    has_torch = importlib.util.find_spec("torch") is not None
    if force == "1":
        if not has_torch:
            raise RuntimeError(
                "FORCE_CUDA=1 needs torch at build time: install torch first and build with "
                "pip install --no-build-isolation ."
            )
        return True
    if not has_torch:
        return False
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


extensions = _extensions()
setup(cmdclass={"build_py": BuildPyWithConfigs, **extensions.pop("cmdclass", {})}, **extensions)
