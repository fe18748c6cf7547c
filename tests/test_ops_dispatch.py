"""Dispatch of ms_deform_attn between the compiled kernels and the PyTorch path."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from mask2former.modeling.ops import build, dispatch, kernel
from mask2former.modeling.ops.reference import ms_deform_attn_reference, random_inputs


def _inputs():
    return random_inputs(
        batch=1,
        spatial_shapes=[(3, 4), (2, 2)],
        num_queries=4,
        num_heads=2,
        head_dim=3,
        num_points=2,
    )


def _kernel_must_not_load() -> tuple[bool, str]:
    raise AssertionError("kernel_status must not be consulted for this input")


def test_env_var_forces_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "kernel_status", _kernel_must_not_load)
    monkeypatch.setenv(dispatch.FORCE_PYTORCH_ENV, "1")
    path, reason = dispatch.select_path(torch.empty(0))
    assert path == "pytorch"
    assert dispatch.FORCE_PYTORCH_ENV in reason


def test_env_var_rejects_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dispatch.FORCE_PYTORCH_ENV, "maybe")
    with pytest.raises(ValueError, match=f"{dispatch.FORCE_PYTORCH_ENV}='maybe'"):
        dispatch.select_path(torch.empty(0))


def test_cpu_tensors_use_pytorch_without_loading_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "kernel_status", _kernel_must_not_load)
    monkeypatch.setenv(dispatch.FORCE_PYTORCH_ENV, "0")
    assert dispatch.select_path(torch.empty(0)) == ("pytorch", "inputs on cpu")
    inputs = _inputs()
    torch.testing.assert_close(dispatch.ms_deform_attn(*inputs), ms_deform_attn_reference(*inputs))


def test_choice_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(dispatch, "_logged", set())
    monkeypatch.delenv(dispatch.FORCE_PYTORCH_ENV, raising=False)
    inputs = _inputs()
    with caplog.at_level(logging.INFO, logger=dispatch.logger.name):
        for _ in range(3):
            dispatch.ms_deform_attn(*inputs)
    messages = [r.getMessage() for r in caplog.records if r.name == dispatch.logger.name]
    assert messages == ["ms_deform_attn uses the pytorch path: inputs on cpu"]


@pytest.mark.parametrize("error", [RuntimeError("nvcc failed"), OSError("cannot open .so")])
def test_failed_build_falls_back_with_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    def fail() -> str:
        raise error

    monkeypatch.setattr(kernel, "_status", None)
    monkeypatch.setattr(build, "load_library", fail)
    with caplog.at_level(logging.WARNING, logger=kernel.logger.name):
        available, reason = kernel.kernel_status()
    assert not available
    assert str(error) in reason
    assert any(str(error) in r.getMessage() for r in caplog.records)


def test_unexpected_errors_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> str:
        raise TypeError("a bug, not a missing build")

    monkeypatch.setattr(kernel, "_status", None)
    monkeypatch.setattr(build, "load_library", broken)
    with pytest.raises(TypeError, match="a bug"):
        kernel.kernel_status()


def test_import_does_not_build_or_load_kernels() -> None:
    code = (
        "import torch, mask2former.modeling.ops as ops, mask2former.modeling.ops.kernel as k; "
        "assert k._status is None; "
        "assert not hasattr(torch.ops.instaformer, 'ms_deform_attn_forward')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_export_takes_the_loop_free_formulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torch.export the op traces to grid_sample (no embedding_bag gather, whose ONNX
    form is a Loop), whatever the environment says, and still computes the same values."""
    monkeypatch.setattr(dispatch, "kernel_status", _kernel_must_not_load)
    monkeypatch.setenv(dispatch.FORCE_PYTORCH_ENV, "0")
    value, shapes, starts, locations, weights = _inputs()
    level_shapes = [tuple(hw) for hw in shapes.tolist()]

    class Op(torch.nn.Module):
        def forward(self, v: torch.Tensor, loc: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return dispatch.ms_deform_attn(v, level_shapes, starts, loc, w)

    program = torch.export.export(Op(), (value, locations, weights))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any("grid_sampler" in t for t in targets)
    assert not any("embedding_bag" in t for t in targets)
    assert dispatch.select_path(value) == ("pytorch", "inputs on cpu")  # eager: unchanged
    torch.testing.assert_close(
        program.module()(value, locations, weights),
        ms_deform_attn_reference(value, shapes, starts, locations, weights),
    )
