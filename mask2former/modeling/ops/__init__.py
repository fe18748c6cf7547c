"""Multi-scale deformable attention op (compiled kernel with a pure-PyTorch fallback)."""

from mask2former.modeling.ops.dispatch import ms_deform_attn

__all__ = ["ms_deform_attn"]
