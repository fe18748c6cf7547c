"""Bipartite matching between predicted queries and ground-truth masks.

Shape shorthand: B images, Q queries, K+1 classes (last = no object), M ground-truth masks of
one image, P sampled points, h, w mask-logit size, Hp, Wp padded image size.

Invariant: per image, each ground truth is matched to exactly one query and each query to at
most one ground truth (``min(Q, M)`` pairs); the result for a batch equals the results for
each image alone. Cost = ``cost_class * (-p_class) + cost_mask * BCE + cost_dice * dice``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from mask2former.modeling.point_features import point_sample

__all__ = [
    "batch_dice_loss",
    "batch_sigmoid_ce_loss",
    "HungarianMatcher",
    "assign",
    "matching_cost",
]

Indices = list[tuple[Tensor, Tensor]]


def batch_dice_loss(inputs: Tensor, targets: Tensor) -> Tensor:
    """Pairwise dice cost: Tensor[N, P] logits x Tensor[M, P] {0, 1} -> Tensor[N, M]."""
    inputs = inputs.sigmoid()
    numerator = 2 * torch.einsum("nc,mc->nm", inputs, targets)
    denominator = inputs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def batch_sigmoid_ce_loss(inputs: Tensor, targets: Tensor) -> Tensor:
    """Pairwise mean BCE: Tensor[N, P] logits x Tensor[M, P] {0, 1} -> Tensor[N, M]."""
    p = inputs.shape[1]
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    loss = torch.einsum("nc,mc->nm", pos, targets) + torch.einsum("nc,mc->nm", neg, 1 - targets)
    return loss / p


def assign(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Tensor[Q, M] cost -> (query indices, target indices), int64, sorted by query."""
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


def matching_cost(
    logits: Tensor, mask_logits: Tensor, labels: Tensor, tgt_masks: Tensor, weights: tuple
) -> Tensor:
    """Tensor[Q, K+1], Tensor[Q, P], LongTensor[M], Tensor[M, P] -> Tensor[Q, M]."""
    cost_class_w, cost_mask_w, cost_dice_w = weights
    cost_class = -logits.float().softmax(-1)[:, labels]
    mask_logits, tgt_masks = mask_logits.float(), tgt_masks.float()
    cost_mask = batch_sigmoid_ce_loss(mask_logits, tgt_masks)
    cost_dice = batch_dice_loss(mask_logits, tgt_masks)
    return cost_mask_w * cost_mask + cost_class_w * cost_class + cost_dice_w * cost_dice


class HungarianMatcher(nn.Module):
    """Point-sampled matching (the same P random points for predictions and targets per image)."""

    def __init__(
        self,
        *,
        cost_class: float = 1.0,
        cost_mask: float = 1.0,
        cost_dice: float = 1.0,
        num_points: int = 0,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> Indices:
        """Match.

        Args:
            outputs: ``pred_logits`` Tensor[B, Q, K+1], ``pred_masks`` Tensor[B, Q, h, w].
            targets: per image ``labels`` LongTensor[M], ``masks`` Tensor[M, Hp, Wp].

        Returns:
            per image ``(query_idx, target_idx)``, each LongTensor[min(Q, M)].
        """
        weights = (self.cost_class, self.cost_mask, self.cost_dice)
        indices = []
        for b, target in enumerate(targets):
            out_mask = outputs["pred_masks"][b][:, None]  # Q x 1 x h x w
            tgt_mask = target["masks"].to(out_mask)[:, None]  # M x 1 x Hp x Wp
            point_coords = torch.rand(1, self.num_points, 2, device=out_mask.device)
            tgt_points = point_sample(
                tgt_mask, point_coords.repeat(tgt_mask.shape[0], 1, 1), align_corners=False
            ).squeeze(1)
            out_points = point_sample(
                out_mask, point_coords.repeat(out_mask.shape[0], 1, 1), align_corners=False
            ).squeeze(1)
            with torch.autocast(device_type=out_mask.device.type, enabled=False):
                cost = matching_cost(
                    outputs["pred_logits"][b], out_points, target["labels"], tgt_points, weights
                )
            indices.append(assign(cost))
        return indices
