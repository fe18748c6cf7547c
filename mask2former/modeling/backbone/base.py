"""Backbone interface: a module mapping an image batch to named multi-scale feature maps.

Shape shorthand: B images, C channels, H, W padded input size.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["ShapeSpec", "Backbone"]


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride (input pixels per feature pixel) of one feature map."""

    channels: int
    stride: int = 1


class Backbone(nn.Module):
    """Base class: ``forward(Tensor[B, 3, H, W]) -> {name: Tensor[B, C, H/s, W/s]}``."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def output_shape(self) -> dict[str, ShapeSpec]:
        """``{name: ShapeSpec}`` of every returned feature map."""
        raise NotImplementedError

    @property
    def size_divisibility(self) -> int:
        """Inputs are padded to a multiple of this (0 = no requirement)."""
        return 0
