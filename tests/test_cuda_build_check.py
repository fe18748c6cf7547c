"""``tools/check_cuda_build.py``: the deprecated-API scan of the CUDA sources (the compile itself
needs nvcc and minutes of CPU time, so it is a separate step named in docs/install.md)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "check_cuda_build.py"


def _tool():
    spec = importlib.util.spec_from_file_location("check_cuda_build", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sources_use_no_deprecated_tensor_api() -> None:
    result = subprocess.run(
        [sys.executable, str(TOOL), "--scan-only"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deprecated tensor API in mask2former/modeling/ops/csrc: none" in result.stdout


def test_scan_finds_deprecated_calls(tmp_path: Path) -> None:
    (tmp_path / "old.cu").write_text(
        "auto t = x.type();\n"
        "float* p = x.data<float>();\n"
        'AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "f", [&] {});\n'
        'AT_CHECK(x.is_cuda(), "cuda");\n'
        "auto ok = x.const_data_ptr<float>();\n"
    )
    found = _tool().scan(tmp_path)
    assert [line.split(":")[1] for line in found] == ["1", "2", "3", "4"]
    assert "use TORCH_CHECK" in found[3]
