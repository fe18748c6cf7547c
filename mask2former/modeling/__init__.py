"""Mask2Former model: importing this package registers every built-in module."""

from mask2former.modeling import adapters, criterion, matcher, postprocessing  # noqa: F401
from mask2former.modeling.backbone import resnet, swin  # noqa: F401
from mask2former.modeling.build import build_meta_arch
from mask2former.modeling.heads import MaskFormerHead
from mask2former.modeling.meta_arch import MaskFormer
from mask2former.modeling.pixel_decoder import msdeformattn  # noqa: F401
from mask2former.modeling.transformer_decoder import mask2former_transformer_decoder  # noqa: F401

__all__ = ["build_meta_arch", "MaskFormer", "MaskFormerHead"]
