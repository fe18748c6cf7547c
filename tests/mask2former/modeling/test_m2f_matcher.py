"""Matcher invariants: valid one-to-one assignment, batched = per image, empty targets."""

from __future__ import annotations

import torch

from mask2former.modeling.matcher import HungarianMatcher
from tests.support.matching import check_valid, random_outputs, random_target


def test_point_matcher_batched_equals_per_image() -> None:
    matcher = HungarianMatcher(cost_class=2, cost_mask=5, cost_dice=5, num_points=50)
    outputs = random_outputs(3)
    targets = [random_target(3), random_target(0), random_target(5)]
    torch.manual_seed(1)
    batched = matcher(outputs, targets)
    check_valid(batched, [3, 0, 5])
    torch.manual_seed(1)  # same random points, drawn image by image in the same order
    for b in range(3):
        single = matcher({k: v[b : b + 1] for k, v in outputs.items()}, [targets[b]])[0]
        assert torch.equal(single[0], batched[b][0]) and torch.equal(single[1], batched[b][1])


def test_empty_targets_give_empty_matches() -> None:
    matcher = HungarianMatcher(cost_class=1, cost_mask=1, cost_dice=1, num_points=20)
    outputs = random_outputs(2)
    targets = [random_target(0), random_target(0)]
    indices = matcher(outputs, targets)
    assert [(len(s), len(t)) for s, t in indices] == [(0, 0), (0, 0)]
