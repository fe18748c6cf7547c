"""Tiny-config InstaFormer training steps on CPU: o, d, od x holistic / pairwise head.

Checks finite losses with the expected keys, a gradient on every trainable parameter and none on
frozen ones (released freezing: backbone and decoders frozen, adapters and order head trained),
images with zero, one and two annotated instances, REMOVE_LOSSES and bad inputs.
"""

from __future__ import annotations

import math

import pytest
import torch

from instaformer.modeling import InstaFormer, build_model
from instaformer.vocabulary import TASK_CODES
from tests.support.tiny_instaformer import sample, tiny_cfg


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
