"""PyTorch path of ms_deform_attn against the naive loop reference (always runs, CPU)."""

from __future__ import annotations

import pytest
import torch

from mask2former.modeling.ops import ms_deform_attn
from mask2former.modeling.ops.reference import (
    ms_deform_attn_grid_sample,
    ms_deform_attn_reference,
    random_inputs,
)

# several levels of different, non-square sizes, including 1-pixel rows/columns
LEVELS = [(7, 9), (4, 5), (1, 3), (2, 1)]
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}


def _inputs(
    dtype: torch.dtype,
    *,
    head_dim: int = 5,
    batch: int = 2,
    num_queries: int = 6,
    num_heads: int = 3,
    num_points: int = 3,
):
    return random_inputs(
        batch=batch,
        spatial_shapes=LEVELS,
        num_queries=num_queries,
        num_heads=num_heads,
        head_dim=head_dim,
        num_points=num_points,
        dtype=dtype,
        margin=0.25,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("head_dim", [1, 5, 8])
def test_matches_loop_reference(dtype: torch.dtype, head_dim: int) -> None:
    inputs = _inputs(dtype, head_dim=head_dim)
    out = ms_deform_attn(*inputs)
    expected = ms_deform_attn_reference(*inputs)
    assert out.shape == (2, 6, 3 * head_dim)
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_released_grid_sample_formulation(dtype: torch.dtype) -> None:
    value, shapes, starts, locations, weights = random_inputs(
        batch=2,
        spatial_shapes=[(32, 24), (16, 12), (8, 6)],
        num_queries=300,
        num_heads=8,
        head_dim=32,
        num_points=4,
        dtype=dtype,
        margin=0.1,
    )
    out = ms_deform_attn(value, shapes, starts, locations, weights)
    expected = ms_deform_attn_grid_sample(value, shapes, locations, weights)
    torch.testing.assert_close(out, expected, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


def test_gradients_match_loop_reference() -> None:
    inputs = _inputs(torch.float64)
    grads = []
    for fn in (ms_deform_attn, ms_deform_attn_reference):
        args = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
        out = fn(*args)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([args[i].grad for i in (0, 3, 4)])
    for got, expected in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


def test_gradcheck_float64() -> None:
    value, shapes, starts, locations, weights = _inputs(
        torch.float64, head_dim=3, batch=1, num_queries=2, num_heads=2, num_points=2
    )
    # random locations lie off the pixel grid lines (where bilinear sampling has kinks) a.s.
    value, locations, weights = (t.requires_grad_() for t in (value, locations, weights))
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn(v, shapes, starts, loc, w),
        (value, locations, weights),
        eps=1e-6,
        atol=1e-5,
    )


def test_non_contiguous_inputs() -> None:
    value, shapes, starts, locations, weights = _inputs(torch.float64)
    # the same data behind permuted / strided storage
    value_nc = value.transpose(0, 2).contiguous().transpose(0, 2)
    locations_nc = torch.stack([locations, locations], dim=-1)[..., 0]
    weights_nc = weights.permute(4, 3, 2, 1, 0).contiguous().permute(4, 3, 2, 1, 0)
    shapes_nc = torch.stack([shapes, shapes], dim=0)[0]
    assert not value_nc.is_contiguous() and not locations_nc.is_contiguous()
    assert not weights_nc.is_contiguous()
    out = ms_deform_attn(value_nc, shapes_nc, starts, locations_nc, weights_nc)
    torch.testing.assert_close(
        out, ms_deform_attn_reference(value, shapes, starts, locations, weights)
    )


def test_locations_outside_read_zeros() -> None:
    value, shapes, starts, locations, weights = _inputs(torch.float64)
    far = locations.clone()
    far[..., 0] = torch.where(far[..., 0] > 0.5, far[..., 0] + 2.0, far[..., 0] - 2.0)
    assert torch.count_nonzero(ms_deform_attn(value, shapes, starts, far, weights)) == 0
    # half a pixel outside still touches the border pixels
    edge = torch.full_like(locations, 1.0)
    edge[..., 0] = -0.25 / shapes[:, 1].to(edge).view(1, 1, 1, -1, 1)
    out = ms_deform_attn(value, shapes, starts, edge, weights)
    torch.testing.assert_close(out, ms_deform_attn_reference(value, shapes, starts, edge, weights))
    assert torch.count_nonzero(out) > 0


def test_dtype_promotion_and_empty_queries() -> None:
    value, shapes, starts, locations, weights = _inputs(torch.float32)
    out = ms_deform_attn(value, shapes, starts, locations.double(), weights)
    assert out.dtype == torch.float64
    empty = ms_deform_attn(value, shapes, starts, locations[:, :0], weights[:, :0])
    assert empty.shape == (2, 0, 15)


def test_bad_inputs_name_the_problem() -> None:
    value, shapes, starts, locations, weights = _inputs(torch.float32)
    with pytest.raises(ValueError, match="attention_weights"):
        ms_deform_attn(value, shapes, starts, locations, weights[..., :1])
    with pytest.raises(ValueError, match="cover"):
        ms_deform_attn(value[:, 1:], shapes, starts, locations, weights)
    with pytest.raises(ValueError, match="im2col_step"):
        ms_deform_attn(value, shapes, starts, locations, weights, im2col_step=0)
    with pytest.raises(ValueError, match="int64"):
        ms_deform_attn(value, shapes.int(), starts, locations, weights)


def test_inference_and_training_paths_agree() -> None:
    from mask2former.modeling.ops.pytorch_impl import gather_path, grid_sample_path

    shapes = [(7, 9), (4, 5), (2, 3)]
    value, spatial, _, loc, attn = random_inputs(
        batch=2,
        spatial_shapes=shapes,
        num_queries=11,
        num_heads=3,
        head_dim=5,
        num_points=4,
        dtype=torch.float64,
        margin=0.2,
    )
    gathered = gather_path(value, shapes, loc, attn)
    sampled = grid_sample_path(value, spatial, loc, attn)
    torch.testing.assert_close(gathered, sampled, rtol=0, atol=1e-12)
