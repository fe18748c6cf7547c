"""InstaFormer model: ``build_model(cfg)`` builds the meta-architecture named in the config.

The released configs call InstaFormer "MaskFormer" (``MODEL.META_ARCHITECTURE``); that name
builds :class:`InstaFormer`, which without an order head (``GEOMETRIC_PREDICTOR.NAME = ""``) is
exactly Mask2Former's ``MaskFormer``. Other names are looked up in ``META_ARCH_REGISTRY``
(e.g. "InstaOrderNet").
"""

from __future__ import annotations

from torch import nn

from instaformer.modeling.meta_arch import InstaFormer
from mask2former.config import CfgNode
from mask2former.modeling.build import available_device
from mask2former.modeling.registry import META_ARCH_REGISTRY

__all__ = ["META_ARCH_ALIASES", "InstaFormer", "build_model", "checkpoint_cfg"]

# MODEL.META_ARCHITECTURE of the released configs -> the class this project builds for it.
META_ARCH_ALIASES = {"MaskFormer": "InstaFormer"}


def checkpoint_cfg(cfg: CfgNode) -> CfgNode:
    """``cfg`` for a model whose every weight a checkpoint will give (evaluation, inference, a
    resumed run): a timm trunk is built without its pretrained weights (``MODEL.TIMM.PRETRAINED``
    False), which the checkpoint replaces anyway, so such a run needs no network or hub cache.
    ``cfg`` itself when there is nothing to change."""
    if not cfg.MODEL.TIMM.PRETRAINED:
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.TIMM.PRETRAINED = False
    cfg.MODEL.TIMM.PRETRAINED_FILE = ""
    cfg.freeze()
    return cfg


def build_model(cfg: CfgNode, *, from_checkpoint: bool = False) -> nn.Module:
    """The meta-architecture of ``cfg`` (with ``META_ARCH_ALIASES``) on ``MODEL.DEVICE``.

    Weights are not loaded here (see :mod:`mask2former.checkpoint`); ``from_checkpoint``: a
    checkpoint will give every weight, so pretrained trunk weights are not fetched
    (:func:`checkpoint_cfg`).
    """
    if from_checkpoint:
        cfg = checkpoint_cfg(cfg)
    import instaformer.instaordernet.meta_arch  # noqa: F401  (registers "InstaOrderNet")
    import mask2former.modeling  # noqa: F401  (registers the Mask2Former modules)

    name = cfg.MODEL.META_ARCHITECTURE
    model = META_ARCH_REGISTRY.get(META_ARCH_ALIASES.get(name, name))(cfg)
    return model.to(available_device(cfg.MODEL.DEVICE))
