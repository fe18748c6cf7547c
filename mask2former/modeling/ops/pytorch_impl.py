"""Pure-PyTorch multi-scale deformable attention (runs on any device).

Shape shorthand: B batch, S total flattened value length (sum of h*w over levels),
M heads, Dh channels per head, L levels, P sampling points, Lq queries.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def ms_deform_attn_pytorch(
    value: Tensor,
    spatial_shapes: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention with one bilinear ``grid_sample`` per level.

    Same arithmetic as the per-level formulation of the released Mask2Former code (see
    ``reference.ms_deform_attn_grid_sample``) up to the order of the final sum, but with one
    layout copy of ``value``/locations/weights for all levels instead of one per level and
    no stacking of the per-level samples (``docs/benchmarks.md`` has the figures).

    Args:
        value: Tensor[B, S, M, Dh], flattened multi-level features.
        spatial_shapes: LongTensor[L, 2], ``(h, w)`` of each level; ``sum(h * w) == S``.
        sampling_locations: Tensor[B, Lq, M, L, P, 2], normalised ``(x, y)``; ``(0, 0)`` is
            the top-left corner of the top-left pixel, ``(1, 1)`` the bottom-right corner of
            the bottom-right pixel. Locations outside ``[0, 1]`` read zeros.
        attention_weights: Tensor[B, Lq, M, L, P], weight of each sampled point.

    Returns:
        Tensor[B, Lq, M * Dh], attention output with heads concatenated.
    """
    b, s, m, dh = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    # one copy for all levels: B x S x M x Dh -> B*M x Dh x S; each level is then a view
    value_t = value.permute(0, 2, 3, 1).reshape(b * m, dh, s)
    # [0, 1] -> [-1, 1] (grid_sample, align_corners=False)
    # B x Lq x M x L x P x 2 -> L x B*M x Lq x P x 2
    grids = (2 * sampling_locations - 1).permute(3, 0, 2, 1, 4, 5)
    grids = grids.reshape(num_levels, b * m, lq, num_points, 2)
    # B x Lq x M x L x P -> L x B*M x 1 x Lq x P
    weights = attention_weights.permute(3, 0, 2, 1, 4).reshape(num_levels, b * m, 1, lq, num_points)
    output = None
    levels = value_t.split([h * w for h, w in shapes], dim=-1)
    for lid, ((h, w), value_l) in enumerate(zip(shapes, levels, strict=True)):
        # B*M x Dh x Lq x P
        sampled = F.grid_sample(
            value_l.view(b * m, dh, h, w),
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
