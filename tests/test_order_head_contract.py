"""The order-head contract: a third head is one registered class (the example of
docs/architecture.md, "Adding a head", executed from the doc), trained and run with both kinds of
order rows; the two shipped heads follow the same contract."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_instaformer_inference import _check_contract
from test_instaformer_train import sample, tiny_cfg

from instaformer.config import ConfigError
from instaformer.modeling import build_model
from instaformer.modeling.order import (
    GeometricTransformer,
    OrderHead,
    OrderInputs,
    PairwiseResNet,
)
from instaformer.modeling.registry import ORDER_HEAD_REGISTRY

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _doc_example() -> str:
    """The first python block after the "## Adding a head" heading of docs/architecture.md."""
    text = DOC.read_text().split("## Adding a head", 1)[1]
    match = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert match, "docs/architecture.md: no python block under 'Adding a head'"
    return match.group(1)


@pytest.fixture(scope="module")
def area_head() -> Iterator[type]:
    """The doc's head class, registered for this module's tests and removed after them, so the
    registry other test modules see (e.g. the names an error lists) is the shipped one."""
    assert "AreaOrderHead" not in ORDER_HEAD_REGISTRY
    namespace: dict = {}
    exec(compile(_doc_example(), str(DOC), "exec"), namespace)  # the doc block itself
    yield ORDER_HEAD_REGISTRY.get("AreaOrderHead")
    # fvcore's Registry has no public removal; its name -> class map is `_obj_map`.
    del ORDER_HEAD_REGISTRY._obj_map["AreaOrderHead"]


def _cfg(*opts: str):
    return tiny_cfg("od", "all", "MODEL.GEOMETRIC_PREDICTOR.NAME", "AreaOrderHead", *opts)


def test_registered_head_trains(area_head) -> None:
    torch.manual_seed(0)
    model = build_model(_cfg())
    assert isinstance(model.geometric_predictor, area_head)
    assert model.order_criterion.class_counts["occlusion"] is not None  # uses_class_prior
    model.train()
    losses = model([sample(3, seed=1), sample(2, 48, 64, seed=2)])
    assert {"loss_occlusion", "loss_depth", "loss_ce"} <= set(losses)
    assert not any(k.startswith(("loss_occlusion_", "loss_depth_")) for k in losses)  # 1 layer
    for key, value in losses.items():
        assert value.dim() == 0 and math.isfinite(value.item()), key
    assert losses["loss_occlusion"].item() > 0
    sum(losses.values()).backward()
    grad = model.geometric_predictor.scale.grad
    assert grad is not None and torch.isfinite(grad) and grad.abs().item() > 0


def test_registered_head_infers_ground_truth_and_segment_rows(area_head) -> None:
    torch.manual_seed(0)
    model = build_model(_cfg()).eval()
    x = sample(3, seed=3)
    blind = {k: x[k] for k in ("image", "height", "width")}
    with torch.no_grad():
        gt_rows, segment_rows = model([x])[0], model([blind])[0]
    _check_contract(gt_rows, 3)
    things = [s["id"] for s in segment_rows["panoptic_seg"][1] if s["isthing"]]
    assert segment_rows["order_segment_ids"].tolist() == things
    _check_contract(segment_rows, len(things))
    assert len(things) >= 2, "the tiny model with thresholds 0 should find thing segments"


def test_registered_head_rule(area_head) -> None:
    head = area_head(tasks=("occlusion", "depth"))
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4], masks[1, :2] = True, True  # instance 0 is the larger
    bundle = OrderInputs(
        mask_embed=torch.zeros(2, 4),
        masks=masks,
        mask_features=torch.zeros(4, 8, 8),
        image=None,
        image_format="RGB",
        valid_size=(8, 8),
    )
    log_probs = head.log_probs(bundle)
    assert (
        log_probs["occlusion"][0][0, 1].argmax() == 1 and log_probs["depth"][0][0, 1].argmax() == 1
    )
    assert (
        log_probs["occlusion"][0][1, 0].argmax() == 0 and log_probs["depth"][0][1, 0].argmax() == 0
    )


def test_pairwise_legacy_key_must_agree_with_name(area_head) -> None:
    with pytest.raises(ConfigError, match="NAME chooses the head"):
        _cfg("MODEL.GEOMETRIC_PREDICTOR.PAIRWISE", "True")
    cfg = _cfg("MODEL.GEOMETRIC_PREDICTOR.PAIRWISE", "False")
    assert "PAIRWISE" not in cfg.MODEL.GEOMETRIC_PREDICTOR


def test_shipped_heads_declare_the_contract() -> None:
    holistic = GeometricTransformer(
        tasks=("occlusion", "depth"), mask_dim=8, d_model=8, num_heads=2
    )
    assert isinstance(holistic, OrderHead) and holistic.uses_class_prior
    assert PairwiseResNet.uses_class_prior is False and PairwiseResNet.num_layers == 1
    n = 3
    masks = torch.zeros(n, 6, 6, dtype=torch.bool)
    for i in range(n):
        masks[i, i : i + 3, : 2 * i + 2] = True
    bundle = OrderInputs(
        mask_embed=torch.randn(n, 8),
        masks=masks,
        mask_features=torch.randn(8, 6, 6),
        image=None,
        image_format="RGB",
        valid_size=(6, 6),
    )
    with torch.no_grad():
        scores, log_probs = holistic.scores(bundle), holistic.log_probs(bundle)
    for task, k in (("occlusion", 2), ("depth", 3)):
        assert len(log_probs[task]) == holistic.num_layers
        for s, lp in zip(scores[task], log_probs[task], strict=True):
            assert lp.shape == (n, n, k)
            torch.testing.assert_close(lp, s.log_softmax(-1))
            torch.testing.assert_close(lp.exp().sum(-1), torch.ones(n, n))
