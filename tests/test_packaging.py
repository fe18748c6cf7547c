"""The wheel: built with build isolation (no torch in the build environment), it ships the
released configs under ``instaformer/configs/``, the kernel sources and both console scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What a wheel is built from (the sdist's content, see MANIFEST.in); copied so that the build
# writes nothing into the checkout.
SOURCES = ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in")
TREES = ("configs", "instaformer", "mask2former")
EXPECTED_CONFIGS = (
    "instaorder/occlusion_depth/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
    "instaorder/Base-COCO-PanopticSegmentation.yaml",
    "instaordernet/InstaOrderNet_od.yaml",
)


def test_wheel_ships_configs_and_console_scripts(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc")
    for name in TREES:
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    out = tmp_path / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout}\n{result.stderr}"
    wheels = list(out.glob("instaformer-*.whl"))
    assert len(wheels) == 1, f"expected one instaformer wheel in {out}, got {wheels}"
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = wheel.read(entry_points).decode()

    released = sorted(p.relative_to(REPO / "configs") for p in (REPO / "configs").rglob("*.yaml"))
    shipped = {n.removeprefix("instaformer/configs/") for n in names}
    missing = [str(p) for p in released if p.as_posix() not in shipped]
    assert not missing, f"configs missing from the wheel: {missing}"
    for name in EXPECTED_CONFIGS:
        assert f"instaformer/configs/{name}" in names
    assert "mask2former/modeling/ops/csrc/ms_deform_attn_cuda.cu" in names
    assert not any(n.startswith(("configs/", "tests/")) for n in names), "stray top-level files"
    assert "instaformer-demo = instaformer.apps.demo:cli" in scripts
    assert "instaformer-train = instaformer.train:cli" in scripts
