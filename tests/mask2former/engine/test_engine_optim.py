"""Optimizer groups, LR schedules and checkpoint files of the training engine."""

from __future__ import annotations

import io
import os

import pytest
import torch
from torch import nn

from instaformer.config import get_cfg
from mask2former.engine.checkpoint import last_checkpoint_path, save_training_checkpoint
from mask2former.engine.optimizer import (
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.query_embed = nn.Embedding(5, 4)
        self.head = nn.Linear(4, 2)
        self.norm = nn.LayerNorm(2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _groups(cfg, model):
    opt = build_optimizer(cfg, model)
    out = {}
    for group in opt.param_groups:
        for p in group["params"]:
            out[id(p)] = (group["lr"], group["weight_decay"])
    return opt, out


def test_param_groups_follow_mask2former_rules():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_EMBED = 1.0, 0.05, 0.0
    model = _Toy()
    opt, groups = _groups(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    assert groups[id(model.backbone[0].weight)] == (0.1, 0.05)
    assert groups[id(model.backbone[1].weight)] == (0.1, 0.0)
    assert groups[id(model.query_embed.weight)] == (1.0, 0.0)
    assert groups[id(model.head.weight)] == (1.0, 0.05)
    assert groups[id(model.norm.weight)] == (1.0, 0.0)
    assert id(model.frozen.weight) not in groups


def _adamw_steps(opt: torch.optim.Optimizer, model: nn.Module, steps: int, seed: int) -> None:
    """``steps`` optimizer steps on ``model`` with gradients drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen) if p.requires_grad else None
        opt.step()


def _plain_adamw(cfg, model: nn.Module) -> torch.optim.AdamW:
    """PyTorch's per-parameter AdamW loop over the groups that ``build_optimizer`` makes."""
    keys = ("params", "lr", "weight_decay")  # the groups' own keys, not the fused defaults
    groups = [{k: g[k] for k in keys} for g in build_optimizer(cfg, model).param_groups]
    return torch.optim.AdamW(groups, lr=cfg.SOLVER.BASE_LR, foreach=False)


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5, msg=name)


def _saved(opt: torch.optim.Optimizer) -> dict:
    """``opt``'s state as a checkpoint holds it: written and read back (no shared tensors)."""
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_adamw_is_fused_takes_the_plain_loops_steps_and_resumes():
    """The fused AdamW (one kernel for all parameters) steps as PyTorch's per-parameter loop
    does, to float rounding; it resumes from its own saved state (fused still) and from one the
    per-parameter loop saved (older checkpoints)."""
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = 0.01, 0.05
    torch.manual_seed(0)
    start = _Toy().state_dict()
    models = {name: _Toy() for name in ("plain", "fused", "resumed_fused", "resumed_plain")}
    for model in models.values():
        model.load_state_dict(start)
    plain = _plain_adamw(cfg, models["plain"])
    fused = build_optimizer(cfg, models["fused"])
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    _adamw_steps(plain, models["plain"], 5, seed=1)
    _adamw_steps(fused, models["fused"], 5, seed=1)
    _assert_same_weights(models["plain"], models["fused"])
    assert not torch.equal(models["fused"].head.weight, start["head.weight"])

    resumed = {}
    for name, saved_by in (("resumed_fused", fused), ("resumed_plain", plain)):
        models[name].load_state_dict(models["plain"].state_dict())
        resumed[name] = build_optimizer(cfg, models[name])
        resumed[name].load_state_dict(_saved(saved_by))
    assert all(g["fused"] for g in resumed["resumed_fused"].param_groups)
    optimizers = {"plain": plain, "fused": fused, **resumed}
    for name, opt in optimizers.items():
        _adamw_steps(opt, models[name], 3, seed=2)
    for name in ("fused", "resumed_fused", "resumed_plain"):
        _assert_same_weights(models["plain"], models[name])


def _lrs(cfg, n):
    model = nn.Linear(2, 2)
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_multistep_schedule():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 1.0, 100, (50, 80)
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 10, 0.001
    lrs = _lrs(cfg, 100)
    assert lrs[0] == pytest.approx(0.001)
    assert lrs[5] == pytest.approx(0.5005)
    assert lrs[10] == lrs[49] == pytest.approx(1.0)
    assert lrs[50] == lrs[79] == pytest.approx(0.1)
    assert lrs[80] == lrs[99] == pytest.approx(0.01)


def test_poly_schedule_and_no_warmup():
    cfg = get_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER = "WarmupPolyLR", 1.0, 10
    cfg.SOLVER.WARMUP_ITERS = 0
    lrs = _lrs(cfg, 10)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(0.5**0.9)


@pytest.mark.parametrize(
    "name, steps, expected",
    [
        # cosine: the value at the end of warmup is 0.5, the warmup starts at 0.5 x 1
        ("WarmupCosineLR", (), [0.5, 0.5, 0.5]),
        # a step inside warmup: from 0.1 x 1 to the decayed 0.1
        ("WarmupMultiStepLR", (2,), [0.1, 0.1, 0.1]),
    ],
)
def test_warmup_starts_at_factor_times_initial_value(name, steps, expected):
    # detectron2's WarmupParamScheduler: start = WARMUP_FACTOR * schedule(0)
    cfg = get_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER = name, 1.0, 10
    cfg.SOLVER.STEPS, cfg.SOLVER.GAMMA = steps, 0.1
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 5, 0.5 if name == "WarmupCosineLR" else 0.1
    assert _lrs(cfg, 3) == pytest.approx(expected)


def test_poly_warmup_multiplies_like_deeplab():
    # DeepLab's WarmupPolyLR: lr = warmup_factor(it) * (1 - it / max_iter) ** power, the
    # constant ending only after warmup.
    cfg = get_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER = "WarmupPolyLR", 1.0, 10
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 4, 0.1
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.5
    lrs = _lrs(cfg, 10)
    assert lrs[0] == pytest.approx(0.1)  # below the constant ending: still warming up
    assert lrs[2] == pytest.approx((0.1 * 0.5 + 0.5) * 0.8**0.9)
    assert lrs[3] == pytest.approx((0.1 * 0.25 + 0.75) * 0.7**0.9)
    assert lrs[4] == pytest.approx(0.6**0.9)
    assert lrs[8] == pytest.approx(0.5)  # 0.2 ** 0.9 = 0.23 < 0.5


def test_unknown_schedule_is_named():
    cfg = get_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME = "Nope"
    with pytest.raises(ValueError, match="Nope"):
        _lrs(cfg, 1)


def test_full_model_clipping_bounds_global_norm():
    cfg = get_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED, cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = True, "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    model = nn.Linear(8, 8)
    model(torch.randn(4, 8)).pow(2).sum().backward()
    before = clip_gradients(cfg, model.parameters())
    after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert before > 0.01
    assert float(after) == pytest.approx(0.01, rel=1e-4)


def test_checkpoint_files_are_atomic(tmp_path, monkeypatch):
    save_training_checkpoint(str(tmp_path), "model_0000009", {"iteration": 9})
    assert last_checkpoint_path(str(tmp_path)).endswith("model_0000009.pth")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_training_checkpoint(str(tmp_path), "model_0000019", {"iteration": 19})
    path = last_checkpoint_path(str(tmp_path))
    assert path.endswith("model_0000009.pth")
    assert torch.load(path, weights_only=True)["iteration"] == 9
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]


def test_full_model_clipping_is_l2_and_off_for_non_positive_value():
    # Mask2Former's FullModelGradientClippingOptimizer: clip_grad_norm_(params, CLIP_VALUE),
    # i.e. the L2 norm whatever NORM_TYPE says, and only when CLIP_VALUE > 0.
    cfg = get_cfg()
    clip = cfg.SOLVER.CLIP_GRADIENTS
    clip.ENABLED, clip.CLIP_TYPE, clip.CLIP_VALUE, clip.NORM_TYPE = True, "full_model", 0.01, 1.0
    model = nn.Linear(8, 8)
    model(torch.randn(4, 8)).pow(2).sum().backward()
    clip_gradients(cfg, model.parameters())
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert float(torch.linalg.vector_norm(grads)) == pytest.approx(0.01, rel=1e-4)
    clip.CLIP_VALUE = 0.0
    assert clip_gradients(cfg, model.parameters()) is None
    assert torch.equal(torch.cat([p.grad.flatten() for p in model.parameters()]), grads)
