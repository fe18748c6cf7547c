"""Compiled ms_deform_attn kernels against the PyTorch path (needs a CUDA GPU).

Tolerances (absolute and relative, outputs of magnitude ~1):
float64 1e-10; float32 1e-5 forward / 1e-4 gradients; float16 2e-3 / 1e-2 and bfloat16
2e-2 / 2e-2 against the float32 PyTorch path on the same (rounded) inputs.
"""

from __future__ import annotations

import pytest
import torch

from mask2former.modeling.ops import ms_deform_attn
from mask2former.modeling.ops.kernel import kernel_status, ms_deform_attn_kernel
from mask2former.modeling.ops.pytorch_impl import ms_deform_attn_pytorch
from mask2former.modeling.ops.reference import random_inputs

pytestmark = pytest.mark.gpu  # skipped without a CUDA device (tests/conftest.py)

LEVELS = [(13, 17), (7, 9), (4, 5), (1, 3)]
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 1e-2),
    torch.bfloat16: (2e-2, 2e-2),
}


@pytest.fixture(scope="module", autouse=True)
def _kernels() -> None:
    available, reason = kernel_status()
    if not available:
        pytest.fail(f"a GPU is present but the kernels are not: {reason}")


def _inputs(dtype: torch.dtype, *, batch: int = 2, head_dim: int = 5, queries: int = 40):
    generator = torch.Generator().manual_seed(0)
    return random_inputs(
        batch=batch,
        spatial_shapes=LEVELS,
        num_queries=queries,
        num_heads=3,
        head_dim=head_dim,
        num_points=4,
        dtype=dtype,
        device="cuda",
        margin=0.2,
        generator=generator,
    )


def _pytorch(inputs, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    value, shapes, _, locations, weights = inputs
    return ms_deform_attn_pytorch(value.to(dtype), shapes, locations.to(dtype), weights.to(dtype))


def _grads(fn, inputs) -> list[torch.Tensor]:
    args = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*args)
    probe = torch.linspace(-1, 1, out.numel(), device=out.device, dtype=out.dtype).view_as(out)
    (out * probe).sum().backward()
    return [args[i].grad for i in (0, 3, 4)]


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("head_dim", [5, 32, 33, 64])
def test_forward_matches_pytorch(dtype: torch.dtype, head_dim: int) -> None:
    inputs = _inputs(dtype, head_dim=head_dim)
    out = ms_deform_attn_kernel(*inputs, 64)
    assert out.dtype == dtype
    reference_dtype = dtype if dtype == torch.float64 else torch.float32
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(
        out.to(reference_dtype), _pytorch(inputs, reference_dtype), atol=atol, rtol=rtol
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backward_matches_pytorch(dtype: torch.dtype) -> None:
    inputs = _inputs(dtype, head_dim=33)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    kernel = _grads(lambda *a: ms_deform_attn_kernel(*a, 64), inputs)
    expected = _grads(lambda v, s, i, loc, w: ms_deform_attn_pytorch(v, s, loc, w), inputs)
    for got, want in zip(kernel, expected, strict=True):
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_backward_is_finite_and_close(dtype: torch.dtype) -> None:
    inputs = _inputs(dtype, head_dim=32)
    kernel = _grads(lambda *a: ms_deform_attn_kernel(*a, 64), inputs)
    expected = _grads(
        lambda v, s, i, loc, w: ms_deform_attn_pytorch(v.float(), s, loc.float(), w.float()),
        inputs,
    )
    for got, want in zip(kernel, expected, strict=True):
        assert got.dtype == dtype and torch.isfinite(got).all()
        scale = want.abs().max().item()
        torch.testing.assert_close(got.float(), want.float(), atol=2e-2 * scale, rtol=5e-2)


@pytest.mark.parametrize("head_dim", [3, 33])
def test_gradcheck_float64_odd_channels(head_dim: int) -> None:
    value, shapes, starts, locations, weights = _inputs(
        torch.float64, batch=1, head_dim=head_dim, queries=3
    )
    leaves = tuple(t.requires_grad_() for t in (value, locations, weights))
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn_kernel(v, shapes, starts, loc, w, 64),
        leaves,
        eps=1e-6,
        atol=1e-5,
    )


def test_non_contiguous_inputs() -> None:
    value, shapes, starts, locations, weights = _inputs(torch.float32)
    value_nc = value.transpose(1, 2).contiguous().transpose(1, 2)
    locations_nc = torch.stack([locations, locations], dim=-1)[..., 1]
    weights_nc = weights.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (value_nc.is_contiguous() or locations_nc.is_contiguous())
    assert not weights_nc.is_contiguous()
    torch.testing.assert_close(
        ms_deform_attn(value_nc, shapes, starts, locations_nc, weights_nc),
        ms_deform_attn_kernel(value, shapes, starts, locations, weights, 64),
    )


def test_autocast_computes_in_float32() -> None:
    value, shapes, starts, locations, weights = (
        t.half() if t.is_floating_point() else t for t in _inputs(torch.float32, head_dim=32)
    )
    with torch.autocast("cuda", dtype=torch.float16):
        out = ms_deform_attn(value, shapes, starts, locations, weights)
    # the autocast rule casts the half inputs to float32 before the kernel runs
    assert out.dtype == torch.float32
    expected = _pytorch((value, shapes, starts, locations, weights), torch.float32)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("step", [1, 2, 3, 64])
def test_im2col_step_does_not_change_results(step: int) -> None:
    inputs = _inputs(torch.float64, batch=3)
    reference = ms_deform_attn_kernel(*inputs, 64)
    assert torch.equal(ms_deform_attn_kernel(*inputs, step), reference)
    for got, want in zip(
        _grads(lambda *a: ms_deform_attn_kernel(*a, step), inputs),
        _grads(lambda *a: ms_deform_attn_kernel(*a, 64), inputs),
        strict=True,
    ):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_empty_and_pointless_inputs() -> None:
    value, shapes, starts, locations, weights = _inputs(torch.float32)
    assert ms_deform_attn_kernel(
        value, shapes, starts, locations[:, :0], weights[:, :0], 64
    ).shape == (
        2,
        0,
        15,
    )
    zero = ms_deform_attn_kernel(value, shapes, starts, locations[..., :0, :], weights[..., :0], 64)
    assert torch.count_nonzero(zero) == 0


def test_kernel_errors_propagate() -> None:
    value, shapes, starts, locations, weights = _inputs(torch.float32)
    with pytest.raises(RuntimeError, match="share a dtype"):
        ms_deform_attn_kernel(value, shapes, starts, locations.double(), weights, 64)


def test_opcheck_fake_and_autograd_registration() -> None:
    inputs = _inputs(torch.float64, batch=1, queries=5)
    args = [t.requires_grad_() if t.is_floating_point() else t for t in inputs]
    torch.library.opcheck(torch.ops.instaformer.ms_deform_attn_forward.default, (*args, 64))


def test_torch_compile_traces_the_op() -> None:
    inputs = _inputs(torch.float32)
    compiled = torch.compile(lambda *a: ms_deform_attn_kernel(*a, 64), fullgraph=True)
    torch.testing.assert_close(compiled(*inputs), ms_deform_attn_kernel(*inputs, 64))
