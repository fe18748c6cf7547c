"""Pure-PyTorch multi-scale deformable attention (runs on any device).

Shape shorthand: B batch, S total flattened value length (sum of h*w over levels),
M heads, Dh channels per head, L levels, P sampling points, Lq queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ms_deform_attn_pytorch(
    value: Tensor,
    spatial_shapes: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention with one bilinear ``grid_sample`` per level.

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
    b, _, m, dh = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    value_list = value.split(sizes, dim=1)
    # [0, 1] -> [-1, 1], the grid_sample convention with align_corners=False
    sampling_grids = 2 * sampling_locations - 1
    sampled = []
    for lid, (h, w) in enumerate(spatial_shapes.tolist()):
        # B x hw x M x Dh -> B*M x Dh x h x w
        value_l = value_list[lid].flatten(2).transpose(1, 2).reshape(b * m, dh, h, w)
        # B x Lq x M x P x 2 -> B*M x Lq x P x 2
        grid_l = sampling_grids[:, :, :, lid].transpose(1, 2).flatten(0, 1)
        # B*M x Dh x Lq x P
        sampled.append(
            F.grid_sample(
                value_l,
                grid_l,
                mode="bilinear",
                padding_mode="zeros",
                align_corners=False,
            )
        )
    # B x Lq x M x L x P -> B*M x 1 x Lq x L*P
    weights = attention_weights.transpose(1, 2).reshape(
        b * m, 1, lq, num_levels * num_points
    )
    # B*M x Dh x Lq x L*P -> B*M x Dh x Lq -> B x M*Dh x Lq
    output = (
        (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(b, m * dh, lq)
    )
    # B x M*Dh x Lq -> B x Lq x M*Dh
    return output.transpose(1, 2).contiguous()
