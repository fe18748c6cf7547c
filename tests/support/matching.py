"""Random matcher inputs and the check of a valid one-to-one assignment."""

from __future__ import annotations

import torch

Q, K, H, W = 7, 4, 12, 16  # queries, classes, prediction height and width


def random_outputs(b: int) -> dict:
    """Random class logits and mask logits of b images."""
    return {"pred_logits": torch.randn(b, Q, K + 1), "pred_masks": torch.randn(b, Q, H, W)}


def random_target(m: int) -> dict:
    """m random instances (labels, masks at 4x the prediction size)."""
    return {
        "labels": torch.randint(0, K, (m,)),
        "masks": torch.rand(m, 4 * H, 4 * W) > 0.5,
    }


def check_valid(indices, sizes) -> None:
    """Each image's matches: int64 indices, one-to-one, every target matched (Q >= targets)."""
    for (src, tgt), m in zip(indices, sizes, strict=True):
        assert src.dtype == tgt.dtype == torch.int64
        assert len(src) == len(tgt) == min(Q, m)
        assert len(set(src.tolist())) == len(src) and sorted(tgt.tolist()) == list(range(m))
