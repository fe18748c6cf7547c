"""Backbones: importing this package registers the built-in ones (ResNet, Swin, TimmBackbone)."""

from mask2former.modeling.backbone import resnet, swin, timm_backbone  # noqa: F401
