"""Pure-PyTorch multi-scale deformable attention (runs on any device).

Shape shorthand: B batch, S total flattened value length (sum of h*w over levels),
M heads, Dh channels per head, L levels, P sampling points, Lq queries.

Bilinear sampling followed by the weighted sum over levels and points is one sparse
weighted gather: every output row ``(b, q, m)`` is a weighted sum of ``L * P * 4`` rows of
``value`` viewed as Tensor[B*S*M, Dh] (4 bilinear corners per point). That is exactly
``F.embedding_bag(mode="sum", per_sample_weights=...)``, which reads each ``Dh``-vector
contiguously, needs no layout copy of ``value`` and never materialises the per-point samples
(``docs/benchmarks.md`` has the figures against the per-level ``grid_sample`` formulation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _level_shapes(spatial_shapes: Tensor | Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    if isinstance(spatial_shapes, Tensor):
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(int(h), int(w)) for h, w in spatial_shapes]


def ms_deform_attn_pytorch(
    value: Tensor,
    spatial_shapes: Tensor | Sequence[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention in pure PyTorch; arguments as :func:`gather_path`.

    Without autograd (inference) the weighted ``embedding_bag`` gather runs: it is several
    times faster than per-level ``grid_sample`` on the CPU. When a gradient is needed the
    per-level ``grid_sample`` formulation runs instead, because the backward of
    ``embedding_bag`` (a sort of all gathered rows) is the slower one. Both compute the same
    function (tests compare them with the loop reference).
    """
    needs_grad = torch.is_grad_enabled() and (
        value.requires_grad or sampling_locations.requires_grad or attention_weights.requires_grad
    )
    path = grid_sample_path if needs_grad else gather_path
    return path(value, spatial_shapes, sampling_locations, attention_weights)


def grid_sample_path(
    value: Tensor,
    spatial_shapes: Tensor | Sequence[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """One bilinear ``grid_sample`` per level, with one layout copy for all levels.

    Same arithmetic as the released per-level formulation (``reference.ms_deform_attn_grid_sample``)
    up to the order of the final sum; arguments and return as :func:`gather_path`.
    """
    shapes = _level_shapes(spatial_shapes)
    b, s, m, dh = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    # one copy for all levels: B x S x M x Dh -> B*M x Dh x S; each level is then a view
    value_t = value.permute(0, 2, 3, 1).reshape(b * m, dh, s)
    # [0, 1] -> [-1, 1] (grid_sample, align_corners=False)
    # B x Lq x M x L x P x 2 -> L x B*M x Lq x P x 2
    grids = (2 * sampling_locations - 1).permute(3, 0, 2, 1, 4, 5)
    grids = grids.reshape(num_levels, b * m, lq, num_points, 2)
    # B x Lq x M x L x P -> L x B*M x 1 x Lq x P
    weights = attention_weights.permute(3, 0, 2, 1, 4)
    weights = weights.reshape(num_levels, b * m, 1, lq, num_points)
    output = None
    levels = value_t.split([h * w for h, w in shapes], dim=-1)
    for lid, ((h, w), value_l) in enumerate(zip(shapes, levels, strict=True)):
        # B*M x Dh x Lq x P
        sampled = F.grid_sample(
            value_l.reshape(b * m, dh, h, w),
            grids[lid],
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        # weighted sum over points, accumulated over levels: B*M x Dh x Lq
        part = (sampled * weights[lid]).sum(-1)
        output = part if output is None else output + part
    # B*M x Dh x Lq -> B x M*Dh x Lq -> B x Lq x M*Dh
    return output.view(b, m * dh, lq).transpose(1, 2).contiguous()


def gather_path(
    value: Tensor,
    spatial_shapes: Tensor | Sequence[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention as one weighted ``embedding_bag`` gather.

    Same arithmetic as the loop reference (``reference.ms_deform_attn_reference``): corner
    weights ``(1 - |x - x_c|) * (1 - |y - y_c|)``, corners outside the level weigh 0 (they are
    read from a clamped in-level position), up to the order of the final sum.

    Args:
        value: Tensor[B, S, M, Dh], flattened multi-level features.
        spatial_shapes: ``(h, w)`` of each level, as L pairs of Python ints (no host read, as
            ``torch.export`` wants) or as LongTensor[L, 2]; ``sum(h * w) == S``.
        sampling_locations: Tensor[B, Lq, M, L, P, 2], normalised ``(x, y)``; ``(0, 0)`` is
            the top-left corner of the top-left pixel, ``(1, 1)`` the bottom-right corner of
            the bottom-right pixel. Locations outside ``[0, 1]`` read zeros.
        attention_weights: Tensor[B, Lq, M, L, P], weight of each sampled point.

    Returns:
        Tensor[B, Lq, M * Dh], attention output with heads concatenated.
    """
    shapes = _level_shapes(spatial_shapes)
    b, s, m, dh = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    dtype, device = sampling_locations.dtype, sampling_locations.device
    starts, start = [], 0
    for h, w in shapes:
        starts.append(start)
        start += h * w
    # Per (level, point) constants, materialised as L x P so that every elementwise op below
    # runs over contiguous blocks of L*P elements instead of broadcasting a tiny inner dim.
    widths = [w for _, w in shapes]
    heights = [h for h, _ in shapes]

    def per_level(values: list[int], dt: torch.dtype) -> Tensor:
        t = torch.tensor(values, dtype=dt, device=device)
        return t.view(num_levels, 1).expand(num_levels, num_points).contiguous()

    w_f, h_f = per_level(widths, dtype), per_level(heights, dtype)
    w_l = per_level(widths, torch.long)
    w_max, h_max = w_l - 1, per_level(heights, torch.long) - 1
    # row of value viewed as [B*S*M, Dh] is (b * S + start_l + y * w_l + x) * M + m;
    # base = (b * S + start_l) * M + m as B x 1 x M x L x P
    base = per_level(starts, torch.long).view(1, 1, 1, num_levels, num_points)
    base = base + torch.arange(b, device=device).view(b, 1, 1, 1, 1) * s
    base = (base * m + torch.arange(m, device=device).view(1, 1, m, 1, 1)).contiguous()
    # pixel coordinates (pixel (i, j) has its centre at (j, i)): B x Lq x M x L x P each
    x = sampling_locations[..., 0] * w_f - 0.5
    y = sampling_locations[..., 1] * h_f - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    # weight of the low / high corner along each axis, 0 where that corner lies outside
    wx = ((1 - fx) * ((x0 >= 0) & (x0 <= w_max)), fx * ((x0 >= -1) & (x0 < w_max)))
    wy = ((1 - fy) * ((y0 >= 0) & (y0 <= h_max)), fy * ((y0 >= -1) & (y0 < h_max)))
    # corner positions clamped into the level (outside corners weigh 0 anyway)
    xc = (torch.minimum(x0.clamp_min(0), w_max), torch.minimum((x0 + 1).clamp_min(0), w_max))
    yc = (torch.minimum(y0.clamp_min(0), h_max), torch.minimum((y0 + 1).clamp_min(0), h_max))
    rows, weights = [], []
    for i in (0, 1):
        row_y = yc[i] * w_l * m + base
        weight_y = wy[i] * attention_weights
        for j in (0, 1):
            rows.append(row_y + xc[j] * m)
            weights.append(weight_y * wx[j])
    bag = 4 * num_levels * num_points
    # 4 x B x Lq x M x L x P -> B*Lq*M bags of 4*L*P rows (the order inside a bag is free)
    rows = torch.stack(rows, dim=3).view(b * lq * m, bag)
    weights = torch.stack(weights, dim=3).view(b * lq * m, bag).to(value.dtype)
    # B*Lq*M x Dh -> B x Lq x M*Dh
    out = F.embedding_bag(
        rows, value.reshape(b * s * m, dh), mode="sum", per_sample_weights=weights
    )
    return out.view(b, lq, m * dh)
