"""Order losses: Balanced-Softmax (or plain) cross-entropy over instance pairs, deep supervision.

Shape shorthand: B images, n_b instances of image b, K classes of a task, L head layers.

Per image, the supervised pairs are the off-diagonal cells ``(i, j)`` whose target is not -1
(unlabelled); the image loss is the mean over those pairs. Images without such a pair (n < 2,
or nothing labelled) contribute nothing. The batch loss is the mean over contributing images
(``reduction="mean"``) or, as the reference did, their sum (``reduction="sum"``, only for
reproducing the published training recipe: its scale depends on the per-GPU batch;
docs/reference.md [IF 7.13]). With no contributing image the loss is a zero scalar.

Inputs are the heads' log-probabilities (``OrderHead.log_probs``). Balanced Softmax (Ren et al.,
2020): ``CE(log p + log(pi), y)`` with ``pi`` the training-set class counts; since ``log p`` is the
logits shifted per row, this equals Balanced Softmax on the logits. Without counts the loss is the
negative log-likelihood ``-log p[y]`` (no second normalisation). At inference the
log-probabilities are arg-maxed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["OrderCriterion", "balanced_softmax_cross_entropy", "order_loss"]


def balanced_softmax_cross_entropy(
    log_probs: Tensor, targets: Tensor, class_counts: Tensor | None = None
) -> Tensor:
    """Mean cross-entropy of ``log_probs + log(class_counts)`` (negative log-likelihood of
    ``log_probs`` when counts are None).

    Args:
        log_probs: Tensor[P, K] log-probabilities (logits give the same value with counts).
        targets: Tensor[P] int64 class indices in [0, K).
        class_counts: Tensor[K] positive training counts per class, or None.

    Returns:
        Tensor[] mean over the P pairs.
    """
    if class_counts is None:
        return F.nll_loss(log_probs, targets)
    return F.cross_entropy(log_probs + torch.log(class_counts.to(log_probs)), targets)


def order_loss(
    log_probs: Sequence[Tensor],
    targets: Sequence[Tensor],
    class_counts: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Order loss of one head layer over a batch.

    Args:
        log_probs: per image, Tensor[n_b, n_b, K] log-probabilities (``[i, j]`` = row i vs
            column j).
        targets: per image, Tensor[n_b, n_b] int class indices, -1 = unlabelled.
        class_counts: Tensor[K] for Balanced Softmax, None for plain cross-entropy.
        reduction: ``"mean"`` or ``"sum"`` over contributing images.

    Returns:
        Tensor[] loss (zero when no image has a labelled off-diagonal pair).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"order loss reduction must be 'mean' or 'sum', got {reduction!r}")
    if len(log_probs) != len(targets):
        raise ValueError(f"{len(log_probs)} head outputs for {len(targets)} target matrices")
    per_image = []
    for z, y in zip(log_probs, targets, strict=True):
        n = z.shape[0]
        if tuple(y.shape) != (n, n) or z.shape[:2] != (n, n):
            raise ValueError(
                f"order head output {tuple(z.shape)} does not match target matrix {tuple(y.shape)}"
            )
        y = y.to(device=z.device, dtype=torch.long)
        valid = (y >= 0) & ~torch.eye(n, dtype=torch.bool, device=z.device)
        if not bool(valid.any()):
            continue
        per_image.append(balanced_softmax_cross_entropy(z[valid], y[valid], class_counts))
    if not per_image:
        device = log_probs[0].device if len(log_probs) else None
        return torch.zeros((), device=device)
    total = torch.stack(per_image).sum()
    return total / len(per_image) if reduction == "mean" else total


class OrderCriterion:
    """Order losses of every configured task at every head layer (deep supervision).

    Output keys: ``loss_<task>`` for the last head layer and ``loss_<task>_<l>`` for head layer
    ``l = 0 .. L-2`` (when ``deep_supervision``); :attr:`weight_dict` gives each key's weight.
    Losses are returned unweighted.
    """

    def __init__(
        self,
        *,
        weights: Mapping[str, float],
        class_counts: Mapping[str, Sequence[float] | None],
        deep_supervision: bool = True,
        reduction: str = "mean",
    ) -> None:
        """
        Args:
            weights: task name (``"occlusion"``, ``"depth"``) -> loss weight; defines the tasks.
            class_counts: task -> per-class training counts (Balanced Softmax) or None
                (negative log-likelihood).
            deep_supervision: also supervise every earlier head layer.
            reduction: ``"mean"`` or ``"sum"`` over images (see module docstring).
        """
        missing = [t for t in weights if t not in class_counts]
        if missing:
            raise ValueError(f"no class_counts entry for tasks {missing}")
        self.weights = dict(weights)
        self.class_counts = {
            t: None if c is None else torch.as_tensor(c, dtype=torch.float32)
            for t, c in class_counts.items()
        }
        for t, c in self.class_counts.items():
            if c is not None and bool((c <= 0).any()):
                raise ValueError(f"class counts of task {t!r} must be positive, got {c.tolist()}")
        self.deep_supervision = deep_supervision
        self.reduction = reduction

    def weight_dict(self, num_layers: int) -> dict[str, float]:
        """Loss key -> weight, for a head with ``num_layers`` layers."""
        out = {}
        for task, w in self.weights.items():
            out[f"loss_{task}"] = w
            if self.deep_supervision:
                out.update({f"loss_{task}_{layer}": w for layer in range(num_layers - 1)})
        return out

    def __call__(
        self, head_outputs: Sequence[Mapping[str, Sequence[Tensor]]], targets: Sequence[Mapping]
    ) -> dict[str, Tensor]:
        """
        Args:
            head_outputs: per image, the head's ``{task: [Tensor[n_b, n_b, K] per layer]}``
                log-probabilities (``OrderHead.log_probs``).
            targets: per image, ``{task: Tensor[n_b, n_b]}`` GT matrices in the project convention
                (``"occlusion"``: 1 = row occludes column; ``"depth"``: 0 farther, 1 closer,
                2 equal; -1 unlabelled), rows in the same order as the head's rows.

        Returns:
            ``{loss key: Tensor[]}`` unweighted (see class docstring).
        """
        if len(head_outputs) != len(targets):
            raise ValueError(f"{len(head_outputs)} head outputs for {len(targets)} targets")
        losses = {}
        for task in self.weights:
            per_image_layers = [out[task] for out in head_outputs]
            task_targets = [t[task] for t in targets]
            num_layers = len(per_image_layers[0]) if per_image_layers else 0
            if num_layers == 0:  # empty batch
                losses[f"loss_{task}"] = torch.zeros(())
                continue
            layers = list(range(num_layers)) if self.deep_supervision else [num_layers - 1]
            counts = self.class_counts[task]
            for layer in layers:
                value = order_loss(
                    [x[layer] for x in per_image_layers], task_targets, counts, self.reduction
                )
                key = f"loss_{task}" if layer == num_layers - 1 else f"loss_{task}_{layer}"
                losses[key] = value
        return losses
