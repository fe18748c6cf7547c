"""Sub-blocks of the masked-attention transformer decoder (sequence-first layout).

Shape shorthand: Q queries, B images, N memory tokens (h*w of one level), C width, nH heads.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SelfAttentionLayer", "CrossAttentionLayer", "FFNLayer", "MLP"]


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


def _xavier(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """Query self-attention with residual and LayerNorm (post-norm unless ``normalize_before``)."""

    def __init__(
        self, *, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier(self)

    def forward(self, tgt: Tensor, query_pos: Tensor | None = None) -> Tensor:
        """Tensor[Q, B, C] -> Tensor[Q, B, C]."""
        x = self.norm(tgt) if self.normalize_before else tgt
        q = k = _with_pos(x, query_pos)
        out = tgt + self.dropout(self.self_attn(q, k, value=x, need_weights=False)[0])
        return out if self.normalize_before else self.norm(out)


class CrossAttentionLayer(nn.Module):
    """Queries attend to one memory level, optionally restricted by a boolean mask."""

    def __init__(
        self, *, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False
    ) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier(self)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        """Cross-attention.

        Args:
            tgt: Tensor[Q, B, C] queries.
            memory: Tensor[N, B, C] pixel tokens; ``pos`` Tensor[N, B, C] their encoding.
            memory_mask: bool Tensor[B*nH, Q, N], True = not attended.
            query_pos: Tensor[Q, B, C].

        Returns:
            Tensor[Q, B, C].
        """
        x = self.norm(tgt) if self.normalize_before else tgt
        attn = self.multihead_attn(
            query=_with_pos(x, query_pos),
            key=_with_pos(memory, pos),
            value=memory,
            attn_mask=memory_mask,
            need_weights=False,
        )[0]
        out = tgt + self.dropout(attn)
        return out if self.normalize_before else self.norm(out)


class FFNLayer(nn.Module):
    """Linear -> ReLU -> Linear with residual and LayerNorm."""

    def __init__(
        self,
        *,
        d_model: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        normalize_before: bool = False,
    ) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier(self)

    def forward(self, tgt: Tensor) -> Tensor:
        """Tensor[Q, B, C] -> Tensor[Q, B, C]."""
        x = self.norm(tgt) if self.normalize_before else tgt
        out = tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        return out if self.normalize_before else self.norm(out)


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (none after the last)."""

    def __init__(
        self, *, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int
    ) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[..., input_dim] -> Tensor[..., output_dim]."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
