"""``tools/gpu_check.sh --dry-run``: every step of the GPU check runs on the CPU with tiny shapes
(the CUDA-only kernel steps are recorded as skipped; the Triton rows run in Triton's interpreter,
``TRITON_INTERPRET=1`` from conftest.py) and the JSON report holds each step's figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu_check.sh"), str(out), "--dry-run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").is_file() else ""
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{log[-4000:]}"
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["environment"]["dry_run"] is True
    steps = report["steps"]
    lines = [line.split() for line in result.stdout.splitlines()]
    order = [words[1].rstrip(":") for words in lines if words and words[0] == "[gpu_check]"]
    assert order[:2] == ["ops_triton", "ops_cuda"]  # the kernel tests run first
    for name in ("ops_triton", "ops_cuda"):
        assert steps[name]["status"] == "skipped" and "CUDA" in steps[name]["reason"]
    passed = {name for name, entry in steps.items() if entry["status"] == "passed"}
    assert passed == set(steps) - {"ops_cuda", "ops_triton"}, {
        n: e["status"] for n, e in steps.items()
    }

    op = steps["op_bench"]["results"]["float32_32px"]
    for impl in ("pytorch", "triton"):
        assert op[impl]["forward_ms"] > 0 and op[impl]["forward_backward_ms"] > 0
    assert op["speedup_triton_forward_backward_ms"] > 0
    for name in ("inference_swin_t", "inference_r50"):
        results = steps[name]["results"]
        assert results["compile"]["status"] == "skipped"
        for mode in ("float32", "bfloat16", "float32_triton"):
            assert results[mode]["images_per_s"] > 0  # the head share is noise at this size
            assert results[mode]["order_head_s"] > 0
        assert results["float32"]["msda_path"] == "pytorch"
        assert results["float32_triton"]["msda_path"] == "triton"
    for recipe in ("frozen_mask2former", "fully_trainable"):
        assert steps["train_step"]["results"][recipe]["step_s"] > 0
    trainable = {r: steps["train_step"]["results"][r]["trainable_parameters"] for r in
                 ("frozen_mask2former", "fully_trainable")}  # fmt: skip
    assert trainable["frozen_mask2former"] < trainable["fully_trainable"]
    assert steps["instaordernet"]["results"]["speedup"] > 0
    assert steps["train_net"]["results"]["logged_total_loss"]
    assert (out / "work" / "train_net" / "train" / "model_final.pth").is_file()
    goals = report["goals"]
    assert len(goals) == 8 and goals["instaordernet_batched_speedup"]["status"] in ("met", "missed")
    for name in (
        "kernel_forward_backward_speedup_1024px",
        "triton_forward_backward_speedup_1024px",
        "triton_vs_kernel_forward_backward_1024px",
        "swin_t_triton_vs_kernel_inference_float32",
    ):
        assert goals[name]["status"] == "not measured"
        assert f"goal {name}: - (goal " in result.stdout  # every goal printed with its bound
