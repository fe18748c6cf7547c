"""Monocular-depth ordering baseline (docs/reference.md [ION 13]) on synthetic depth maps."""

from __future__ import annotations

import pytest
import torch

from instaformer.instaordernet.depth_baseline import (
    MonocularDepthOrder,
    depth_order_from_values,
    instance_depths,
)
from mask2former.structures import Instances


def _scene():
    """A 40 x 60 depth map with three boxes at depths 2, 5 and 5 (+ a few far outliers)."""
    depth = torch.full((40, 60), 50.0)
    masks = torch.zeros(3, 40, 60, dtype=torch.bool)
    for k, (x0, value) in enumerate([(0, 2.0), (20, 5.0), (40, 5.0)]):
        masks[k, 10:30, x0 : x0 + 20] = True
        depth[10:30, x0 : x0 + 20] = value
    depth[10, 0:2] = 1000.0  # outliers inside instance 0: clipped away by the percentiles
    depth[11, 0:2] = 1000.0
    return depth, masks


def test_median_order_with_equal_depth():
    depth, masks = _scene()
    predictor = MonocularDepthOrder(lambda image: depth)
    out = predictor.predict(torch.zeros(3, 40, 60), masks)
    assert out["instance_depth"].tolist() == [2.0, 5.0, 5.0]
    assert out["depth"].tolist() == [[-1, 1, 1], [0, -1, 2], [0, 2, -1]]


def test_mean_is_robust_only_with_clipping():
    depth, masks = _scene()
    depth = depth.clone()
    depth[10:30, 0:20] = torch.linspace(1.0, 3.0, 400).reshape(20, 20)
    depth[10, 0] = 1000.0
    clipped = instance_depths(depth, masks, statistic="mean")
    raw = instance_depths(depth, masks, statistic="mean", clip_percentiles=None)
    assert clipped[0] < 3.0 < raw[0]
    median = instance_depths(depth, masks)
    assert median[0] == pytest.approx(torch.quantile(depth[masks[0]], 0.5).item(), abs=1e-5)


def test_disparity_tolerance_resize_and_empty_masks():
    depth, masks = _scene()
    depth = depth.clone()
    depth[10:30, 40:60] = 5.2  # instance 2 slightly farther than instance 1
    disparity = 1.0 / depth
    predictor = MonocularDepthOrder(lambda image: disparity, disparity=True)
    assert predictor.predict(torch.zeros(3, 40, 60), masks)["depth"][1, 2].item() == 1
    tolerant = MonocularDepthOrder(lambda image: disparity, disparity=True, tolerance=0.5)
    assert tolerant.predict(torch.zeros(3, 40, 60), masks)["depth"][1, 2].item() == 2
    # A half-resolution map: masks are resized to it (nearest).
    small = depth[::2, ::2].contiguous()
    out = MonocularDepthOrder(lambda image: small).predict(torch.zeros(3, 40, 60), masks)
    assert out["depth"][0].tolist() == [-1, 1, 1]
    # An empty mask has no depth: its pairs are -1.
    masks = torch.cat([masks, torch.zeros(1, 40, 60, dtype=torch.bool)])
    out = MonocularDepthOrder(lambda image: depth).predict(torch.zeros(3, 40, 60), masks)
    assert out["depth"][3].tolist() == [-1, -1, -1, -1]
    assert out["depth"][:, 3].tolist() == [-1, -1, -1, -1]


def test_forward_over_mapper_dicts_and_bad_input():
    depth, masks = _scene()
    predictor = MonocularDepthOrder(lambda image: depth)
    inputs = [{"image": torch.zeros(3, 40, 60), "instances": Instances((40, 60), gt_masks=masks)}]
    (out,) = predictor(inputs)
    assert out["depth"].tolist() == [[-1, 1, 1], [0, -1, 2], [0, 2, -1]]
    with pytest.raises(ValueError, match="tolerance"):
        depth_order_from_values(torch.zeros(2), tolerance=-1.0)
    with pytest.raises(ValueError, match="statistic"):
        instance_depths(depth, masks, statistic="mode")
    with pytest.raises(TypeError, match="callable"):
        MonocularDepthOrder(depth)
