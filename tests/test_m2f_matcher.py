"""Matcher invariants: valid one-to-one assignment, batched = per image, empty targets."""

from __future__ import annotations

import torch

from mask2former.modeling.matcher import HungarianMatcher

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


def test_empty_targets_give_empty_matches() -> None:
    matcher = HungarianMatcher(cost_class=1, cost_mask=1, cost_dice=1, num_points=20)
    outputs = _outputs(2)
    targets = [_target(0), _target(0)]
    indices = matcher(outputs, targets)
    assert [(len(s), len(t)) for s, t in indices] == [(0, 0), (0, 0)]
