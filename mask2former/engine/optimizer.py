"""Optimizer and learning-rate schedule of Mask2Former training.

* AdamW runs fused (one kernel over all parameters, CPU and CUDA); SGD as PyTorch chooses.
* Parameter groups: LR ``BASE_LR`` (x ``BACKBONE_MULTIPLIER`` under a module named "backbone"),
  weight decay ``WEIGHT_DECAY`` except ``WEIGHT_DECAY_NORM`` for normalisation layers,
  ``WEIGHT_DECAY_EMBED`` for ``nn.Embedding`` and for the parameters a module declares free of
  decay with timm's ``no_weight_decay()`` (a ViT's position embedding and class token), and 0
  for Swin's relative-position tables and absolute position embedding. Frozen parameters
  (``requires_grad=False``) are left out.
* Gradient clipping: ``full_model`` clips the global norm of all gradients; ``value`` / ``norm``
  clip each parameter on its own (detectron2's behaviour).
* Schedules are fvcore parameter schedulers over the fraction of training done, with a warmup
  prefix, applied through :class:`LRMultiplier`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)
from torch import nn

from mask2former.config import CfgNode

_NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
_NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def get_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    weight_decay_embed: float,
    backbone_multiplier: float,
) -> list[dict]:
    """Trainable parameters grouped by (lr, weight_decay), in module order.

    Returns:
        list of ``{"params": [...], "lr": float, "weight_decay": float}``.
    """
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    embeddings = _declared_no_decay(model)
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = base_lr * (backbone_multiplier if "backbone" in module_name else 1.0)
            decay = weight_decay
            if any(key in name for key in _NO_DECAY_NAMES):
                decay = 0.0
            elif isinstance(module, _NORM_TYPES) or _is_frozen_bn(module):
                decay = weight_decay_norm
            elif isinstance(module, nn.Embedding) or id(param) in embeddings:
                decay = weight_decay_embed
            groups.setdefault((lr, decay), []).append(param)
    return [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()]


def _declared_no_decay(model: nn.Module) -> set[int]:
    """Ids of the parameters a submodule declares free of weight decay with timm's convention,
    a ``no_weight_decay()`` method giving names relative to it or last name components (a ViT's
    ``pos_embed`` and ``cls_token``); they are embeddings here (``WEIGHT_DECAY_EMBED``)."""
    ids: set[int] = set()
    for module in model.modules():
        declared = getattr(module, "no_weight_decay", None)
        if not callable(declared):
            continue
        names = set(declared())
        for name, param in module.named_parameters():
            if name in names or name.rsplit(".", 1)[-1] in names:
                ids.add(id(param))
    return ids


def _is_frozen_bn(module: nn.Module) -> bool:
    return type(module).__name__ == "FrozenBatchNorm2d"


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (or SGD with momentum) over the trainable parameters of ``model``."""
    solver = cfg.SOLVER
    groups = get_param_groups(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        weight_decay_embed=solver.WEIGHT_DECAY_EMBED,
        backbone_multiplier=solver.BACKBONE_MULTIPLIER,
    )
    if not groups:
        raise ValueError("the model has no trainable parameter (everything is frozen)")
    name = solver.OPTIMIZER.upper()
    if name == "ADAMW":
        # fused: one kernel over all parameters, PyTorch's fastest AdamW on CUDA; on the CPU it
        # takes the per-parameter loop's time (about 2 % of a tiny-model step: docs/benchmarks.md,
        # "Training step")
        return torch.optim.AdamW(groups, lr=solver.BASE_LR, fused=True)
    if name == "SGD":
        return torch.optim.SGD(
            groups, lr=solver.BASE_LR, momentum=solver.MOMENTUM, nesterov=solver.NESTEROV
        )
    raise ValueError(f"SOLVER.OPTIMIZER must be ADAMW or SGD, got {solver.OPTIMIZER!r}")


def clip_gradients(cfg: CfgNode, params: Iterable[nn.Parameter]) -> float | None:
    """Clip gradients as ``SOLVER.CLIP_GRADIENTS`` says.

    Returns:
        the global gradient norm before clipping for ``full_model``, else None.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return None
    params = [p for p in params if p.grad is not None]
    if clip.CLIP_TYPE == "full_model":
        # Mask2Former's full-model clipping: the L2 norm (NORM_TYPE is detectron2's per-parameter
        # setting), and none at all when CLIP_VALUE <= 0.
        if clip.CLIP_VALUE <= 0:
            return None
        return float(torch.nn.utils.clip_grad_norm_(params, clip.CLIP_VALUE))
    if clip.CLIP_TYPE == "value":
        for p in params:
            torch.nn.utils.clip_grad_value_(p, clip.CLIP_VALUE)
    elif clip.CLIP_TYPE == "norm":
        for p in params:
            torch.nn.utils.clip_grad_norm_(p, clip.CLIP_VALUE, clip.NORM_TYPE)
    else:
        raise ValueError(
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be full_model, value or norm, "
            f"got {clip.CLIP_TYPE!r}"
        )
    return None


class WarmupPolyParamScheduler(ParamScheduler):
    """DeepLab's ``WarmupPolyLR`` (Mask2Former's poly schedule) as a multiplier of ``where``.

    ``warmup(where) * (1 - where) ** power`` with ``warmup`` going from ``warmup_factor`` to 1
    over the first ``warmup_length`` of training (linearly, or constant then 1); after warmup
    the value never falls below ``constant_ending`` (when > 0).
    """

    def __init__(
        self,
        *,
        power: float,
        constant_ending: float,
        warmup_factor: float,
        warmup_length: float,
        warmup_method: str,
    ) -> None:
        if warmup_method not in ("linear", "constant"):
            raise ValueError(
                f"SOLVER.WARMUP_METHOD must be linear or constant, got {warmup_method!r}"
            )
        self.power = power
        self.constant_ending = constant_ending
        self.warmup_factor = warmup_factor
        self.warmup_length = warmup_length
        self.warmup_method = warmup_method

    def __call__(self, where: float) -> float:
        factor = 1.0
        if where < self.warmup_length:
            if self.warmup_method == "constant":
                factor = self.warmup_factor
            else:
                alpha = where / self.warmup_length
                factor = self.warmup_factor * (1 - alpha) + alpha
        value = (1.0 - where) ** self.power
        if self.constant_ending > 0 and factor == 1.0 and value < self.constant_ending:
            return self.constant_ending
        return factor * value


def build_param_scheduler(cfg: CfgNode) -> ParamScheduler:
    """LR multiplier as a function of the fraction of training done, warmup included.

    As detectron2's ``build_lr_scheduler`` (warmup from ``WARMUP_FACTOR`` times the schedule's
    initial value to its value at the end of warmup) and, for ``WarmupPolyLR``, as DeepLab's
    ``WarmupPolyLR`` that Mask2Former uses (warmup factor times the poly value).
    """
    solver = cfg.SOLVER
    name = solver.LR_SCHEDULER_NAME
    if name == "WarmupPolyLR":
        return WarmupPolyParamScheduler(
            power=solver.POLY_LR_POWER,
            constant_ending=solver.POLY_LR_CONSTANT_ENDING,
            warmup_factor=solver.WARMUP_FACTOR,
            warmup_length=solver.WARMUP_ITERS / max(solver.MAX_ITER, 1),
            warmup_method=solver.WARMUP_METHOD,
        )
    if name == "WarmupMultiStepLR":
        steps = [s for s in solver.STEPS if s <= solver.MAX_ITER]
        scheduler: ParamScheduler = MultiStepParamScheduler(
            values=[solver.GAMMA**k for k in range(len(steps) + 1)],
            milestones=steps,
            num_updates=solver.MAX_ITER,
        )
    elif name == "WarmupCosineLR":
        scheduler = CosineParamScheduler(1.0, 0.0)
    else:
        raise ValueError(
            "SOLVER.LR_SCHEDULER_NAME must be WarmupMultiStepLR, WarmupCosineLR or "
            f"WarmupPolyLR, got {name!r}"
        )
    warmup_length = min(solver.WARMUP_ITERS / max(solver.MAX_ITER, 1), 1.0)
    if warmup_length <= 0:
        return scheduler
    start = solver.WARMUP_FACTOR * scheduler(0.0)
    if solver.WARMUP_METHOD == "linear":
        warmup: ParamScheduler = LinearParamScheduler(start, scheduler(warmup_length))
    elif solver.WARMUP_METHOD == "constant":
        warmup = ConstantParamScheduler(start)
    else:
        raise ValueError(
            f"SOLVER.WARMUP_METHOD must be linear or constant, got {solver.WARMUP_METHOD!r}"
        )
    return CompositeParamScheduler(
        [warmup, scheduler],
        interval_scaling=["rescaled", "fixed"],
        lengths=[warmup_length, 1 - warmup_length],
    )


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """Sets each group's LR to its initial LR times ``multiplier(iteration / max_iter)``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        multiplier: ParamScheduler,
        max_iter: int,
        last_iter: int = -1,
    ) -> None:
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict:
        # The multiplier is rebuilt from the config; only the position is state.
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def get_lr(self) -> list[float]:
        where = min(self.last_epoch / max(self._max_iter, 1), 1.0 - 1e-12)
        factor = self._multiplier(where)
        if not math.isfinite(factor):
            raise FloatingPointError(f"LR multiplier is {factor} at iteration {self.last_epoch}")
        return [base_lr * factor for base_lr in self.base_lrs]


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """Warmup + multi-step / cosine / poly schedule stepped once per iteration."""
    return LRMultiplier(optimizer, build_param_scheduler(cfg), cfg.SOLVER.MAX_ITER)
