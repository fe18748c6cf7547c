"""Compile the deformable-attention CUDA kernels against the installed PyTorch (no GPU needed).

    python tools/check_cuda_build.py [--arch 9.0] [--scan-only]

Checks, in order (the first failure stops it; exit status 0 = all passed):

1. ``mask2former/modeling/ops/csrc/`` uses none of the deprecated tensor API names of
   :data:`DEPRECATED` (``.type()``, ``.data<T>()``, the old dispatch macros, ``AT_CHECK``, THC);
   ``--scan-only`` stops here (the test suite runs this part: ``tests/test_cuda_build_check.py``);
2. the CUDA toolkit: ``nvcc`` found through ``CUDA_HOME`` (or torch's guess from ``PATH``), with
   ``include/cuda_runtime.h``, and the same major CUDA version as ``torch.version.cuda``;
3. the ahead-of-time build of ``setup.py`` (``FORCE_CUDA=1 python setup.py build_ext``, torch's
   ``BuildExtension`` with ninja) into a temporary folder, for ``--arch`` (``TORCH_CUDA_ARCH_LIST``,
   default 9.0), with deprecated declarations made errors (``-Werror=deprecated-declarations``
   for the host compiler, ``-Werror all-warnings`` for nvcc). Nothing is written outside the
   temporary folder, which is removed;
4. the compiler output holds no warning.

Prints the toolkit, the compile time (wall and CPU) and the warnings. docs/install.md names this
step.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CSRC = REPO / "mask2former" / "modeling" / "ops" / "csrc"
# Deprecated (or removed) PyTorch C++ API: pattern -> what to use instead.
DEPRECATED = {
    r"\.type\(\)": "scalar_type() / options()",
    r"\.data<": "data_ptr<T>() / const_data_ptr<T>()",
    r"\bAT_DISPATCH_FLOATING_TYPES_AND_HALF\b": "AT_DISPATCH_FLOATING_TYPES_AND2(...)",
    r"\bAT_DISPATCH_ALL_TYPES_AND_HALF\b": "AT_DISPATCH_ALL_TYPES_AND2(...)",
    r"\bAT_CHECK\b": "TORCH_CHECK",
    r"\bAT_ASSERT\b": "TORCH_INTERNAL_ASSERT",
    r"\bTHC\w*": "ATen / c10::cuda",
    r"\bDeprecatedTypeProperties\b": "scalar_type() / options()",
}
HOST_FLAGS = "-Werror=deprecated-declarations"
NVCC_FLAGS = f"-Werror all-warnings -Xcompiler {HOST_FLAGS}"


def scan(folder: Path = CSRC) -> list[str]:
    """``file:line: text (use ...)`` for every deprecated API use under ``folder``."""
    found = []
    for path in sorted(folder.glob("*")):
        if path.suffix not in (".cpp", ".cu", ".h", ".cuh"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for pattern, instead in DEPRECATED.items():
                if re.search(pattern, line):
                    found.append(f"{path.name}:{number}: {line.strip()} (use {instead})")
    return found


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _toolkit() -> tuple[Path, str]:
    """``(CUDA_HOME, nvcc version)``; SystemExit naming what is wrong."""
    import torch
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        sys.exit("no CUDA toolkit: put nvcc on PATH or set CUDA_HOME")
    home = Path(cpp_extension.CUDA_HOME)
    nvcc = home / "bin" / "nvcc"
    if not (home / "include" / "cuda_runtime.h").is_file() or not nvcc.is_file():
        sys.exit(
            f"CUDA_HOME={home} has no bin/nvcc and include/cuda_runtime.h: set CUDA_HOME to the "
            "toolkit's folder"
        )
    text = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True).stdout
    match = re.search(r"release (\d+)\.(\d+)", text)
    if match is None:
        sys.exit(f"{nvcc} --version printed no release: {text!r}")
    version = f"{match.group(1)}.{match.group(2)}"
    if torch.version.cuda is None:
        sys.exit(f"torch {torch.__version__} is a CPU build: install a CUDA build of torch")
    if version.split(".")[0] != torch.version.cuda.split(".")[0]:
        sys.exit(
            f"nvcc {version} ({nvcc}) and torch's CUDA {torch.version.cuda} differ in the major "
            f"version: install nvidia-cuda-nvcc=={torch.version.cuda}.* or point CUDA_HOME at "
            "a matching toolkit"
        )
    return home, version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="9.0", help="TORCH_CUDA_ARCH_LIST for the build")
    parser.add_argument("--scan-only", action="store_true", help="only the deprecated-API scan")
    args = parser.parse_args(argv)

    found = scan()
    if found:
        print("deprecated tensor API in csrc/:\n  " + "\n  ".join(found))
        return 1
    print(f"deprecated tensor API in {CSRC.relative_to(REPO)}: none")
    if args.scan_only:
        return 0

    import torch

    home, version = _toolkit()
    print(
        f"toolkit: {home} (nvcc {version}); torch {torch.__version__} (CUDA {torch.version.cuda})"
    )
    if shutil.which("ninja") is None:
        sys.exit("the ninja command is missing: pip install ninja")
    with tempfile.TemporaryDirectory(prefix="instaformer-cuda-build-") as tmp:
        env = {
            **os.environ,
            "CUDA_HOME": str(home),
            "FORCE_CUDA": "1",
            "TORCH_CUDA_ARCH_LIST": args.arch,
            "CFLAGS": f"{os.environ.get('CFLAGS', '')} {HOST_FLAGS}".strip(),
            "NVCC_APPEND_FLAGS": f"{os.environ.get('NVCC_APPEND_FLAGS', '')} {NVCC_FLAGS}".strip(),
        }
        command = [sys.executable, "setup.py", "build_ext"]
        command += ["--build-temp", f"{tmp}/temp", "--build-lib", f"{tmp}/lib"]
        start, cpu_start = time.perf_counter(), _children_cpu_s()
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        seconds, cpu_seconds = time.perf_counter() - start, _children_cpu_s() - cpu_start
        output = result.stdout + result.stderr
        built = sorted(p.name for p in Path(tmp, "lib").rglob("_C*.so"))
    warnings = [line for line in output.splitlines() if re.search(r"warning", line, re.I)]
    print(
        f"compile time: {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU (arch {args.arch}, "
        f"load average {os.getloadavg()[0]:.1f}); built: {built or 'nothing'}"
    )
    print(f"warnings: {len(warnings)}" + "".join(f"\n  {w}" for w in warnings))
    if result.returncode != 0 or not built:
        print(output[-6000:])
        print(f"the build failed (exit status {result.returncode})")
        return 1
    return 1 if warnings else 0


if __name__ == "__main__":
    sys.exit(main())
