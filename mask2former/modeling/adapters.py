"""Residual bottleneck adapters of the decoders, as InstaFormer trains them (docs/reference.md
[IF 1.2.2]); ``MODEL.MASK_FORMER.USE_ADAPTERS`` switches them on (:func:`adapter_args`).

Shape shorthand: N tokens (any leading dims), C model width, A adapter width.
An adapter is Linear(C -> A), ReLU, Linear(A -> C); its first weight is Kaiming-normal and
everything else starts at zero, so a freshly inserted adapter outputs exactly 0 and a
pretrained Mask2Former checkpoint behaves identically at step 0. The caller adds
``scale * adapter(x)`` to its sub-block output. Two layouts exist only because the released
checkpoints name their parameters differently in the two places.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mask2former.config import CfgNode

__all__ = ["EncoderAdapter", "DecoderAdapter", "ADAPTER_TYPES", "adapter_args"]


def _init_adapter(first: nn.Linear, second: nn.Linear) -> None:
    nn.init.kaiming_normal_(first.weight)
    nn.init.zeros_(first.bias)
    nn.init.zeros_(second.weight)
    nn.init.zeros_(second.bias)


class EncoderAdapter(nn.Sequential):
    """Pixel-decoder encoder-layer adapter; parameters ``0.*`` and ``2.*``."""

    def __init__(self, *, dim: int, adapter_dim: int) -> None:
        super().__init__(nn.Linear(dim, adapter_dim), nn.ReLU(), nn.Linear(adapter_dim, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_adapter(self[0], self[2])


class DecoderAdapter(nn.Module):
    """Transformer-decoder layer adapter; parameters ``layers.0.*`` and ``layers.1.*``."""

    def __init__(self, *, dim: int, adapter_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, adapter_dim), nn.Linear(adapter_dim, dim)])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_adapter(self.layers[0], self.layers[1])

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[..., C] -> Tensor[..., C]."""
        return self.layers[1](F.relu(self.layers[0](x)))


ADAPTER_TYPES = (EncoderAdapter, DecoderAdapter)


def adapter_args(cfg: CfgNode) -> dict[str, int | float]:
    """``adapter_dim`` (0: none) and ``adapter_scale`` of both decoders, from
    ``MODEL.MASK_FORMER.{USE_ADAPTERS, ADAPTER_DIM, ADAPTER_SCALE}``."""
    mf = cfg.MODEL.MASK_FORMER
    return {
        "adapter_dim": mf.ADAPTER_DIM if mf.USE_ADAPTERS else 0,
        "adapter_scale": mf.ADAPTER_SCALE,
    }
