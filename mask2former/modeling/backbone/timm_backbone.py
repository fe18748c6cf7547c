"""``TimmBackbone``: any timm model as the backbone, returning ``res2``..``res5`` at strides 4-32.

Shape shorthand: B images, Hp x Wp padded input (multiples of 32), C_k channels of ``res{k}``,
D width of a plain ViT, p its patch side, h x w = Hp/16 x Wp/16 its token grid.

Two kinds of timm model, told apart by the strides of timm's ``feature_info``:

* hierarchical models (ConvNeXt, ResNet, EfficientNet, Swin, ...): the feature levels at strides
  4, 8, 16 and 32, from timm's ``forward_intermediates``, are ``res2``..``res5`` unchanged
  (channels and strides from ``feature_info``);
* plain ViTs (one stride, the patch side: DINOv2, DeiT, EVA, ...): the output of one block (the
  last by default, after the trunk's final norm) feeds ViTDet's simple feature pyramid
  (:class:`SimpleFeaturePyramid`), which makes ``res2``..``res5`` (256 channels each) from it.
  The pyramid starts from the stride-16 token grid ViTDet builds on: a ViT with another patch
  side p (DINOv2's 14) sees the padded image resized by p/16, to (Hp/16 * p) x (Wp/16 * p), so
  that its token grid is exactly h x w for every p. Its position embeddings are resampled to
  that grid at each call (timm's ``dynamic_img_size``).

The padding divisibility is 32 in both cases (``size_divisibility``): the coarsest level has
stride 32, and for a ViT the token grid has stride 16 whatever its patch side.
``MODEL.MASK_FORMER.SIZE_DIVISIBILITY`` must be -1 (this value) or a multiple of it.

Parameter names are timm's under ``trunk.`` (``backbone.trunk.stages.0.blocks.0.conv_dw.weight``,
``backbone.trunk.blocks.3.attn.qkv.weight``) and the pyramid's under ``pyramid.``; checkpoints
save and load by these names as for every other backbone. The classifier head and the layers
after the last used feature level are removed (timm's ``prune_intermediate_layers``), so every
parameter of the backbone receives a gradient.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from mask2former.config import CfgNode, ConfigError
from mask2former.modeling.backbone.base import Backbone, ShapeSpec
from mask2former.modeling.backbone.resnet import c2_msra_fill
from mask2former.modeling.backbone.timm_models import (
    create_timm_model,
    freeze_leading_groups,
    pretrained_mean_std,
)
from mask2former.modeling.configurable import configurable
from mask2former.modeling.registry import BACKBONE_REGISTRY

__all__ = ["SimpleFeaturePyramid", "TimmBackbone"]

logger = logging.getLogger(__name__)

FEATURE_NAMES = ("res2", "res3", "res4", "res5")
FEATURE_STRIDES = (4, 8, 16, 32)
PYRAMID_STRIDE = 16  # stride of the token grid ViTDet's pyramid starts from
SIZE_DIVISIBILITY = 32


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid (Li et al., "Exploring Plain Vision Transformer Backbones
    for Object Detection", ECCV 2022: Sec. 3 "Simple feature pyramid" and Fig. 2(c); layer
    details from its Appendix A.2).

    From one stride-16 map, scale factors 4, 2, 1 and 1/2 give strides 4, 8, 16 and 32:
    4 = two stride-2 2x2 transposed convolutions with LayerNorm and GELU between them (widths
    D -> D/2 -> D/4), 2 = one (D -> D/2), 1 = the map itself, 1/2 = 2x2 max pooling with stride
    2. Each level then gets a 1x1 convolution to ``out_channels`` and a 3x3 convolution, each
    followed by LayerNorm (over channels). No top-down or lateral connections.
    """

    def __init__(self, *, in_channels: int, out_channels: int = 256) -> None:
        super().__init__()
        from timm.layers import LayerNorm2d

        d = in_channels
        if d % 4:
            raise ValueError(f"pyramid input width must be a multiple of 4, got {d}")

        def up(c_in: int, c_out: int) -> nn.ConvTranspose2d:
            return nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)

        def convs(c_in: int) -> list[nn.Module]:
            lateral = nn.Conv2d(c_in, out_channels, kernel_size=1, bias=False)
            output = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
            c2_msra_fill(lateral)
            c2_msra_fill(output)
            return [lateral, LayerNorm2d(out_channels), output, LayerNorm2d(out_channels)]

        self.out_channels = out_channels
        self.res2 = nn.Sequential(
            up(d, d // 2), LayerNorm2d(d // 2), nn.GELU(), up(d // 2, d // 4), *convs(d // 4)
        )
        self.res3 = nn.Sequential(up(d, d // 2), *convs(d // 2))
        self.res4 = nn.Sequential(*convs(d))
        self.res5 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2), *convs(d))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Tensor[B, D, h, w] (stride 16) -> ``{"res{k}": Tensor[B, out, 16h/2**k, 16w/2**k]}``."""
        return {name: getattr(self, name)(x) for name in FEATURE_NAMES}


def _resolve_out_indices(
    reductions: Sequence[int], out_indices: Sequence[int], plain: bool, name: str
) -> list[int]:
    """Non-negative ``feature_info`` indices: one block (plain ViT) or the 4 levels res2-res5."""
    n = len(reductions)
    bad = [i for i in out_indices if not -n <= i < n]
    if bad:
        raise ConfigError(
            f"MODEL.TIMM.OUT_INDICES {list(out_indices)}: {bad} out of range for {name!r}, which "
            f"has {n} feature levels (strides {list(reductions)})"
        )
    indices = [i % n for i in out_indices]
    if plain:
        if not indices:
            return [n - 1]
        if len(indices) != 1:
            raise ConfigError(
                f"MODEL.TIMM.OUT_INDICES {list(out_indices)}: plain ViT {name!r} takes one block "
                "index (the block the simple feature pyramid is built from)"
            )
        return indices
    if not indices:
        missing = [s for s in FEATURE_STRIDES if s not in reductions]
        if missing:
            raise ConfigError(
                f"MODEL.TIMM.NAME {name!r} has feature strides {list(reductions)}, without "
                f"{missing}: the pixel decoder needs strides {list(FEATURE_STRIDES)}"
            )
        return [max(i for i, r in enumerate(reductions) if r == s) for s in FEATURE_STRIDES]
    strides = [reductions[i] for i in indices]
    if strides != list(FEATURE_STRIDES):
        raise ConfigError(
            f"MODEL.TIMM.OUT_INDICES {list(out_indices)} of {name!r} have strides {strides}; "
            f"res2..res5 need strides {list(FEATURE_STRIDES)} (the model's: {list(reductions)})"
        )
    return indices


@BACKBONE_REGISTRY.register()
class TimmBackbone(Backbone):
    """A timm model as the backbone (module docstring); ``MODEL.BACKBONE.NAME: "TimmBackbone"``."""

    @configurable
    def __init__(
        self,
        *,
        trunk: nn.Module,
        out_indices: Sequence[int] = (),
        freeze_at: int = 0,
        pyramid_channels: int = 256,
    ) -> None:
        """
        Args:
            trunk: a timm model with ``feature_info`` and ``forward_intermediates`` (e.g. from
                :func:`~mask2former.modeling.backbone.timm_models.create_timm_model`); pruned
                here to the layers the features need.
            out_indices: ``feature_info`` indices (negative count from the end): the four
                levels at strides 4, 8, 16, 32 (hierarchical) or the block the pyramid reads
                (plain ViT); empty = the last level at each stride / the last block.
            freeze_at: leading timm parameter groups frozen (stem, then stages or blocks);
                -1 = the whole trunk (a ViT's pyramid still trains).
            pyramid_channels: channels of every pyramid level (plain ViTs; ViTDet: 256).
        """
        super().__init__()
        name = type(trunk).__name__
        if not hasattr(trunk, "forward_intermediates") or not hasattr(trunk, "feature_info"):
            raise ConfigError(
                f"timm model {name} has no forward_intermediates/feature_info: it cannot give "
                "multi-scale features; choose another MODEL.TIMM.NAME"
            )
        reductions = [int(info["reduction"]) for info in trunk.feature_info]
        channels = [int(info["num_chs"]) for info in trunk.feature_info]
        self.plain = len(set(reductions)) == 1
        self.indices = _resolve_out_indices(reductions, out_indices, self.plain, name)
        self.token_stride = reductions[0] if self.plain else 0
        trunk.prune_intermediate_layers(self.indices, prune_norm=not self.plain, prune_head=True)
        self.trunk = trunk
        if self.plain:
            self.pyramid = SimpleFeaturePyramid(
                in_channels=channels[self.indices[0]], out_channels=pyramid_channels
            )
            level_channels = [pyramid_channels] * len(FEATURE_NAMES)
        else:
            level_channels = [channels[i] for i in self.indices]
        self._shapes = {
            n: ShapeSpec(channels=c, stride=s)
            for n, c, s in zip(FEATURE_NAMES, level_channels, FEATURE_STRIDES, strict=True)
        }
        freeze_leading_groups(trunk, freeze_at)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: ShapeSpec) -> dict[str, Any]:
        t = cfg.MODEL.TIMM
        if input_shape.channels != 3:
            raise ConfigError(f"TimmBackbone takes 3-channel images, got {input_shape.channels}")
        divisibility = cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY
        if divisibility != -1 and (divisibility <= 0 or divisibility % SIZE_DIVISIBILITY):
            raise ConfigError(
                f"MODEL.MASK_FORMER.SIZE_DIVISIBILITY {divisibility} does not fit TimmBackbone: "
                f"use -1 (the backbone's, {SIZE_DIVISIBILITY}) or a multiple of "
                f"{SIZE_DIVISIBILITY}"
            )
        trunk = create_timm_model(
            t.NAME,
            pretrained=t.PRETRAINED,
            pretrained_file=t.PRETRAINED_FILE,
            drop_path=t.DROP_PATH,
            img_size=t.IMG_SIZE,
        )
        if t.PRETRAINED:
            _warn_on_other_statistics(cfg, trunk)
        return {"trunk": trunk, "out_indices": list(t.OUT_INDICES), "freeze_at": t.FREEZE_AT}

    def trunk_features(self, x: Tensor) -> list[Tensor]:
        """Tensor[B, 3, Hp, Wp] -> timm's ``forward_intermediates`` maps at :attr:`indices`.

        Hierarchical: Tensor[B, C_k, Hp/s_k, Wp/s_k] per level. Plain ViT: one
        Tensor[B, D, h, w], after the trunk's final norm, the input resized by p/16 first.
        """
        if not self.plain:
            return self.trunk.forward_intermediates(
                x, indices=self.indices, intermediates_only=True
            )
        hp, wp = x.shape[-2:]
        if hp % SIZE_DIVISIBILITY or wp % SIZE_DIVISIBILITY:
            raise ValueError(
                f"TimmBackbone on a plain ViT takes inputs padded to multiples of "
                f"{SIZE_DIVISIBILITY}; got {hp} x {wp}"
            )
        if self.token_stride != PYRAMID_STRIDE:
            p = self.token_stride
            side = (hp // PYRAMID_STRIDE * p, wp // PYRAMID_STRIDE * p)
            x = F.interpolate(x, size=side, mode="bilinear", align_corners=False)
        return self.trunk.forward_intermediates(
            x, indices=self.indices, intermediates_only=True, norm=True
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Tensor[B, 3, Hp, Wp] -> ``{"res{k}": Tensor[B, C_k, Hp/2**k, Wp/2**k]}``, k = 2..5."""
        if x.dim() != 4:
            raise ValueError(f"TimmBackbone takes Tensor[B, C, H, W]; got {tuple(x.shape)}")
        maps = self.trunk_features(x)
        if self.plain:
            return self.pyramid(maps[0])
        return dict(zip(FEATURE_NAMES, maps, strict=True))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    @property
    def size_divisibility(self) -> int:
        return SIZE_DIVISIBILITY


def _warn_on_other_statistics(cfg: CfgNode, trunk: nn.Module) -> None:
    """Warn when PIXEL_MEAN/STD differ from the statistics the pretrained trunk expects."""
    mean, std = pretrained_mean_std(trunk)
    order = slice(None, None, -1) if cfg.INPUT.FORMAT == "BGR" else slice(None)
    want_mean = [round(255 * v, 3) for v in mean][order]
    want_std = [round(255 * v, 3) for v in std][order]
    have = list(cfg.MODEL.PIXEL_MEAN) + list(cfg.MODEL.PIXEL_STD)
    if any(abs(a - b) > 0.5 for a, b in zip(have, want_mean + want_std, strict=True)):
        logger.warning(
            "MODEL.PIXEL_MEAN %s / PIXEL_STD %s differ from the statistics timm model %r was "
            "pretrained with: %s / %s (%s order, 0-255 scale)",
            list(cfg.MODEL.PIXEL_MEAN),
            list(cfg.MODEL.PIXEL_STD),
            cfg.MODEL.TIMM.NAME,
            want_mean,
            want_std,
            cfg.INPUT.FORMAT,
        )
