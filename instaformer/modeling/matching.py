"""Evaluation-only matching of InstaFormer: every mask-logit pixel, no random points.

Shape shorthand: B images, Q queries, K+1 classes (last = no object), M ground-truth masks of
one image, h x w mask-logit size, Hp x Wp padded image size.

Ground-truth order rows at evaluation (``order_rows="ground_truth"``: row k of the orders is
ground-truth instance k) need a matching that does not change from one run to the next: the
same cost as Mask2Former's :class:`~mask2former.modeling.matcher.HungarianMatcher`
(``matching_cost``, ``assign``), computed over all h x w pixels instead of sampled points. Same
invariant: per image, each ground truth is matched to exactly one query when Q >= M; a batch
gives the results of its images alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mask2former.modeling.matcher import Indices, assign, matching_cost

__all__ = ["full_mask_matching"]


@torch.no_grad()
def full_mask_matching(
    outputs: dict,
    targets: list[dict],
    *,
    cost_class: float,
    cost_mask: float,
    cost_dice: float,
) -> Indices:
    """Deterministic matching over every mask-logit pixel.

    Args:
        outputs: ``pred_logits`` Tensor[B, Q, K+1], ``pred_masks`` Tensor[B, Q, h, w].
        targets: per image ``labels`` LongTensor[M], ``masks`` Tensor[M, Hp, Wp]
            (nearest-downsampled to h x w here).
        cost_class, cost_mask, cost_dice: weights of the three costs.

    Returns:
        per image ``(query_idx, target_idx)``, each LongTensor[min(Q, M)], sorted by query.
    """
    weights = (cost_class, cost_mask, cost_dice)
    indices = []
    for b, target in enumerate(targets):
        out_mask = outputs["pred_masks"][b]  # Q x h x w
        tgt_mask = target["masks"].to(out_mask)
        if tgt_mask.shape[0] > 0:
            tgt_mask = F.interpolate(tgt_mask[:, None], size=out_mask.shape[-2:], mode="nearest")[
                :, 0
            ]
        else:
            tgt_mask = tgt_mask.new_zeros((0, *out_mask.shape[-2:]))
        with torch.autocast(device_type=out_mask.device.type, enabled=False):
            cost = matching_cost(
                outputs["pred_logits"][b],
                out_mask.flatten(1),
                target["labels"],
                tgt_mask.flatten(1),
                weights,
            )
        indices.append(assign(cost))
    return indices
