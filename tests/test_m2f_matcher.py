"""Matcher invariants: valid one-to-one assignment, batched = per image, empty targets."""

from __future__ import annotations

import torch

from mask2former.modeling.matcher import HungarianMatcher, full_mask_matching

Q, K, H, W = 7, 4, 12, 16


def _outputs(b: int) -> dict:
    return {"pred_logits": torch.randn(b, Q, K + 1), "pred_masks": torch.randn(b, Q, H, W)}


def _target(m: int) -> dict:
    return {
        "labels": torch.randint(0, K, (m,)),
        "masks": torch.rand(m, 4 * H, 4 * W) > 0.5,
    }


def _check_valid(indices, sizes) -> None:
    for (src, tgt), m in zip(indices, sizes, strict=True):
        assert src.dtype == tgt.dtype == torch.int64
        assert len(src) == len(tgt) == min(Q, m)
        assert len(set(src.tolist())) == len(src) and sorted(tgt.tolist()) == list(range(m))


def test_point_matcher_batched_equals_per_image() -> None:
    matcher = HungarianMatcher(cost_class=2, cost_mask=5, cost_dice=5, num_points=50)
    outputs = _outputs(3)
    targets = [_target(3), _target(0), _target(5)]
    torch.manual_seed(1)
    batched = matcher(outputs, targets)
    _check_valid(batched, [3, 0, 5])
    torch.manual_seed(1)  # same random points, drawn image by image in the same order
    for b in range(3):
        single = matcher({k: v[b : b + 1] for k, v in outputs.items()}, [targets[b]])[0]
        assert torch.equal(single[0], batched[b][0]) and torch.equal(single[1], batched[b][1])


def test_full_mask_matching_is_deterministic_and_batch_invariant() -> None:
    outputs = _outputs(2)
    targets = [_target(4), _target(2)]
    kwargs = {"cost_class": 2.0, "cost_mask": 5.0, "cost_dice": 5.0}
    batched = full_mask_matching(outputs, targets, **kwargs)
    _check_valid(batched, [4, 2])
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(batched, full_mask_matching(outputs, targets, **kwargs), strict=True)
    )
    for b in range(2):
        single = full_mask_matching(
            {k: v[b : b + 1] for k, v in outputs.items()}, [targets[b]], **kwargs
        )
        assert torch.equal(single[0][0], batched[b][0]) and torch.equal(single[0][1], batched[b][1])


def test_full_mask_matching_recovers_planted_assignment() -> None:
    perm = [5, 0, 3]  # query 5 predicts GT 0, query 0 GT 1, query 3 GT 2
    masks = torch.zeros(3, 4 * H, 4 * W, dtype=torch.bool)
    masks[0, :16], masks[1, 16:32, :20], masks[2, 32:, 20:] = True, True, True
    labels = torch.tensor([1, 2, 3])
    logits = torch.full((1, Q, K + 1), -5.0)
    mask_logits = torch.full((1, Q, H, W), -8.0)
    small = torch.nn.functional.interpolate(masks[:, None].float(), size=(H, W))[:, 0]
    for gt, q in enumerate(perm):
        logits[0, q, labels[gt]] = 5.0
        mask_logits[0, q] = small[gt] * 16 - 8
    (src, tgt), = full_mask_matching(
        {"pred_logits": logits, "pred_masks": mask_logits},
        [{"labels": labels, "masks": masks}],
        cost_class=2.0, cost_mask=5.0, cost_dice=5.0,
    )  # fmt: skip
    assert dict(zip(tgt.tolist(), src.tolist(), strict=True)) == {0: 5, 1: 0, 2: 3}


def test_empty_targets_give_empty_matches() -> None:
    matcher = HungarianMatcher(cost_class=1, cost_mask=1, cost_dice=1, num_points=20)
    outputs = _outputs(2)
    targets = [_target(0), _target(0)]
    for indices in (
        matcher(outputs, targets),
        full_mask_matching(outputs, targets, cost_class=1, cost_mask=1, cost_dice=1),
    ):
        assert [(len(s), len(t)) for s, t in indices] == [(0, 0), (0, 0)]
