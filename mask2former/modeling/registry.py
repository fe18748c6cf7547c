"""Registries for the extension points users plug their own modules into.

Each registry maps a config name (``cfg.MODEL.*.NAME``) to a class or builder function that is
called with the config.
"""

from fvcore.common.registry import Registry

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = (
    "Meta-architectures, built as ``cls(cfg)``; name in MODEL.META_ARCHITECTURE."
)

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = (
    "Backbones, built as ``fn(cfg, input_shape)``; name in MODEL.BACKBONE.NAME. They return "
    "``{name: Tensor[B, C, H/stride, W/stride]}`` and expose ``output_shape()``."
)

SEM_SEG_HEADS_REGISTRY = Registry("SEM_SEG_HEADS")
SEM_SEG_HEADS_REGISTRY.__doc__ = "Segmentation heads; name in MODEL.SEM_SEG_HEAD.NAME."

PIXEL_DECODER_REGISTRY = Registry("PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = "Pixel decoders; name in MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME."

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = (
    "Mask-classification transformer decoders; name in MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME."
)
