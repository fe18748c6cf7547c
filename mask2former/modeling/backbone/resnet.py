"""detectron2-style ResNet backbone (R50/R101, "MSRA" stride-in-1x1 bottlenecks, FrozenBN).

Shape shorthand: B images, C channels, H, W input size. ``res{k}`` has stride ``2**k``.
Parameter names follow detectron2 (``stem.conv1.norm.*``, ``res2.0.shortcut.*``,
``res3.1.conv2.norm.running_var``...) so that model-zoo checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mask2former.config import CfgNode
from mask2former.modeling.backbone.base import Backbone, ShapeSpec
from mask2former.modeling.registry import BACKBONE_REGISTRY

__all__ = [
    "FrozenBatchNorm2d",
    "Conv2d",
    "get_norm",
    "BasicStem",
    "BottleneckBlock",
    "ResNet",
    "build_resnet_backbone",
]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, all stored as buffers.

    Computes ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C, H, W] -> Tensor[B, C, H, W]."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + bias.view(1, -1, 1, 1).to(x.dtype)

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Return ``module`` with every BatchNorm2d / SyncBatchNorm replaced by a frozen copy."""
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            frozen = cls(module.num_features, eps=module.eps)
            if module.affine:
                frozen.weight.copy_(module.weight.detach())
                frozen.bias.copy_(module.bias.detach())
            if module.running_mean is not None:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module

    def __repr__(self) -> str:
        return f"FrozenBatchNorm2d(num_features={self.num_features}, eps={self.eps})"


def get_norm(norm: str, out_channels: int) -> nn.Module | None:
    """Normalisation layer by name: "FrozenBN", "BN", "SyncBN", "GN" (32 groups) or "" (none)."""
    if norm == "":
        return None
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(out_channels)
    if norm == "BN":
        return nn.BatchNorm2d(out_channels)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(out_channels)
    if norm == "GN":
        return nn.GroupNorm(32, out_channels)
    raise ValueError(f"unknown norm {norm!r}; expected one of FrozenBN, BN, SyncBN, GN or ''")


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional ``norm`` submodule and activation."""

    def __init__(
        self,
        *args,
        norm: nn.Module | None = None,
        activation=None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, Cin, H, W] -> Tensor[B, Cout, H', W']."""
        x = F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def c2_msra_fill(module: nn.Conv2d) -> None:
    """Kaiming-normal (fan_out, ReLU) weight and zero bias, as Caffe2's MSRAFill."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def c2_xavier_fill(module: nn.Conv2d | nn.Linear) -> None:
    """Caffe2 XavierFill: uniform with bound sqrt(3 / fan_in) (kaiming_uniform a=1), zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class BasicStem(nn.Module):
    """7x7 stride-2 conv + norm + ReLU + 3x3 stride-2 max-pool: stride 4."""

    def __init__(self, *, in_channels: int = 3, out_channels: int = 64, norm: str = "BN") -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = 4
        self.conv1 = Conv2d(
            in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False,
            norm=get_norm(norm, out_channels),
        )  # fmt: skip
        c2_msra_fill(self.conv1)

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, 3, H, W] -> Tensor[B, C, H/4, W/4]."""
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)

    def freeze(self) -> BasicStem:
        for p in self.parameters():
            p.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual block; the stride sits in the 1x1 conv if ``stride_in_1x1``."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: str = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        if in_channels != out_channels:
            self.shortcut = Conv2d(
                in_channels, out_channels, kernel_size=1, stride=stride, bias=False,
                norm=get_norm(norm, out_channels),
            )  # fmt: skip
        else:
            self.shortcut = None
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels, bottleneck_channels, kernel_size=1, stride=stride_1x1, bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )  # fmt: skip
        self.conv2 = Conv2d(
            bottleneck_channels, bottleneck_channels, kernel_size=3, stride=stride_3x3,
            padding=dilation, bias=False, groups=num_groups, dilation=dilation,
            norm=get_norm(norm, bottleneck_channels),
        )  # fmt: skip
        self.conv3 = Conv2d(
            bottleneck_channels, out_channels, kernel_size=1, bias=False,
            norm=get_norm(norm, out_channels),
        )  # fmt: skip
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, Cin, H, W] -> Tensor[B, Cout, H/stride, W/stride]."""
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)

    def freeze(self) -> BottleneckBlock:
        for p in self.parameters():
            p.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self


class ResNet(Backbone):
    """Stem + stages ``res2``..``res5``; returns the requested stage outputs."""

    def __init__(
        self,
        *,
        stem: BasicStem,
        stages: list[list[BottleneckBlock]],
        out_features: list[str],
        freeze_at: int = 0,
    ) -> None:
        super().__init__()
        self.stem = stem
        stage_names = [f"res{i + 2}" for i in range(len(stages))]
        for name in out_features:
            if name not in stage_names:
                raise ValueError(f"ResNet out_features has {name!r}; available: {stage_names}")
        current_stride = stem.stride
        self._out_feature_strides: dict[str, int] = {"stem": current_stride}
        self._out_feature_channels: dict[str, int] = {"stem": stem.out_channels}
        # only build the stages up to the deepest requested output
        num_stages = max(stage_names.index(f) for f in out_features) + 1
        self.stage_names = stage_names[:num_stages]
        for name, blocks in zip(self.stage_names, stages[:num_stages], strict=True):
            self.add_module(name, nn.Sequential(*blocks))
            for block in blocks:
                current_stride *= block.stride
            self._out_feature_strides[name] = current_stride
            self._out_feature_channels[name] = blocks[-1].out_channels
        self._out_features = list(out_features)
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int = 0) -> ResNet:
        """Freeze the stem (``freeze_at >= 1``) and ``res{k}`` for ``k <= freeze_at``."""
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, name in enumerate(self.stage_names, start=2):
            if freeze_at >= idx:
                for block in getattr(self, name).children():
                    block.freeze()
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Tensor[B, 3, H, W] -> ``{name: Tensor[B, C_name, H/stride, W/stride]}``."""
        if x.dim() != 4:
            raise ValueError(f"ResNet takes Tensor[B, C, H, W]; got shape {tuple(x.shape)}")
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


def make_resnet_stages(
    *,
    depth: int,
    stem_out_channels: int,
    res2_out_channels: int,
    num_groups: int,
    width_per_group: int,
    norm: str,
    stride_in_1x1: bool,
    res5_dilation: int,
) -> list[list[BottleneckBlock]]:
    """Bottleneck stages of ResNet-50/101/152 with detectron2's channel progression."""
    blocks_per_stage = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
    if depth not in blocks_per_stage:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be 50, 101 or 152; got {depth}")
    if res5_dilation not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2; got {res5_dilation}")
    in_channels = stem_out_channels
    out_channels = res2_out_channels
    bottleneck_channels = num_groups * width_per_group
    stages = []
    for idx, num_blocks in enumerate(blocks_per_stage[depth]):
        dilation = res5_dilation if idx == 3 else 1
        first_stride = 1 if idx == 0 or dilation == 2 else 2
        blocks = []
        for i in range(num_blocks):
            blocks.append(
                BottleneckBlock(
                    in_channels=in_channels,
                    out_channels=out_channels,
                    bottleneck_channels=bottleneck_channels,
                    stride=first_stride if i == 0 else 1,
                    num_groups=num_groups,
                    norm=norm,
                    stride_in_1x1=stride_in_1x1,
                    dilation=dilation,
                )
            )
            in_channels = out_channels
        stages.append(blocks)
        out_channels *= 2
        bottleneck_channels *= 2
    return stages


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> ResNet:
    """ResNet from ``cfg.MODEL.RESNETS`` and ``cfg.MODEL.BACKBONE.FREEZE_AT``."""
    r = cfg.MODEL.RESNETS
    if r.STEM_TYPE != "basic":
        raise ValueError(f"MODEL.RESNETS.STEM_TYPE {r.STEM_TYPE!r} is not supported; use 'basic'")
    if list(r.RES5_MULTI_GRID) != [1, 1, 1]:
        raise ValueError(f"MODEL.RESNETS.RES5_MULTI_GRID {r.RES5_MULTI_GRID} is not supported")
    stem = BasicStem(
        in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM
    )
    stages = make_resnet_stages(
        depth=r.DEPTH,
        stem_out_channels=r.STEM_OUT_CHANNELS,
        res2_out_channels=r.RES2_OUT_CHANNELS,
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        norm=r.NORM,
        stride_in_1x1=r.STRIDE_IN_1X1,
        res5_dilation=r.RES5_DILATION,
    )
    return ResNet(
        stem=stem,
        stages=stages,
        out_features=list(r.OUT_FEATURES),
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )
