"""``build_meta_arch(cfg)``: the meta-architecture registered as ``MODEL.META_ARCHITECTURE``.

Exactly the registered class: a project that maps other names to its classes does so in its own
builder, above this package.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from mask2former.config import CfgNode
from mask2former.modeling.registry import META_ARCH_REGISTRY

__all__ = ["available_device", "build_meta_arch"]

logger = logging.getLogger(__name__)


def available_device(name: str) -> torch.device:
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


def build_meta_arch(cfg: CfgNode) -> nn.Module:
    """Build ``META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)`` on ``MODEL.DEVICE``.

    Weights are not loaded here (see :mod:`mask2former.checkpoint`). The built-in modules are
    registered: importing this module imports its package, :mod:`mask2former.modeling`.
    """
    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    return model.to(available_device(cfg.MODEL.DEVICE))
