"""Depth order from a monocular depth map: the "MiDaS" baseline of docs/reference.md [ION 13].

Shape shorthand: K instances, H, W image size, h, w depth-map size.

Any callable ``depth_fn(image) -> Tensor[h, w]`` supplies the map (a monocular depth network, a
sensor, a synthetic map in tests). Per instance, the map values inside its mask are clipped to
their own 5th-95th percentile range and summarised by the median (or the mean); the instance with
the smaller depth is closer. Two instances whose depths differ by at most ``tolerance`` are "same
depth" (the reference uses exact equality, ``tolerance = 0``).

Output in the project's matrix convention ([IF 0]): ``depth[i, j] = 1`` i closer than
j, ``0`` i farther, ``2`` same depth, ``-1`` on the diagonal and for pairs involving an instance
whose mask is empty (no depth can be read).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MonocularDepthOrder", "depth_order_from_values", "instance_depths"]

DepthFn = Callable[[torch.Tensor], torch.Tensor]


def instance_depths(
    depth_map: torch.Tensor,
    masks: torch.Tensor,
    *,
    statistic: str = "median",
    clip_percentiles: tuple[float, float] | None = (5.0, 95.0),
) -> torch.Tensor:
    """One depth value per instance.

    Args:
        depth_map: Tensor[h, w] float, larger = farther.
        masks: Tensor[K, H, W] bool/{0,1}; resized to ``h x w`` (nearest) if sizes differ.
        statistic: "median" (the reference's released choice; the mean of the two middle values
            for an even count) or "mean".
        clip_percentiles: clip each instance's values to its own percentile range (linear
            interpolation, in percent) before the statistic; None = no clipping.
    Returns:
        Tensor[K] float, NaN for an instance whose mask is empty at the map's size.
    """
    if depth_map.dim() != 2:
        raise ValueError(f"depth_map must be Tensor[h, w], got shape {tuple(depth_map.shape)}")
    if masks.dim() != 3:
        raise ValueError(f"masks must be Tensor[K, H, W], got shape {tuple(masks.shape)}")
    if statistic not in ("median", "mean"):
        raise ValueError(f"statistic must be 'median' or 'mean', got {statistic!r}")
    depth_map = depth_map.float()
    if masks.shape[-2:] != depth_map.shape:
        # K x H x W -> K x h x w, nearest neighbour as the reference resizes its masks.
        masks = F.interpolate(masks[None].float(), size=depth_map.shape, mode="nearest")[0]
    masks = masks.bool()
    values = torch.full((masks.shape[0],), float("nan"), device=depth_map.device)
    for k, mask in enumerate(masks):
        inside = depth_map[mask]
        if inside.numel() == 0:
            continue
        if clip_percentiles is not None:
            low, high = torch.quantile(inside, inside.new_tensor(clip_percentiles) / 100.0)
            inside = inside.clamp(low, high)
        values[k] = torch.quantile(inside, 0.5) if statistic == "median" else inside.mean()
    return values


def depth_order_from_values(values: torch.Tensor, *, tolerance: float = 0.0) -> torch.Tensor:
    """Pairwise depth order from per-instance depths.

    Args:
        values: Tensor[K] float, larger = farther; NaN = unknown.
        tolerance: ``|values[i] - values[j]| <= tolerance`` is "same depth".
    Returns:
        Tensor[K, K] int64: 1 = row closer than column, 0 = farther, 2 = same depth, -1 on the
        diagonal and wherever a value is NaN.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    diff = values[:, None] - values[None, :]  # K x K, < 0 where the row is closer
    depth = torch.where(diff < 0, 1, 0)
    depth = torch.where(diff.abs() <= tolerance, 2, depth)
    depth = torch.where(torch.isnan(diff), -1, depth)
    depth.fill_diagonal_(-1)
    return depth.long()


class MonocularDepthOrder(nn.Module):
    """Pluggable depth-order predictor built on any depth-map callable.

    Usable directly (``predictor.predict(image, masks)``) or as a model for
    :func:`mask2former.evaluation.evaluator.inference_on_dataset` over the InstaOrderNet test
    mapper's dicts (``input["image"]``, ``input["instances"].gt_masks``).
    """

    def __init__(
        self,
        depth_fn: DepthFn,
        *,
        disparity: bool = False,
        statistic: str = "median",
        clip_percentiles: tuple[float, float] | None = (5.0, 95.0),
        tolerance: float = 0.0,
    ) -> None:
        """
        Args:
            depth_fn: ``image Tensor[3, H, W] -> Tensor[h, w]``; depth (larger = farther), or
                disparity/inverse depth with ``disparity``.
            disparity: the map is a disparity; depth = ``1 / (disparity + 1e-6)`` (reference).
            statistic, clip_percentiles: see :func:`instance_depths`.
            tolerance: see :func:`depth_order_from_values`.
        """
        super().__init__()
        if not callable(depth_fn):
            raise TypeError(f"depth_fn must be callable, got {type(depth_fn)}")
        self.depth_fn = depth_fn
        self.disparity = disparity
        self.statistic = statistic
        self.clip_percentiles = clip_percentiles
        self.tolerance = tolerance

    def predict(self, image: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            image: Tensor[3, H, W], whatever ``depth_fn`` expects.
            masks: Tensor[K, H, W] bool.
        Returns:
            ``{"depth": Tensor[K, K] int64 (see module doc), "instance_depth": Tensor[K]}``.
        """
        depth_map = self.depth_fn(image)
        if self.disparity:
            depth_map = 1.0 / (depth_map.float() + 1e-6)
        values = instance_depths(
            depth_map, masks, statistic=self.statistic, clip_percentiles=self.clip_percentiles
        )
        return {
            "depth": depth_order_from_values(values, tolerance=self.tolerance),
            "instance_depth": values,
        }

    def forward(self, batched_inputs: Sequence[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        """Per input dict: ``{"depth": Tensor[K, K]}`` over ``input["instances"].gt_masks``."""
        return [self.predict(inp["image"], inp["instances"].gt_masks) for inp in batched_inputs]
