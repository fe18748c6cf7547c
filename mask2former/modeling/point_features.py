"""Point sampling on mask logits (PointRend, Kirillov et al. 2020, §3.1 "point selection").

Shape shorthand: N masks, C channels, H, W map size, P points.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["point_sample", "calculate_uncertainty", "get_uncertain_point_coords_with_randomness"]


def point_sample(input: Tensor, point_coords: Tensor, **kwargs) -> Tensor:
    """Bilinear samples of ``input`` at normalised points.

    Args:
        input: Tensor[N, C, H, W].
        point_coords: Tensor[N, P, 2] (or Tensor[N, Hg, Wg, 2]), ``(x, y)`` in [0, 1].
        **kwargs: passed to ``F.grid_sample`` (e.g. ``align_corners=False``).

    Returns:
        Tensor[N, C, P] (or Tensor[N, C, Hg, Wg]).
    """
    add_dim = point_coords.dim() == 3
    if add_dim:
        point_coords = point_coords.unsqueeze(2)
    output = F.grid_sample(input, 2.0 * point_coords - 1.0, **kwargs)
    return output.squeeze(3) if add_dim else output


def calculate_uncertainty(logits: Tensor) -> Tensor:
    """Tensor[N, 1, ...] logits -> Tensor[N, 1, ...] uncertainty ``-|logit|`` (0 = most)."""
    if logits.shape[1] != 1:
        raise ValueError(f"uncertainty expects one channel; got shape {tuple(logits.shape)}")
    return -torch.abs(logits)


def get_uncertain_point_coords_with_randomness(
    coarse_logits: Tensor,
    uncertainty_func: Callable[[Tensor], Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> Tensor:
    """Importance sampling: most uncertain of ``oversample_ratio * P`` random points + random ones.

    Args:
        coarse_logits: Tensor[N, 1, H, W].
        uncertainty_func: Tensor[N, 1, P'] logits -> Tensor[N, 1, P'] uncertainty.
        num_points: P.
        oversample_ratio: candidates per sampled point (>= 1).
        importance_sample_ratio: fraction of P taken by uncertainty, in [0, 1].

    Returns:
        Tensor[N, P, 2], ``(x, y)`` in [0, 1].
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"need oversample_ratio >= 1 and importance_sample_ratio in [0, 1]; got "
            f"{oversample_ratio}, {importance_sample_ratio}"
        )
    num_boxes = coarse_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    point_coords = torch.rand(num_boxes, num_sampled, 2, device=coarse_logits.device)
    point_logits = point_sample(coarse_logits, point_coords, align_corners=False)
    point_uncertainties = uncertainty_func(point_logits)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(point_uncertainties[:, 0, :], k=num_uncertain, dim=1)[1]
    shift = num_sampled * torch.arange(num_boxes, dtype=torch.long, device=coarse_logits.device)
    idx = idx + shift[:, None]
    point_coords = point_coords.view(-1, 2)[idx.view(-1), :].view(num_boxes, num_uncertain, 2)
    if num_random > 0:
        extra = torch.rand(num_boxes, num_random, 2, device=coarse_logits.device)
        point_coords = torch.cat([point_coords, extra], dim=1)
    return point_coords
