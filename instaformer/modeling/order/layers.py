"""Order-head building blocks: MLP and pre-norm transformer layers, without dropout.

Shape shorthand: L tokens (the attention's sequence axis), N independent sequences (a batch),
C channels.

Attribute names (``layers``, ``norm1``, ``attn``, ``norm2``, ``mlp``) follow the released
checkpoints (docs/reference.md [IF 1.7]), so their state dicts load by name.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MLP", "TransformerLayer", "TransformerStack", "xavier_init_matrices"]


class MLP(nn.Module):
    """``num_layers`` linear layers ``in -> hidden -> ... -> hidden -> out``, ReLU in between.

    No activation after the last layer, no dropout.
    """

    def __init__(self, *, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got num_layers={num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[..., in_dim] -> Tensor[..., out_dim]."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu_(x)  # in place on the fresh linear output
        return x


class TransformerLayer(nn.Module):
    """Pre-norm self-attention layer without dropout.

    ``x <- x + MHA(LN1(x)); x <- x + MLP(LN2(x))``. The attention is sequence-first: the first
    axis of the input is the token axis that attention mixes.
    """

    def __init__(
        self, *, dim: int, num_heads: int, mlp_expansion: int = 4, mlp_num_layers: int = 2
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(
            in_dim=dim, hidden_dim=dim * mlp_expansion, out_dim=dim, num_layers=mlp_num_layers
        )

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[L, C] (one sequence) or Tensor[L, N, C] (N sequences) -> same shape."""
        u = self.norm1(x)
        x = x + self.attn(u, u, u, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TransformerStack(nn.Module):
    """``num_layers`` :class:`TransformerLayer` applied in turn; returns every layer's output."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        num_layers: int,
        mlp_expansion: int = 4,
        mlp_num_layers: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(
                dim=dim,
                num_heads=num_heads,
                mlp_expansion=mlp_expansion,
                mlp_num_layers=mlp_num_layers,
            )
            for _ in range(num_layers)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Tensor[L, C] or Tensor[L, N, C] -> list (one per layer) of tensors of the same shape."""
        outputs = []
        for layer in self.layers:
            x = layer(x)
            outputs.append(x)
        return outputs


def xavier_init_matrices(module: nn.Module) -> None:
    """Xavier-uniform on every parameter with at least 2 dims (the released initialisation)."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
