"""Mask-classification head: pixel decoder + transformer decoder ("sem_seg_head").

Shape shorthand: B images, Q queries, K classes, E mask-embedding width, h, w = padded size / 4.
"""

from __future__ import annotations

from torch import Tensor, nn

from mask2former.config import CfgNode
from mask2former.modeling.backbone.base import ShapeSpec
from mask2former.modeling.configurable import configurable
from mask2former.modeling.pixel_decoder.msdeformattn import build_pixel_decoder
from mask2former.modeling.registry import SEM_SEG_HEADS_REGISTRY
from mask2former.modeling.transformer_decoder.mask2former_transformer_decoder import (
    build_transformer_decoder,
)

__all__ = ["MaskFormerHead", "build_sem_seg_head"]


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    """``forward(features) -> (outputs, mask_embed, mask_features)``: Mask2Former's predictions,
    plus the last decoder layer's mask embeddings and the pixel decoder's mask features."""

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        transformer_predictor: nn.Module,
        transformer_in_feature: str = "multi_scale_pixel_decoder",
    ) -> None:
        super().__init__()
        if transformer_in_feature != "multi_scale_pixel_decoder":
            raise ValueError(
                "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE must be 'multi_scale_pixel_decoder'; "
                f"got {transformer_in_feature!r}"
            )
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "ignore_value": head.IGNORE_VALUE,
            "num_classes": head.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": head.LOSS_WEIGHT,
            "transformer_in_feature": cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE,
            "transformer_predictor": build_transformer_decoder(cfg, head.CONVS_DIM),
        }

    def forward(self, features: dict[str, Tensor], mask: Tensor | None = None) -> tuple:
        """Backbone features ``{name: Tensor[B, C, H/s, W/s]}`` -> the decoder's triple.

        Returns:
            outputs dict (``pred_logits`` Tensor[B, Q, K+1], ``pred_masks`` Tensor[B, Q, h, w],
            ``aux_outputs``), ``mask_embed`` Tensor[B, Q, E], ``mask_features`` Tensor[B, E, h, w].
        """
        mask_features, _, multi_scale_features = self.pixel_decoder.forward_features(features)
        return self.predictor(multi_scale_features, mask_features, mask)


def build_sem_seg_head(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """Head named by ``MODEL.SEM_SEG_HEAD.NAME``."""
    return SEM_SEG_HEADS_REGISTRY.get(cfg.MODEL.SEM_SEG_HEAD.NAME)(cfg, input_shape)
