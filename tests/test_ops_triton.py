"""Triton ms_deform_attn kernels against the PyTorch path: on a GPU, or on the CPU in Triton's
interpreter.

Without a GPU, ``TRITON_INTERPRET=1`` (set by ``conftest.py`` before Triton is imported) and
``INSTAFORMER_MSDA_BACKEND=triton`` make the public op ``mask2former.modeling.ops.ms_deform_attn``
run the Triton kernels on CPU tensors. With a GPU the same tests run the compiled Triton
kernels on CUDA tensors (``tools/gpu_check.sh`` runs this file first, with
``tests/test_ops_cuda.py``).

Reference: the PyTorch path in float64 on the same inputs. Tolerances, each relative to the
largest magnitude of the tensor compared (the location gradients reach ~100: they scale with the
level's width and height): float32 1e-5, absolute and relative, for the output and the three
gradients (the float32 PyTorch path is off by as much: 7e-5 on location gradients of magnitude
100); float64 ``gradcheck``; bfloat16 and float16 compute in float32 and round once when they
store, so they match the float32 PyTorch path on the same (rounded) inputs within one unit in
the last place of the stored result (relative 2^-7 for bfloat16, 2^-10 for float16) plus 1e-3
(bfloat16) / 2e-4 (float16) of the largest magnitude, for sums that cancel.

The interpreter runs each program of the grid in turn with NumPy: the cases are small (a few
dozen programs) so that the file takes seconds, not minutes.
"""

from __future__ import annotations

import logging

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (it ships with torch's CUDA wheels)")

from mask2former.modeling.ops import dispatch, ms_deform_attn
from mask2former.modeling.ops.pytorch_impl import ms_deform_attn_pytorch
from mask2former.modeling.ops.reference import random_inputs

# Mask2Former's pixel decoder: 3 levels, 8 heads, 4 points, 32 channels per head; odd level
# sizes. 70 queries make two query blocks of the kernel (checked in test_cases_span_query_blocks);
# the other cases use fewer queries (one block) to keep the interpreter's work small.
LEVELS = [(13, 17), (7, 9), (3, 5)]
HEADS, POINTS, HEAD_DIM, QUERIES, FEW_QUERIES = 8, 4, 32, 70, 24
LOW_PRECISION = {  # dtype: (rtol, atol as a fraction of the largest magnitude)
    torch.bfloat16: (2**-7, 1e-3),
    torch.float16: (2**-10, 2e-4),
}


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _triton_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dispatch.BACKEND_ENV, "triton")
    available, reason = dispatch.triton_status(torch.device(DEVICE))
    if not available:
        pytest.skip(f"the Triton kernels cannot run here: {reason}")


def _inputs(batch: int, dtype: torch.dtype = torch.float32, **kwargs):
    shape = {
        "spatial_shapes": LEVELS,
        "num_queries": QUERIES,
        "num_heads": HEADS,
        "head_dim": HEAD_DIM,
        "num_points": POINTS,
        **kwargs,
    }
    # locations in [-0.2, 1.2]: some samples fall partly or wholly outside their level
    inputs = random_inputs(
        batch=batch, margin=0.2, generator=torch.Generator().manual_seed(batch), **shape
    )
    return tuple((t.to(dtype) if t.is_floating_point() else t).to(DEVICE) for t in inputs)


def _output_and_grads(fn, inputs, probe_seed: int = 0):
    """Output and gradients of (value, sampling_locations, attention_weights) of
    ``sum(out * probe)`` for a fixed random probe (rounded to the inputs' dtype)."""
    args = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*args)
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(probe_seed))
    (out * probe.to(inputs[0].dtype).to(out)).sum().backward()
    return [out.detach()] + [args[i].grad for i in (0, 3, 4)]


def _close(got: torch.Tensor, want: torch.Tensor, name: str, rtol: float, atol: float) -> None:
    """``got`` within ``atol`` times the largest magnitude of ``want``, and ``rtol``."""
    scale = want.abs().max().item()
    torch.testing.assert_close(
        got.float(), want.float(), atol=atol * scale, rtol=rtol, msg=lambda m: f"{name}: {m}"
    )


def _pytorch(value, shapes, starts, locations, weights, dtype: torch.dtype = torch.float64):
    return ms_deform_attn_pytorch(value.to(dtype), shapes, locations.to(dtype), weights.to(dtype))


def test_public_op_runs_triton_in_the_interpreter(caplog: pytest.LogCaptureFixture) -> None:
    value = _inputs(1)[0]
    path, reason = dispatch.select_path(value)
    assert path == "triton"
    assert dispatch.BACKEND_ENV in reason
    assert ("TRITON_INTERPRET=1" in reason) == (DEVICE == "cpu")
    dispatch._logged.discard((path, reason))
    inputs = _inputs(1, num_queries=3)
    with caplog.at_level(logging.INFO, logger=dispatch.logger.name):
        for _ in range(2):
            ms_deform_attn(*inputs)
    messages = [r.getMessage() for r in caplog.records if r.name == dispatch.logger.name]
    assert messages == [f"ms_deform_attn uses the triton path: {reason}"]


def test_cases_span_query_blocks() -> None:
    from mask2former.modeling.ops.triton_kernel import _blocks

    block_q, block_d = _blocks(HEAD_DIM)
    assert block_d == HEAD_DIM and 1 < -(-QUERIES // block_q) and QUERIES % block_q != 0


@pytest.mark.parametrize(("batch", "queries"), [(1, QUERIES), (3, FEW_QUERIES)])
def test_float32_forward_and_gradients_match_pytorch(batch: int, queries: int) -> None:
    inputs = _inputs(batch, num_queries=queries)
    got = _output_and_grads(ms_deform_attn, inputs)
    want = _output_and_grads(_pytorch, inputs)
    assert got[0].dtype == torch.float32
    for name, g, w in zip(["output", "value", "locations", "weights"], got, want, strict=True):
        assert g.dtype == torch.float32, name
        _close(g, w, name, rtol=1e-5, atol=1e-5)
    # locations outside [0, 1] were sampled, and their gradients checked
    outside = ((inputs[3] < 0) | (inputs[3] > 1)).any(-1)
    assert outside.any() and got[2][outside].abs().sum() > 0


@pytest.mark.parametrize("dtype", list(LOW_PRECISION))
def test_low_precision_matches_float32_pytorch(dtype: torch.dtype) -> None:
    inputs = _inputs(1, dtype, num_queries=FEW_QUERIES)
    got = _output_and_grads(ms_deform_attn, inputs)
    want = _output_and_grads(lambda *a: _pytorch(*a, dtype=torch.float32), inputs)
    rtol, atol = LOW_PRECISION[dtype]
    for name, g, w in zip(["output", "value", "locations", "weights"], got, want, strict=True):
        assert g.dtype == dtype and torch.isfinite(g).all(), name
        _close(g, w, name, rtol=rtol, atol=atol)


def test_gradcheck_float64() -> None:
    value, shapes, starts, locations, weights = random_inputs(
        batch=1,
        spatial_shapes=[(2, 3), (1, 2)],
        num_queries=2,
        num_heads=1,
        head_dim=2,
        num_points=2,
        dtype=torch.float64,
        device=DEVICE,
        margin=0.2,
        generator=torch.Generator().manual_seed(0),
    )
    leaves = tuple(t.requires_grad_() for t in (value, locations, weights))
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn(v, shapes, starts, loc, w), leaves, eps=1e-6, atol=1e-7
    )


def test_non_contiguous_inputs_and_list_shapes() -> None:
    value, shapes, starts, locations, weights = _inputs(1, num_queries=5)
    value_nc = value.transpose(1, 2).contiguous().transpose(1, 2)
    locations_nc = torch.stack([locations, locations], dim=-1)[..., 1]
    weights_nc = weights.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (value_nc.is_contiguous() or locations_nc.is_contiguous())
    level_shapes = [tuple(hw) for hw in shapes.tolist()]
    torch.testing.assert_close(
        ms_deform_attn(value_nc, level_shapes, starts, locations_nc, weights_nc),
        _pytorch(value, shapes, starts, locations, weights).float(),
        atol=1e-5,
        rtol=1e-5,
    )


def test_empty_and_pointless_inputs() -> None:
    value, shapes, starts, locations, weights = _inputs(1, num_queries=2)
    empty = ms_deform_attn(value, shapes, starts, locations[:, :0], weights[:, :0])
    assert empty.shape == (1, 0, HEADS * HEAD_DIM)
    zero = ms_deform_attn(value, shapes, starts, locations[..., :0, :], weights[..., :0])
    assert zero.shape == (1, 2, HEADS * HEAD_DIM) and torch.count_nonzero(zero) == 0


def test_opcheck_schema_fake_and_autograd_registration() -> None:
    """The registrations FakeTensor and autograd rely on (the ``aot_dispatch`` checks need real
    kernels: the interpreter reads the data pointers of AOTAutograd's fake tensors)."""
    from mask2former.modeling.ops import triton_kernel

    value, shapes, starts, locations, weights = _inputs(1, num_queries=2, num_heads=2)
    args = [t.requires_grad_() for t in (value, locations, weights)]
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    result = torch.library.opcheck(
        triton_kernel.triton_forward, (args[0], shapes, starts, args[1], args[2]), test_utils=checks
    )
    assert result == dict.fromkeys(checks, "SUCCESS")


def test_fake_cuda_tensors_take_the_triton_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a compiled build, CUDA tensors take Triton; under FakeTensorMode its fake kernel
    gives the output's shape, dtype and device without running anything."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    monkeypatch.setenv(dispatch.BACKEND_ENV, "")
    monkeypatch.setattr(dispatch, "kernel_prebuilt", lambda: False)
    inputs = _inputs(2, torch.bfloat16, num_queries=5)
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        value, shapes, starts, locations, weights = (
            mode.from_tensor(t.cpu()).to("cuda") for t in inputs
        )
        assert dispatch.select_path(value)[0] == "triton"
        out = ms_deform_attn(value, LEVELS, starts, locations, weights)
    assert (out.shape, out.dtype, out.device.type) == (
        (2, 5, HEADS * HEAD_DIM),
        torch.bfloat16,
        "cuda",
    )
