"""``build_model(cfg)``: the meta-architecture named by ``MODEL.META_ARCHITECTURE``."""

from __future__ import annotations

import logging

import torch
from torch import nn

from mask2former.modeling.registry import META_ARCH_REGISTRY

__all__ = ["build_model", "resolve_device"]

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``MODEL.DEVICE`` -> device; "cuda" without CUDA falls back to "cpu" with a warning."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f"MODEL.DEVICE {name!r} is not a device: use 'cpu', 'cuda' or 'cuda:N'"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        logger.warning(
            "MODEL.DEVICE is %r but CUDA is not available (torch %s, CUDA build %s): running on "
            "the CPU. Set MODEL.DEVICE cpu to silence this warning.",
            name,
            torch.__version__,
            torch.version.cuda,
        )
        return torch.device("cpu")
    return device


def build_model(cfg) -> nn.Module:
    """Build ``META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)`` on ``MODEL.DEVICE``.

    Weights are not loaded here (see :mod:`mask2former.checkpoint`).
    """
    import mask2former.modeling  # noqa: F401  (registers every built-in module)

    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    return model.to(resolve_device(cfg.MODEL.DEVICE))
