"""Fast paths of the Mask2Former forward give the values of their plain formulations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mask2former.modeling.ops import ms_deform_attn
from mask2former.modeling.ops.reference import ms_deform_attn_reference, random_inputs
from mask2former.modeling.transformer_decoder.mask2former_transformer_decoder import (
    downsample_bilinear,
)


@pytest.mark.parametrize("size", [(32, 24), (16, 12), (8, 6), (64, 48), (20, 24), (32, 48)])
def test_downsample_bilinear_matches_interpolate(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 64, 48)
    expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    out = downsample_bilinear(x, size)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_ms_deform_attn_takes_python_shapes() -> None:
    levels = [(6, 5), (3, 3), (1, 2)]
    value, shapes, starts, locations, weights = random_inputs(
        batch=2, spatial_shapes=levels, num_queries=7, num_heads=2, head_dim=4, num_points=3,
        dtype=torch.float64, margin=0.2,
    )  # fmt: skip
    expected = ms_deform_attn_reference(value, shapes, starts, locations, weights)
    out = ms_deform_attn(value, levels, starts, locations, weights)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="cover"):
        ms_deform_attn(value, [(6, 5), (3, 3), (1, 1)], starts, locations, weights)
    with pytest.raises(ValueError, match="pairs of ints"):
        ms_deform_attn(value, [(6, 5, 1), (3, 3), (1, 2)], starts, locations, weights)
