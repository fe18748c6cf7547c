"""Tiny-config InstaFormer training steps on CPU: o, d, od x holistic / pairwise head.

Checks finite losses with the expected keys, a gradient on every trainable parameter and none on
frozen ones (released freezing: backbone and decoders frozen, adapters and order head trained),
images with zero, one and two annotated instances, REMOVE_LOSSES and bad inputs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from instaformer.config import get_cfg
from instaformer.modeling import InstaFormer, build_model
from instaformer.vocabulary import TASK_CODES, TASK_DIRS
from mask2former.structures import Instances

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "MODEL.DEVICE", "cpu",
    "MODEL.BACKBONE.NAME", "D2SwinTransformer",
    "MODEL.SWIN.EMBED_DIM", "16",
    "MODEL.SWIN.DEPTHS", "[1, 1, 1, 1]",
    "MODEL.SWIN.NUM_HEADS", "[1, 1, 2, 2]",
    "MODEL.SWIN.WINDOW_SIZE", "4",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
    "MODEL.MASK_FORMER.DEC_LAYERS", "3",
    "MODEL.MASK_FORMER.NHEADS", "2",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "64",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    "MODEL.MASK_FORMER.ADAPTER_DIM", "8",
    "MODEL.GEOMETRIC_PREDICTOR.D_MODEL", "32",
    "MODEL.GEOMETRIC_PREDICTOR.NUM_HEADS", "2",
    "MODEL.GEOMETRIC_PREDICTOR.NUM_LAYERS", "2",
    "MODEL.GEOMETRIC_PREDICTOR.INPUT_SIZE", "32",
    "MODEL.GEOMETRIC_PREDICTOR.USE_INSTAORDERNET_WEIGHTS", "False",
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0",
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0",
]  # fmt: skip
"""Overrides of a tiny random-init InstaFormer (Swin, width 32, 8 queries, 2 head layers)."""


def tiny_cfg(task: str = "od", head: str = "all", *opts: str):
    """Tiny config from the released ``<task>/<head>/<task>_config.yaml`` plus ``opts``."""
    name = TASK_DIRS[task]
    cfg = get_cfg()
    cfg.merge_from_file(str(ROOT / "configs" / "instaorder" / name / head / f"{name}_config.yaml"))
    cfg.merge_from_list(TINY + list(opts))
    return cfg


def sample(n: int, h: int = 64, w: int = 64, seed: int = 0) -> dict:
    """An input with one stuff band (instance 0) and n disjoint annotated thing rectangles
    (instances 1..n), random order matrices (depth with a few unlabelled pairs)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    labels = torch.zeros((h, w), dtype=torch.int64)  # 0 = stuff band
    cols = max(n, 1)
    for t in range(n):
        x0 = t * w // cols
        labels[h // 4 : h // 4 + h // 2, x0 : x0 + max(w // cols - 2, 2)] = t + 1
    masks = labels[None] == torch.arange(n + 1)[:, None, None]
    classes = torch.tensor([4] + [t % 4 for t in range(n)])
    occlusion = torch.randint(0, 2, (n, n), generator=g, dtype=torch.int32)
    occlusion.fill_diagonal_(0)
    closer = torch.randint(0, 3, (n, n), generator=g, dtype=torch.int32)
    depth = torch.where(closer.triu(1) == 2, 2, closer.triu(1).clamp(max=1))
    depth = depth + torch.where(depth.t() == 2, 2, 1 - depth.t()).tril(-1)
    if n >= 3:
        depth[0, 2] = depth[2, 0] = -1
    depth.fill_diagonal_(-1)
    return {
        "image": image,
        "height": h,
        "width": w,
        "instances": Instances((h, w), gt_classes=classes, gt_masks=masks),
        "tgt_pan_idx": torch.arange(1, n + 1),
        "occlusion_matrix": occlusion,
        "depth_matrix": depth,
        "overlap_matrix": torch.zeros((n, n), dtype=torch.int32),
        "count_matrix": torch.ones((n, n), dtype=torch.int32),
    }


def _check_step(model: InstaFormer, inputs: list[dict]) -> dict[str, torch.Tensor]:
    model.train()
    losses = model(inputs)
    for k, v in losses.items():
        assert v.dim() == 0 and math.isfinite(v.item()), k
    sum(losses.values()).backward()
    return losses


@pytest.mark.parametrize("head", ["all", "pairwise"])
@pytest.mark.parametrize("task", ["o", "d", "od"])
def test_train_step_gradients(task: str, head: str) -> None:
    torch.manual_seed(0)
    model = build_model(
        tiny_cfg(task, head, "MODEL.BACKBONE.FREEZE", "True", "MODEL.SEM_SEG_HEAD.FREEZE", "True")
    )
    losses = _check_step(model, [sample(3, seed=1), sample(2, 48, 64, seed=2)])
    layers = 2 if head == "all" else 1
    for name in TASK_CODES[task]:
        assert losses[f"loss_{name}"].item() > 0
        assert sum(k.startswith(f"loss_{name}_") for k in losses) == layers - 1
    assert {"loss_ce", "loss_mask", "loss_dice"} <= set(losses)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("geometric_predictor.") for n in trainable)
    assert all("adapter" in n or n.startswith("geometric_predictor.") for n in trainable)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"no gradient on trainable {name}"
            assert torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, f"gradient on frozen {name}"


def test_unfrozen_model_trains_everything() -> None:
    model = build_model(
        tiny_cfg(
            "od", "all", "MODEL.BACKBONE.FREEZE", "False", "MODEL.SEM_SEG_HEAD.FREEZE", "False"
        )
    )
    _check_step(model, [sample(2, seed=3)])
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]


def test_zero_one_two_instances() -> None:
    model = build_model(tiny_cfg("od", "all"))
    few = _check_step(model, [sample(0, seed=4), sample(1, seed=5)])
    # no image with a pair: order losses are zero (same keys), segmentation losses still train
    order_keys = [k for k in few if k.startswith(("loss_occlusion", "loss_depth"))]
    assert order_keys and all(few[k].item() == 0 for k in order_keys)
    assert few["loss_mask"].item() > 0
    model.zero_grad()
    two = _check_step(model, [sample(0, seed=4), sample(2, seed=6)])
    assert set(two) == set(few)
    assert two["loss_occlusion"].item() > 0 and two["loss_depth"].item() > 0
    assert model.geometric_predictor.parameters().__next__().grad is not None


def test_unlabelled_pairs_are_ignored() -> None:
    """Changing the prediction target of a -1 cell does not change the depth loss."""
    model = build_model(tiny_cfg("d", "all"))
    model.train()
    x = sample(3, seed=7)
    torch.manual_seed(1)
    base = model([x])["loss_depth"]
    x["depth_matrix"][0, 2] = x["depth_matrix"][2, 0] = 1
    torch.manual_seed(1)
    changed = model([x])["loss_depth"]
    x["depth_matrix"][0, 2] = x["depth_matrix"][2, 0] = -1
    torch.manual_seed(1)
    again = model([x])["loss_depth"]
    assert torch.equal(base, again) and not torch.equal(base, changed)


def test_remove_losses() -> None:
    model = build_model(tiny_cfg("od", "all", "MODEL.REMOVE_LOSSES", "['labels', 'masks']"))
    losses = _check_step(model, [sample(2, seed=8)])
    assert set(losses) == {"loss_occlusion", "loss_occlusion_0", "loss_depth", "loss_depth_0"}
    model = build_model(tiny_cfg("od", "all", "MODEL.REMOVE_LOSSES", "['depth']"))
    assert set(model.order_criterion.weights) == {"occlusion"}
    with pytest.raises(ValueError, match="REMOVE_LOSSES.*'segm'"):
        build_model(tiny_cfg("od", "all", "MODEL.REMOVE_LOSSES", "['segm']"))


def test_bad_inputs_are_named() -> None:
    model = build_model(tiny_cfg("od", "all")).train()
    x = sample(2, seed=9)
    del x["depth_matrix"]
    with pytest.raises(ValueError, match="depth_matrix"):
        model([x])
    x = sample(2, seed=9)
    x["tgt_pan_idx"] = torch.tensor([1, 7])
    with pytest.raises(ValueError, match="tgt_pan_idx"):
        model([x])
    x = sample(3, seed=9)
    x["occlusion_matrix"] = x["occlusion_matrix"][:2, :2]
    with pytest.raises(ValueError, match="occlusion_matrix.*3 instances"):
        model([x])
    with pytest.raises(ValueError, match="DEPTH_LOSS"):
        build_model(tiny_cfg("d", "all", "MODEL.GEOMETRIC_PREDICTOR.DEPTH_LOSS", "focal"))
