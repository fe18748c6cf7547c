"""Order losses (Balanced Softmax, deep supervision) and query selection helpers."""

from __future__ import annotations

import math

import pytest
import torch

from instaformer.modeling.order import (
    GeometricTransformer,
    OrderCriterion,
    OrderInputs,
    order_loss,
    select_matched_queries,
    select_segment_queries,
)
from instaformer.modeling.order.losses import balanced_softmax_cross_entropy

COUNTS = torch.tensor([2353545.0, 388323.0])


def test_balanced_softmax_matches_hand_computation():
    logits = torch.tensor([[0.3, -0.2], [1.0, 2.0]])
    targets = torch.tensor([1, 0])
    prior = torch.log(COUNTS)
    expected = 0.0
    for z, y in zip(logits, targets, strict=True):
        adjusted = z + prior
        expected += -(adjusted[y] - torch.logsumexp(adjusted, 0)).item()
    log_probs = logits.log_softmax(-1)
    value = balanced_softmax_cross_entropy(log_probs, targets, COUNTS)
    assert math.isclose(value.item(), expected / 2, rel_tol=1e-6)
    # Balanced Softmax on log-probabilities = on logits (log_softmax shifts each row)
    on_logits = balanced_softmax_cross_entropy(logits, targets, COUNTS)
    assert math.isclose(on_logits.item(), expected / 2, rel_tol=1e-6)
    plain = balanced_softmax_cross_entropy(log_probs, targets, None)
    torch.testing.assert_close(plain, torch.nn.functional.cross_entropy(logits, targets))


def test_diagonal_unlabelled_and_small_images_are_excluded():
    z = torch.randn(3, 3, 3)
    y = torch.tensor([[-1, 1, -1], [0, -1, 2], [-1, -1, -1]])
    valid = torch.tensor([[False, True, False], [True, False, True], [False, False, False]])
    expected = torch.nn.functional.cross_entropy(z[valid], y[valid])
    torch.testing.assert_close(order_loss([z.log_softmax(-1)], [y]), expected)
    # one-instance image and fully unlabelled image contribute nothing to the mean
    lone = torch.randn(1, 1, 3).log_softmax(-1)
    blank = torch.full((2, 2), -1)
    others = [lone, torch.randn(2, 2, 3).log_softmax(-1)]
    value = order_loss([z.log_softmax(-1), *others], [y, torch.zeros(1, 1), blank])
    torch.testing.assert_close(value, expected)


def test_mean_and_sum_over_images_and_empty_batch():
    zs = [torch.randn(3, 3, 2), torch.randn(4, 4, 2)]
    ys = [torch.randint(0, 2, (3, 3)), torch.randint(0, 2, (4, 4))]
    single = [order_loss([z], [y], COUNTS) for z, y in zip(zs, ys, strict=True)]
    torch.testing.assert_close(order_loss(zs, ys, COUNTS), (single[0] + single[1]) / 2)
    torch.testing.assert_close(order_loss(zs, ys, COUNTS, "sum"), single[0] + single[1])
    assert order_loss([], []).item() == 0.0
    assert order_loss([torch.randn(1, 1, 2)], [torch.zeros(1, 1)]).item() == 0.0
    with pytest.raises(ValueError, match="reduction"):
        order_loss(zs, ys, reduction="max")


def test_criterion_deep_supervision_keys_and_gradients():
    head = GeometricTransformer(
        tasks=("occlusion", "depth"), mask_dim=16, d_model=8, num_heads=2, num_layers=3
    )
    criterion = OrderCriterion(
        weights={"occlusion": 5.0, "depth": 5.0},
        class_counts={"occlusion": COUNTS.tolist(), "depth": [1345145, 1345145, 49398]},
    )
    outputs, targets = [], []
    for n in (3, 1, 0, 4):
        masks = torch.zeros(n, 6, 6, dtype=torch.uint8)
        for i in range(n):
            masks[i, i : i + 2] = 1
        feats = torch.randn(16, 6, 6)
        bundle = OrderInputs(
            mask_embed=torch.randn(n, 16),
            masks=masks.bool(),
            mask_features=feats,
            image=None,
            image_format="RGB",
            valid_size=(6, 6),
        )
        outputs.append(head.log_probs(bundle))
        depth = torch.randint(-1, 3, (n, n))
        targets.append({"occlusion": torch.randint(0, 2, (n, n)), "depth": depth})
    losses = criterion(outputs, targets)
    assert set(losses) == set(criterion.weight_dict(3))
    assert set(losses) == {
        "loss_occlusion",
        "loss_occlusion_0",
        "loss_occlusion_1",
        "loss_depth",
        "loss_depth_0",
        "loss_depth_1",
    }
    total = sum(criterion.weight_dict(3)[k] * v for k, v in losses.items())
    assert torch.isfinite(total)
    total.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert set(criterion([], [])) == {"loss_occlusion", "loss_depth"}


def test_select_matched_queries_orders_by_annotated_gt():
    # matcher output in arbitrary order: query 7 <-> GT 2, query 1 <-> GT 0, query 4 <-> GT 1 ...
    query_idx = torch.tensor([7, 1, 4, 9])
    gt_idx = torch.tensor([2, 0, 1, 3])
    assert select_matched_queries(query_idx, gt_idx, torch.tensor([0, 2, 3])).tolist() == [1, 7, 9]
    assert (
        select_matched_queries(query_idx, gt_idx, torch.tensor([], dtype=torch.long)).numel() == 0
    )
    with pytest.raises(ValueError, match="no matched query"):
        select_matched_queries(query_idx[:2], gt_idx[:2], torch.tensor([0, 1]))


def test_select_segment_queries_keeps_things_in_segment_order():
    segments = [
        {"id": 3, "isthing": True, "query_index": 12},
        {"id": 1, "isthing": False, "query_index": 0},
        {"id": 5, "isthing": True, "query_index": 2},
    ]
    queries, ids = select_segment_queries(segments)
    assert queries.tolist() == [12, 2] and ids == [3, 5]
    queries, ids = select_segment_queries([])
    assert queries.numel() == 0 and ids == []
