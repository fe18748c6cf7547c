"""Set-prediction losses of Mask2Former: class CE, point-sampled mask BCE and dice.

Shape shorthand: B images, Q queries, K+1 classes (last = no object), M ground-truth masks,
P sampled points, h, w mask-logit size, Hp, Wp padded image size.
Deep supervision: every entry of ``outputs["aux_outputs"]`` is matched and supervised with
every loss (including the class loss, which the reference silently dropped for the auxiliary
predictions, docs/reference.md [IF 7.2]); its losses are named ``<loss>_<i>``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from mask2former.modeling.point_features import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from mask2former.utils.comm import get_world_size

__all__ = ["dice_loss", "sigmoid_ce_loss", "SetCriterion"]

Indices = list[tuple[Tensor, Tensor]]


def dice_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Tensor[N, P] logits, Tensor[N, P] {0, 1} targets -> scalar sum of dice losses / num_masks."""
    inputs = inputs.sigmoid().flatten(1)
    numerator = 2 * (inputs * targets).sum(-1)
    denominator = inputs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss.sum() / num_masks


def sigmoid_ce_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Tensor[N, P] logits, Tensor[N, P] targets -> scalar sum of per-mask mean BCE / num_masks."""
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


class SetCriterion(nn.Module):
    """Match predictions to targets, then sum the requested losses (unweighted).

    Subclasses add a loss ``name`` by registering ``self.loss_fns[name]`` (a callable
    ``(outputs, targets, indices, num_masks) -> {loss_key: Tensor}``) and, if it needs other
    prediction keys, ``self.required_keys[name]``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: dict[str, float],
        eos_coef: float,
        losses: list[str],
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = list(losses)
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.loss_fns: dict[str, Callable[..., dict[str, Tensor]]] = {
            "labels": self.loss_labels,
            "masks": self.loss_masks,
        }
        self.required_keys: dict[str, tuple[str, ...]] = {
            "labels": ("pred_logits",),
            "masks": ("pred_masks",),
        }

    def loss_labels(
        self, outputs: dict, targets: list[dict], indices: Indices, num_masks: float
    ) -> dict[str, Tensor]:
        """``loss_ce``: cross-entropy over all queries; unmatched ones target "no object"."""
        src_logits = outputs["pred_logits"].float()  # B x Q x K+1
        batch_idx, src_idx = self._get_src_permutation_idx(indices)
        target_classes_o = torch.cat(
            [t["labels"][j] for t, (_, j) in zip(targets, indices, strict=True)]
        ).to(src_logits.device)
        target_classes = torch.full(
            src_logits.shape[:2], self.num_classes, dtype=torch.int64, device=src_logits.device
        )
        target_classes[batch_idx, src_idx] = target_classes_o
        loss_ce = F.cross_entropy(src_logits.transpose(1, 2), target_classes, self.empty_weight)
        return {"loss_ce": loss_ce}

    def loss_masks(
        self, outputs: dict, targets: list[dict], indices: Indices, num_masks: float
    ) -> dict[str, Tensor]:
        """``loss_mask`` (BCE) and ``loss_dice`` on P importance-sampled points per matched mask."""
        batch_idx, src_idx = self._get_src_permutation_idx(indices)
        src_masks = outputs["pred_masks"][batch_idx, src_idx][:, None]  # N x 1 x h x w
        target_masks = torch.cat(
            [t["masks"][j] for t, (_, j) in zip(targets, indices, strict=True)]
        ).to(src_masks)[:, None]  # N x 1 x Hp x Wp
        with torch.no_grad():
            point_coords = get_uncertain_point_coords_with_randomness(
                src_masks,
                calculate_uncertainty,
                self.num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )
            point_labels = point_sample(target_masks, point_coords, align_corners=False).squeeze(1)
        point_logits = point_sample(src_masks, point_coords, align_corners=False).squeeze(1)
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    @staticmethod
    def _get_src_permutation_idx(indices: Indices) -> tuple[Tensor, Tensor]:
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        return batch_idx, src_idx

    def get_loss(
        self, loss: str, outputs: dict, targets: list[dict], indices: Indices, num_masks: float
    ) -> dict[str, Tensor]:
        if loss not in self.loss_fns:
            raise ValueError(f"unknown loss {loss!r}; available: {sorted(self.loss_fns)}")
        return self.loss_fns[loss](outputs, targets, indices, num_masks)

    def num_masks(self, targets: list[dict], device: torch.device) -> float:
        """Ground-truth masks in the batch, averaged over processes, at least 1."""
        n = torch.as_tensor(
            [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float, device=device
        )
        world_size = get_world_size()
        if world_size > 1:
            dist.all_reduce(n)
        return torch.clamp(n / world_size, min=1).item()

    def forward(
        self, outputs: dict, targets: list[dict], indices: Indices | None = None
    ) -> dict[str, Tensor]:
        """Losses.

        Args:
            outputs: ``pred_logits`` Tensor[B, Q, K+1], ``pred_masks`` Tensor[B, Q, h, w],
                optional ``aux_outputs`` list of such dicts.
            targets: per image ``labels`` LongTensor[M], ``masks`` bool Tensor[M, Hp, Wp].
            indices: final-layer matching to reuse; None = run the matcher.

        Returns:
            ``{loss_key: scalar Tensor}``; auxiliary entries suffixed ``_<i>``.
        """
        main_outputs = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        if indices is None:
            indices = self.matcher(main_outputs, targets)
        num_masks = self.num_masks(targets, main_outputs["pred_logits"].device)
        losses: dict[str, Tensor] = {}
        for loss in self.losses:
            losses.update(self.get_loss(loss, main_outputs, targets, indices, num_masks))
        for i, aux_outputs in enumerate(outputs.get("aux_outputs", [])):
            aux_indices = self.matcher(aux_outputs, targets)
            for loss in self.losses:
                if not all(k in aux_outputs for k in self.required_keys.get(loss, ())):
                    continue
                l_dict = self.get_loss(loss, aux_outputs, targets, aux_indices, num_masks)
                losses.update({f"{k}_{i}": v for k, v in l_dict.items()})
        return losses
