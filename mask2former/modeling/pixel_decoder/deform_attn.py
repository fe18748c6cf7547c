"""Multi-scale deformable attention module (Deformable DETR, Zhu et al. 2021, §3 Eq. 3).

Shape shorthand: B images, Lq queries, S flattened value tokens over all levels, C model width,
M heads, L levels, P sampling points per head and level.
The projections live here; the sampling itself is the single op
:func:`mask2former.modeling.ops.ms_deform_attn`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mask2former.modeling.ops import ms_deform_attn

__all__ = ["MSDeformAttn"]


class MSDeformAttn(nn.Module):
    """Each query attends to ``P`` learned offsets around its reference point on every level."""

    def __init__(
        self, *, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.im2col_step = 128
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero offsets except a bias pointing each head in its own direction, k steps out."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor | Sequence[tuple[int, int]],
        input_level_start_index: Tensor,
        input_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Deformable attention.

        Args:
            query: Tensor[B, Lq, C] (with position embedding added).
            reference_points: Tensor[B, Lq, L, 2], normalised ``(x, y)`` in [0, 1] per level.
            input_flatten: Tensor[B, S, C], values of all levels, flattened and concatenated.
            input_spatial_shapes: ``(h, w)`` per level, as L pairs of Python ints (preferred:
                nothing is read back from the device) or LongTensor[L, 2].
            input_level_start_index: LongTensor[L], offset of each level in ``S``.
            input_padding_mask: bool Tensor[B, S], True at padded tokens, or None.

        Returns:
            Tensor[B, Lq, C].
        """
        b, lq, _ = query.shape
        _, s, _ = input_flatten.shape
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(b, s, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(
            b, lq, self.n_heads, self.n_levels, self.n_points, 2
        )
        # softmax over the L*P points of each head, taken along dim 0 of the transposed
        # (L*P) x (B*Lq*M) copy: a softmax over a short last dim is several times slower
        weights = self.attention_weights(query).view(-1, self.n_levels * self.n_points)
        weights = weights.t().contiguous().softmax(0).t().contiguous()
        weights = weights.view(b, lq, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] != 2:
            raise ValueError(
                f"reference_points must end in 2 (x, y); got {tuple(reference_points.shape)}"
            )
        # offsets are in pixels of each level: divide by (w, h). The (w, h) of every level and
        # point and the reference points repeated over points are materialised so that the
        # elementwise ops run over contiguous L*P*2 blocks, not a broadcast inner dim of 2.
        if isinstance(input_spatial_shapes, Tensor):
            normalizer = input_spatial_shapes.flip(-1).to(offsets.dtype)
        else:
            normalizer = offsets.new_tensor([[w, h] for h, w in input_spatial_shapes])
        normalizer = normalizer[:, None].expand(self.n_levels, self.n_points, 2).contiguous()
        # B x Lq x L x 2 -> B x Lq x 1 x L x P x 2
        refs = reference_points[:, :, None, :, None].expand(-1, -1, -1, -1, self.n_points, -1)
        locations = torch.addcdiv(refs.contiguous(), offsets, normalizer)
        output = ms_deform_attn(
            value,
            input_spatial_shapes,
            input_level_start_index,
            locations,
            weights,
            self.im2col_step,
        )
        return self.output_proj(output)
