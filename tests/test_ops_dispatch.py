"""Dispatch of ms_deform_attn between the compiled kernels, the Triton kernels and the PyTorch
path (``INSTAFORMER_MSDA_BACKEND``, automatic choice, errors that name their reason)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

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


def _fake_cuda_tensor() -> torch.Tensor:
    """A tensor on a (fake) CUDA device: ``select_path`` only reads its device."""
    with FakeTensorMode():
        return torch.empty(0, device="cuda")


def test_env_var_forces_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "kernel_status", _kernel_must_not_load)
    monkeypatch.setenv(dispatch.BACKEND_ENV, "pytorch")
    for value in (torch.empty(0), _fake_cuda_tensor()):
        path, reason = dispatch.select_path(value)
        assert path == "pytorch"
        assert f"{dispatch.BACKEND_ENV}=pytorch" in reason


def test_env_var_rejects_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dispatch.BACKEND_ENV, "maybe")
    with pytest.raises(ValueError, match=f"{dispatch.BACKEND_ENV}='maybe'.*cuda, triton, pytorch"):
        dispatch.select_path(torch.empty(0))


def test_cpu_tensors_use_pytorch_without_loading_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "kernel_status", _kernel_must_not_load)
    monkeypatch.setenv(dispatch.BACKEND_ENV, "")
    assert dispatch.select_path(torch.empty(0)) == ("pytorch", "inputs on cpu")
    inputs = _inputs()
    torch.testing.assert_close(dispatch.ms_deform_attn(*inputs), ms_deform_attn_reference(*inputs))


def test_forced_cuda_on_cpu_tensors_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "kernel_status", _kernel_must_not_load)
    monkeypatch.setenv(dispatch.BACKEND_ENV, "cuda")
    with pytest.raises(RuntimeError, match="=cuda cannot run: .*CUDA tensors only.*on cpu"):
        dispatch.ms_deform_attn(*_inputs())


def test_forced_cuda_without_a_build_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "kernel_status", lambda: (False, "no CUDA toolkit"))
    monkeypatch.setenv(dispatch.BACKEND_ENV, "cuda")
    with pytest.raises(RuntimeError, match="=cuda cannot run: no CUDA toolkit"):
        dispatch.select_path(_fake_cuda_tensor())


@pytest.mark.parametrize(("now", "at_import"), [("0", False), ("0", True), ("1", False)])
def test_forced_triton_on_cpu_needs_the_interpreter_from_the_start(
    monkeypatch: pytest.MonkeyPatch, now: str, at_import: bool
) -> None:
    triton_kernel = pytest.importorskip("mask2former.modeling.ops.triton_kernel")
    monkeypatch.setenv(dispatch.BACKEND_ENV, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", now)
    monkeypatch.setattr(triton_kernel, "_imported_for_interpreter", lambda: at_import)
    if now == "0" and not at_import:
        match = "=triton cannot run: .*CPU tensors in Triton's interpreter.*on cpu"
    else:
        match = f"TRITON_INTERPRET is {now} now but was {int(at_import)} when Triton was first"
    with pytest.raises(RuntimeError, match=match):
        dispatch.ms_deform_attn(*_inputs())


def test_forced_triton_without_triton_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "_triton_import_error", "triton is not importable (gone)")
    monkeypatch.setenv(dispatch.BACKEND_ENV, "triton")
    with pytest.raises(RuntimeError, match=r"=triton cannot run: triton is not importable \(gone"):
        dispatch.select_path(_fake_cuda_tensor())


def test_cuda_tensors_prefer_compiled_then_triton_then_pytorch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = _fake_cuda_tensor()
    monkeypatch.setenv(dispatch.BACKEND_ENV, "")
    monkeypatch.setattr(dispatch, "kernel_prebuilt", lambda: True)
    monkeypatch.setattr(dispatch, "kernel_status", lambda: (True, "CUDA kernels from a build"))
    assert dispatch.select_path(value) == ("cuda", "CUDA kernels from a build")
    # no build: Triton, and no just-in-time build is started
    monkeypatch.setattr(dispatch, "kernel_prebuilt", lambda: False)
    monkeypatch.setattr(dispatch, "kernel_status", _kernel_must_not_load)
    path, reason = dispatch.select_path(value)
    assert (path, "no compiled build loaded") == ("triton", reason.split("; ")[-1])
    # a build that fails to load: Triton too
    monkeypatch.setattr(dispatch, "kernel_prebuilt", lambda: True)
    monkeypatch.setattr(dispatch, "kernel_status", lambda: (False, "cannot open .so"))
    assert dispatch.select_path(value)[0] == "triton"
    monkeypatch.setattr(dispatch, "_triton_import_error", "triton is not importable (gone)")
    assert dispatch.select_path(value) == (
        "pytorch",
        "no compiled build loaded and triton is not importable (gone)",
    )


def test_choice_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(dispatch, "_logged", set())
    monkeypatch.delenv(dispatch.BACKEND_ENV, raising=False)
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
    monkeypatch.setenv(dispatch.BACKEND_ENV, "")
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
