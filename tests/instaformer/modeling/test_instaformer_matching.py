"""InstaFormer's evaluation-only full-mask matching: valid one-to-one assignment, deterministic,
batched = per image, planted assignment recovered, empty targets."""

from __future__ import annotations

import torch

from instaformer.modeling.matching import full_mask_matching
from tests.support.matching import H, K, Q, W, check_valid, random_outputs, random_target


def test_full_mask_matching_is_deterministic_and_batch_invariant() -> None:
    outputs = random_outputs(2)
    targets = [random_target(4), random_target(2)]
    kwargs = {"cost_class": 2.0, "cost_mask": 5.0, "cost_dice": 5.0}
    batched = full_mask_matching(outputs, targets, **kwargs)
    check_valid(batched, [4, 2])
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


def test_full_mask_matching_empty_targets() -> None:
    indices = full_mask_matching(
        random_outputs(2),
        [random_target(0), random_target(0)],
        cost_class=1,
        cost_mask=1,
        cost_dice=1,
    )
    assert [(len(s), len(t)) for s, t in indices] == [(0, 0), (0, 0)]
