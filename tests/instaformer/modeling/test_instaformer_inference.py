"""Tiny-config InstaFormer inference: evaluation mode (GT instances) and blind mode (segments).

Evaluation mode: matrices over the annotated GT instances, permutation equivariance, zero and
one instance, segmentation results kept. Blind mode: rows = thing segments with their ids,
zero detections give empty matrices, the pairwise head runs without a mapper-made low_image.
"""

from __future__ import annotations

import pytest
import torch

from instaformer.modeling import build_model
from mask2former.structures import Instances
from tests.support.tiny_instaformer import check_order_contract, sample, tiny_cfg

EVAL = ["TEST.OCCLUSION_EVALUATION", "True", "TEST.DEPTH_EVALUATION", "True"]
BLIND = ["TEST.OCCLUSION_EVALUATION", "False", "TEST.DEPTH_EVALUATION", "False"]


@pytest.fixture(scope="module")
def eval_model():
    torch.manual_seed(0)
    return build_model(tiny_cfg("od", "all", *EVAL)).eval()


def test_evaluation_mode_outputs(eval_model) -> None:
    inputs = [sample(3, seed=1), sample(0, seed=2), sample(1, 48, 64, seed=3)]
    with torch.no_grad():
        results = eval_model(inputs)
    for out, x, n in zip(results, inputs, (3, 0, 1), strict=True):
        check_order_contract(out, n)
        assert "order_segment_ids" not in out
        # segmentation results stay as configured (the reference dropped them)
        assert {"sem_seg", "panoptic_seg", "instances"} <= set(out)
        assert out["sem_seg"].shape[-2:] == (x["height"], x["width"])


def test_evaluation_mode_is_permutation_equivariant(eval_model) -> None:
    x = sample(5, seed=4)
    g = torch.Generator().manual_seed(0)
    # shuffle the instance list and the annotated rows independently
    order = torch.randperm(6, generator=g)  # new instance j = old instance order[j]
    perm = torch.randperm(5, generator=g)  # new row r = old row perm[r]
    inst = x["instances"]
    position = torch.argsort(order)  # old instance i sits at position[i]
    y = dict(x)
    y["instances"] = Instances(
        inst.image_size, gt_classes=inst.gt_classes[order], gt_masks=inst.gt_masks[order]
    )
    y["tgt_pan_idx"] = position[x["tgt_pan_idx"][perm]]
    with torch.no_grad():
        a, b = eval_model([x])[0], eval_model([y])[0]
    for task in ("occlusion", "depth"):
        expected = a[f"{task}_prob"][perm][:, perm]
        torch.testing.assert_close(b[f"{task}_prob"], expected, atol=1e-5, rtol=0)
        permuted = a[task][perm][:, perm]
        assert (b[task] != permuted).sum().item() <= 1  # only near-ties may flip
    assert not torch.equal(a["depth_prob"], a["depth_prob"][perm][:, perm])  # a real test


def test_ground_truth_rows_need_ground_truth(eval_model) -> None:
    x = sample(2, seed=5)
    del x["tgt_pan_idx"]
    with pytest.raises(ValueError, match="tgt_pan_idx"):
        with torch.no_grad():
            eval_model([x], order_rows="ground_truth")
    with pytest.raises(ValueError, match="order_rows"):  # mixed batch: rows must be named
        with torch.no_grad():
            eval_model([x, sample(2, seed=6)])
    with pytest.raises(ValueError, match="order_rows"):
        eval_model([x], order_rows="gt")


def test_rows_follow_each_call_not_the_build(eval_model) -> None:
    """One model: ground-truth rows for inputs with ``tgt_pan_idx`` (or when asked), thing-segment
    rows for inputs without (or when asked), whatever the TEST flags were at build time."""
    x = sample(3, seed=9)
    blind = {k: x[k] for k in ("image", "height", "width")}
    with torch.no_grad():
        gt_rows = eval_model([x])[0]
        asked = eval_model([x], order_rows="segments")[0]
        segments = eval_model([blind])[0]
    check_order_contract(gt_rows, 3)
    assert "order_segment_ids" not in gt_rows
    things = [s["id"] for s in segments["panoptic_seg"][1] if s["isthing"]]
    assert segments["order_segment_ids"].tolist() == things
    assert torch.equal(asked["order_segment_ids"], segments["order_segment_ids"])
    torch.testing.assert_close(asked["depth_prob"], segments["depth_prob"])
    check_order_contract(segments, len(things))


@pytest.mark.parametrize("head", ["all", "pairwise"])
def test_blind_mode_rows_are_thing_segments(head: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_cfg("od", head, *BLIND)).eval()
    x = {k: v for k, v in sample(3, seed=6).items() if k in ("image", "height", "width")}
    with torch.no_grad():
        out = model([x])[0]
    things = [s for s in out["panoptic_seg"][1] if s["isthing"]]
    assert things, "the tiny model with thresholds 0 should find thing segments"
    assert out["order_segment_ids"].tolist() == [s["id"] for s in things]
    check_order_contract(out, len(things))


def test_blind_mode_zero_detections() -> None:
    cfg = tiny_cfg("od", "all", *BLIND, "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "1.0")
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": sample(2, seed=7)["image"], "height": 64, "width": 64}])[0]
    assert out["panoptic_seg"][1] == []
    assert out["order_segment_ids"].shape == (0,)
    check_order_contract(out, 0)


def test_only_configured_tasks_are_returned() -> None:
    model = build_model(
        tiny_cfg("od", "all", *BLIND, "MODEL.GEOMETRIC_PREDICTOR.DEPTH_ON", "False")
    )
    with torch.no_grad():
        out = model.eval()([{"image": sample(2, seed=8)["image"]}])[0]
    assert "occlusion" in out and "depth" not in out and "depth_prob" not in out
    with pytest.raises(ValueError, match="order outputs"):
        build_model(tiny_cfg("o", "all", "MODEL.GEOMETRIC_PREDICTOR.DEPTH_ON", "True"))
