"""InstaOrderResNet: the 5-channel ResNet-50 pair classifier of InstaOrderNet.

docs/reference.md [ION 2, 4, 11].

Shape shorthand: B pairs, S input side (256 for ``o``, 384 for ``d``/``od``).

Input ``Tensor[B, 5, S, S]``: mask A, mask B (binary floats), then ImageNet-normalised RGB.
Outputs in the InstaOrderNet convention (not the project's matrix convention; see
:mod:`instaformer.instaordernet.symmetrisation` for the conversion):

* ``"occlusion"``: Tensor[B, 2] logits for independent sigmoids,
  ``[0]`` = B occludes A, ``[1]`` = A occludes B;
* ``"depth"``: Tensor[B, 3] softmax logits, class 0 = A closer, 1 = A farther, 2 = same depth
  (:data:`instaformer.vocabulary.ION_A_CLOSER` etc.).

Parameter names follow the released network (``conv1``, ``bn1``, ``layer1..4``, ``fc`` for a
single task, ``fc_occ`` + ``fc_depth`` for both), so the released ``.pth.tar`` files load. The
meta-architecture around it (pair losses, all-pairs inference) is
:class:`instaformer.instaordernet.meta_arch.InstaOrderNet`.

:class:`TimmOrderNet` puts the same heads on any timm trunk (``MODEL.INSTAORDERNET.BACKBONE``
"timm", the model of ``MODEL.TIMM``), its pooled features of width F in place of the 2048 of
ResNet-50. The released network takes the two mask channels in its first convolution (5 -> 64
channels, trained from scratch); a timm trunk is widened the same way from 3 to 5 input
channels, its RGB filters kept behind two new mask channels that start from the mean of the RGB
filters (:func:`mask2former.modeling.backbone.timm_models.widen_first_conv`). For a ViT the
widened convolution is the patch projection ``patch_embed.proj`` (k = p, stride p): each
p x p patch of the masks adds, to the patch's token, the embedding a grey patch of the same
values would get; S must be a multiple of p.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

from instaformer.vocabulary import IMAGENET_MEAN, IMAGENET_STD, TASK_CLASSES
from mask2former.config import CfgNode, ConfigError
from mask2former.modeling.backbone.timm_models import (
    create_timm_model,
    freeze_leading_groups,
    patch_size,
    pretrained_mean_std,
    widen_first_conv,
)

__all__ = [
    "InstaOrderResNet",
    "TimmOrderNet",
    "build_timm_order_net",
    "instaordernet_d",
    "instaordernet_o",
    "instaordernet_od",
    "load_instaordernet_checkpoint",
    "strip_module_prefix",
]

# Head attribute per task when both tasks are present (a single task uses "fc").
JOINT_HEAD_NAMES = {"occlusion": "fc_occ", "depth": "fc_depth"}


def _check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    if not tasks or any(t not in TASK_CLASSES for t in tasks) or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct names among {list(TASK_CLASSES)}: {tasks}")
    return tuple(tasks)


def _add_heads(module: nn.Module, tasks: tuple[str, ...], width: int) -> dict[str, str]:
    """One ``Linear(width, K_task)`` per task on ``module``: ``fc`` alone, else ``fc_occ`` and
    ``fc_depth``; returns ``{task: attribute name}``."""
    names = {t: ("fc" if len(tasks) == 1 else JOINT_HEAD_NAMES[t]) for t in tasks}
    for task, name in names.items():
        module.add_module(name, nn.Linear(width, TASK_CLASSES[task]))
    return names


def _released_init(module: nn.Module) -> None:
    """Conv/linear weights Xavier-normal with gain 0.02, biases 0 (the released initialisation)."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.xavier_normal_(module.weight, gain=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class InstaOrderResNet(nn.Module):
    """ResNet-50 (Bottleneck [3, 4, 6, 3], stride on the 3x3 conv) with 5 input channels."""

    def __init__(self, *, tasks: Sequence[str], in_channels: int = 5) -> None:
        """
        Args:
            tasks: ``("occlusion",)``, ``("depth",)`` or ``("occlusion", "depth")``.
            in_channels: input channels (mask A, mask B, RGB).
        """
        super().__init__()
        self.tasks = _check_tasks(tasks)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._channels = 64
        self.layer1 = self._stage(64, 3, stride=1)
        self.layer2 = self._stage(128, 4, stride=2)
        self.layer3 = self._stage(256, 6, stride=2)
        self.layer4 = self._stage(512, 3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_names = _add_heads(self, self.tasks, 512 * Bottleneck.expansion)
        self.reset_parameters()

    def _stage(self, width: int, blocks: int, stride: int) -> nn.Sequential:
        out = width * Bottleneck.expansion
        downsample = None
        if stride != 1 or self._channels != out:
            downsample = nn.Sequential(
                nn.Conv2d(self._channels, out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out),
            )
        layers = [Bottleneck(self._channels, width, stride=stride, downsample=downsample)]
        self._channels = out
        layers += [Bottleneck(out, width) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        """Released initialisation (training from scratch): conv/linear weights Xavier-normal with
        gain 0.02, biases 0; BatchNorm scale ~ N(1, 0.02^2), shift 0."""
        for m in self.modules():
            _released_init(m)
            if isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def features(self, x: Tensor) -> Tensor:
        """Tensor[B, 5, S, S] -> Tensor[B, 2048] pooled trunk features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Tensor[B, 5, S, S] -> ``{task: Tensor[B, K_task]}`` logits (module docstring)."""
        pooled = self.features(x)
        return {task: getattr(self, name)(pooled) for task, name in self.head_names.items()}


class TimmOrderNet(nn.Module):
    """A timm trunk widened to the 5-channel pair input, with the heads of InstaOrderResNet.

    Input and outputs as :class:`InstaOrderResNet` (module docstring); parameters ``trunk.*``
    (timm's names) and ``fc`` / ``fc_occ`` + ``fc_depth``.
    """

    def __init__(
        self,
        *,
        trunk: nn.Module,
        tasks: Sequence[str],
        freeze_at: int = 0,
        mask_channels: int = 2,
    ) -> None:
        """
        Args:
            trunk: a timm model built with ``num_classes=0`` (its forward returns the pooled
                Tensor[B, F]) and a 3-channel first convolution, widened here.
            tasks: ``("occlusion",)``, ``("depth",)`` or ``("occlusion", "depth")``.
            freeze_at: leading timm parameter groups frozen after widening (-1: the trunk).
            mask_channels: mask channels in front of RGB (mask A, mask B).
        """
        super().__init__()
        self.tasks = _check_tasks(tasks)
        self.trunk = widen_first_conv(trunk, mask_channels)
        freeze_leading_groups(self.trunk, freeze_at)
        self.mask_channels = mask_channels
        self.head_names = _add_heads(self, self.tasks, int(trunk.num_features))
        for name in self.head_names.values():
            _released_init(getattr(self, name))
        # The pair input's RGB is standardised with ImageNet's statistics; a trunk pretrained
        # with others gets it re-standardised with its own: x * scale + shift per channel.
        mean, std = pretrained_mean_std(trunk)
        scale = torch.tensor(IMAGENET_STD) / torch.tensor(std)
        shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(mean)) / torch.tensor(std)
        self.restandardise = not (
            torch.allclose(scale, torch.ones(3)) and torch.allclose(shift, torch.zeros(3))
        )
        self.register_buffer("rgb_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_shift", shift.view(1, 3, 1, 1), persistent=False)

    def features(self, x: Tensor) -> Tensor:
        """Tensor[B, 5, S, S] -> Tensor[B, F] pooled trunk features."""
        if self.restandardise:
            m = self.mask_channels
            x = torch.cat([x[:, :m], x[:, m:] * self.rgb_scale + self.rgb_shift], dim=1)
        return self.trunk(x)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Tensor[B, 5, S, S] -> ``{task: Tensor[B, K_task]}`` logits (module docstring)."""
        pooled = self.features(x)
        return {task: getattr(self, name)(pooled) for task, name in self.head_names.items()}


def build_timm_order_net(cfg: CfgNode, tasks: Sequence[str]) -> TimmOrderNet:
    """:class:`TimmOrderNet` on the timm model of ``cfg.MODEL.TIMM`` (NAME, PRETRAINED,
    PRETRAINED_FILE, DROP_PATH, IMG_SIZE, FREEZE_AT), for inputs of side
    ``MODEL.INSTAORDERNET.INPUT_SIZE``.

    Raises:
        ConfigError: as :func:`~mask2former.modeling.backbone.timm_models.create_timm_model`;
            or INPUT_SIZE is not a multiple of a ViT's patch side.
    """
    t = cfg.MODEL.TIMM
    trunk = create_timm_model(
        t.NAME,
        pretrained=t.PRETRAINED,
        pretrained_file=t.PRETRAINED_FILE,
        drop_path=t.DROP_PATH,
        img_size=t.IMG_SIZE,
    )
    side = cfg.MODEL.INSTAORDERNET.INPUT_SIZE
    p = patch_size(trunk)
    if p is not None and side % p:
        raise ConfigError(
            f"MODEL.INSTAORDERNET.INPUT_SIZE {side} is not a multiple of the patch side {p} of "
            f"{t.NAME!r}: use {side // p * p} or {(side // p + 1) * p}"
        )
    return TimmOrderNet(trunk=trunk, tasks=tasks, freeze_at=t.FREEZE_AT)


def instaordernet_o() -> InstaOrderResNet:
    """InstaOrderNet^o: occlusion head ``fc`` (2 logits); patch input at 256."""
    return InstaOrderResNet(tasks=("occlusion",))


def instaordernet_d() -> InstaOrderResNet:
    """InstaOrderNet^d: depth head ``fc`` (3 logits); resize input at 384."""
    return InstaOrderResNet(tasks=("depth",))


def instaordernet_od() -> InstaOrderResNet:
    """InstaOrderNet^{o,d}: heads ``fc_occ`` (2) and ``fc_depth`` (3); resize input at 384."""
    return InstaOrderResNet(tasks=("occlusion", "depth"))


def strip_module_prefix(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop one leading ``module.`` (the training wrapper's level) from every key that has it."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def load_instaordernet_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a released ``InstaOrder_InstaOrderNet_{o,d,od}.pth.tar`` (or a plain state dict).

    Accepts a dict holding ``state_dict`` (released layout, keys prefixed ``module.``) or a
    state dict itself, with or without the prefix. Loads without unpickling arbitrary objects.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: any missing or unexpected key or shape mismatch, all listed in the message.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"InstaOrderNet checkpoint not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict or a dict with 'state_dict'")
    state = strip_module_prefix(state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        lines = [f"{path} does not fit {type(model).__name__}(tasks={model.tasks}):"]
        lines += [f"  missing: {k}" for k in missing]
        lines += [f"  unexpected: {k}" for k in unexpected]
        lines += [f"  shape: {s}" for s in shapes]
        raise ValueError("\n".join(lines))
    model.load_state_dict(state, strict=True)
