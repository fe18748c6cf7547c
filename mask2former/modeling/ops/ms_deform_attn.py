"""Public multi-scale deformable attention op and its single dispatch point.

Shape shorthand: B batch, S total flattened value length (sum of h*w over levels),
M heads, Dh channels per head, L levels, P sampling points, Lq queries.
"""

from __future__ import annotations

from torch import Tensor

from mask2former.modeling.ops.pytorch_impl import ms_deform_attn_pytorch


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int = 64,
) -> Tensor:
    """Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, Eq. 3).

    Args:
        value: Tensor[B, S, M, Dh], flattened multi-level features.
        spatial_shapes: LongTensor[L, 2], ``(h, w)`` of each level; ``sum(h * w) == S``.
        level_start_index: LongTensor[L], offset of each level in ``S``.
        sampling_locations: Tensor[B, Lq, M, L, P, 2], normalised ``(x, y)`` in ``[0, 1]``.
        attention_weights: Tensor[B, Lq, M, L, P], weight of each sampled point.
        im2col_step: batch chunk size used by the compiled kernel.

    Returns:
        Tensor[B, Lq, M * Dh].
    """
    return ms_deform_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)
