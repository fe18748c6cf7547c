"""Training losses of InstaOrderNet for one input order of a batch of pairs (A, B).

Shape shorthand: B pairs of a batch.

Targets are in the InstaOrderNet convention of the pair (A, B):
occlusion ``t = (O[B, A], O[A, B])`` as floats; depth class 0 = A closer, 1 = A farther,
2 = same depth, -1 = no label (ignored).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from instaformer.vocabulary import transpose_depth_labels

__all__ = ["depth_loss", "occlusion_loss", "swap_targets"]


def swap_targets(occlusion: Tensor | None, depth: Tensor | None) -> tuple[Tensor | None, ...]:
    """Targets of (B, A) from those of (A, B): ``t -> (t[1], t[0])``, depth ``0 <-> 1``, 2 and -1
    unchanged.

    Args:
        occlusion: Tensor[B, 2] or None.
        depth: Tensor[B] int64 or None.
    """
    swapped_occ = occlusion.flip(-1) if occlusion is not None else None
    swapped_depth = transpose_depth_labels(depth) if depth is not None else None
    return swapped_occ, swapped_depth


def occlusion_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of independent sigmoids, averaged over pairs and both outputs.

    Args:
        logits: Tensor[B, 2] (``[0]`` = B occludes A, ``[1]`` = A occludes B).
        target: Tensor[B, 2] in {0, 1}, or -1 (ignored, e.g. bidirectional pairs with
            ``INPUT.RM_BIDIREC``).
    Returns:
        scalar Tensor (a constant 0 when every target is ignored).
    """
    valid = target >= 0
    if not valid.any():
        return logits.new_zeros(())
    per_output = F.binary_cross_entropy_with_logits(
        logits, target.clamp(min=0).to(logits.dtype), reduction="none"
    )
    return per_output[valid].mean()


def depth_loss(
    logits: Tensor,
    target: Tensor,
    overlap: Tensor,
    *,
    overlap_weight: float,
    distinct_weight: float,
    double_softmax: bool = False,
) -> Tensor:
    """``overlap_weight * CE_overlap + distinct_weight * CE_distinct``, split by the overlap flag.

    Each CE is averaged over the labelled pairs of its subset; an empty subset contributes 0.

    Args:
        logits: Tensor[B, 3].
        target: Tensor[B] int64 in {0, 1, 2}, or -1 (ignored).
        overlap: Tensor[B] bool, the pair's depth extents overlap.
        double_softmax: reproduce the reference's defect ([ION 15.2]): cross-entropy applied to
            ``softmax(logits)`` instead of the logits.
    Returns:
        scalar Tensor (a constant 0 when no pair is labelled).
    """
    scores = logits.softmax(-1) if double_softmax else logits
    per_pair = F.cross_entropy(scores, target.clamp(min=0), reduction="none")
    valid = target >= 0
    total = logits.new_zeros(())
    for subset, weight in ((overlap.bool(), overlap_weight), (~overlap.bool(), distinct_weight)):
        keep = valid & subset
        if keep.any():
            total = total + weight * per_pair[keep].mean()
    return total
