"""Naive loop reference of multi-scale deformable attention, for tests only.

It spells out the bilinear interpolation (zero padding, pixel centres at half-integers,
the ``grid_sample(align_corners=False)`` convention) without ``grid_sample`` or gathers over
levels, so it checks the fast paths independently. Loops over levels, points and the four
corners; vectorised over batch, queries, heads and channels only.

Shape shorthand: B batch, S total flattened value length (sum of h*w over levels),
M heads, Dh channels per head, L levels, P sampling points, Lq queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ms_deform_attn_reference(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Slow, obviously correct multi-scale deformable attention.

    Args:
        value: Tensor[B, S, M, Dh].
        spatial_shapes: LongTensor[L, 2], ``(h, w)`` per level.
        level_start_index: LongTensor[L], offset of each level in ``S``.
        sampling_locations: Tensor[B, Lq, M, L, P, 2], normalised ``(x, y)``.
        attention_weights: Tensor[B, Lq, M, L, P].

    Returns:
        Tensor[B, Lq, M * Dh].
    """
    b, _, m, dh = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    output = value.new_zeros(b, lq, m, dh)
    batch_idx = torch.arange(b).view(b, 1, 1)
    head_idx = torch.arange(m).view(1, 1, m)
    for lid in range(num_levels):
        h, w = (int(s) for s in spatial_shapes[lid])
        start = int(level_start_index[lid])
        for pid in range(num_points):
            # pixel coordinates, pixel (i, j) has its centre at (j + 0.5, i + 0.5) / (w, h)
            x = sampling_locations[:, :, :, lid, pid, 0] * w - 0.5  # B x Lq x M
            y = sampling_locations[:, :, :, lid, pid, 1] * h - 0.5
            x0 = torch.floor(x)
            y0 = torch.floor(y)
            sample = value.new_zeros(b, lq, m, dh)
            for dx in (0, 1):
                for dy in (0, 1):
                    xc = x0 + dx
                    yc = y0 + dy
                    weight = (1 - (x - xc).abs()) * (1 - (y - yc).abs())
                    inside = (xc >= 0) & (xc <= w - 1) & (yc >= 0) & (yc <= h - 1)
                    flat = start + yc.clamp(0, h - 1).long() * w + xc.clamp(0, w - 1).long()
                    corner = value[batch_idx, flat, head_idx]  # B x Lq x M x Dh
                    sample = sample + (weight * inside)[..., None] * corner
            output = output + attention_weights[:, :, :, lid, pid, None] * sample
    return output.flatten(2)


def ms_deform_attn_grid_sample(
    value: Tensor,
    spatial_shapes: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Per-level ``grid_sample`` formulation, as in the released Mask2Former code.

    Kept as the parity target (released checkpoints were trained with it) and as the
    baseline of the op benchmark.

    Args:
        value: Tensor[B, S, M, Dh].
        spatial_shapes: LongTensor[L, 2], ``(h, w)`` per level.
        sampling_locations: Tensor[B, Lq, M, L, P, 2], normalised ``(x, y)``.
        attention_weights: Tensor[B, Lq, M, L, P].

    Returns:
        Tensor[B, Lq, M * Dh].
    """
    b, _, m, dh = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    value_list = value.split([h * w for h, w in shapes], dim=1)
    sampling_grids = 2 * sampling_locations - 1
    sampled = []
    for lid, (h, w) in enumerate(shapes):
        # B x hw x M x Dh -> B*M x Dh x h x w
        value_l = value_list[lid].flatten(2).transpose(1, 2).reshape(b * m, dh, h, w)
        # B x Lq x M x P x 2 -> B*M x Lq x P x 2
        grid_l = sampling_grids[:, :, :, lid].transpose(1, 2).flatten(0, 1)
        # B*M x Dh x Lq x P
        sampled.append(
            F.grid_sample(
                value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )
    # B x Lq x M x L x P -> B*M x 1 x Lq x L*P
    weights = attention_weights.transpose(1, 2).reshape(b * m, 1, lq, num_levels * num_points)
    # B*M x Dh x Lq x L x P -> B x M*Dh x Lq
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(b, m * dh, lq)
    # B x M*Dh x Lq -> B x Lq x M*Dh
    return output.transpose(1, 2).contiguous()


def random_inputs(
    *,
    batch: int,
    spatial_shapes: list[tuple[int, int]],
    num_queries: int,
    num_heads: int,
    head_dim: int,
    num_points: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    margin: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Random op inputs for tests and benchmarks.

    Args:
        spatial_shapes: ``(h, w)`` of each level.
        margin: locations are drawn uniformly from ``[-margin, 1 + margin]``.

    Returns:
        ``value`` Tensor[B, S, M, Dh], ``spatial_shapes`` LongTensor[L, 2],
        ``level_start_index`` LongTensor[L], ``sampling_locations`` Tensor[B, Lq, M, L, P, 2],
        ``attention_weights`` Tensor[B, Lq, M, L, P] (softmax over ``L * P``).
    """
    shapes = torch.tensor(spatial_shapes, dtype=torch.long)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    num_levels = len(spatial_shapes)
    q, m, p = num_queries, num_heads, num_points
    value = torch.randn(batch, int(areas.sum()), m, head_dim, generator=generator, dtype=dtype)
    locations = torch.rand(batch, q, m, num_levels, p, 2, generator=generator, dtype=dtype)
    locations = locations * (1 + 2 * margin) - margin
    logits = torch.randn(batch, q, m, num_levels * p, generator=generator, dtype=dtype)
    weights = logits.softmax(-1).view(batch, q, m, num_levels, p)
    return tuple(t.to(device) for t in (value, shapes, starts, locations, weights))
