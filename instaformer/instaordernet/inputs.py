"""InstaOrderNet input construction for batches of instance pairs (docs/reference.md [ION 3]).

Shape shorthand: n instances, P ordered pairs ``(A, B)``, H x W image, S network input side.

Every builder returns ``Tensor[P, 5, S, S]``: mask A, mask B (binary floats), RGB normalised with
the ImageNet mean/std. Images are float RGB in [0, 1], ``Tensor[3, H, W]``.

* Resize mode (``d``, ``od``; S = 384): the whole image and every mask resized to S x S
  (aspect not kept), RGB bicubic, masks nearest; computed once per image, gathered per pair.
* Patch mode (``o``; S = 256): a square window around the pair's union box ([ION 3.1]), padded with
  0 outside the image, resized to S x S. ``enlarge`` reproduces the test-time crop of the
  reference (each box first replaced by a square of side ``max(sqrt(enlarge*w*h), 1.1w, 1.1h)``);
  ``enlarge=None`` crops as in training (no jitter).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from instaformer.vocabulary import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "enlarge_boxes",
    "normalize_rgb",
    "pair_windows",
    "patch_input",
    "patch_mode_inputs",
    "resize_mode_inputs",
]


def normalize_rgb(image: Tensor) -> Tensor:
    """Tensor[..., 3, H, W] RGB in [0, 1] -> ImageNet-standardised."""
    mean = image.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = image.new_tensor(IMAGENET_STD)[:, None, None]
    return (image - mean) / std


def resize_mode_inputs(image: Tensor, masks: Tensor, pairs: Tensor, size: int = 384) -> Tensor:
    """Resize-mode inputs of every pair.

    Args:
        image: Tensor[3, H, W] RGB in [0, 1].
        masks: Tensor[n, H, W] binary instance masks.
        pairs: Tensor[P, 2] int (A, B) instance indices.
        size: network input side S.

    Returns:
        Tensor[P, 5, S, S].
    """
    rgb = F.interpolate(image[None].float(), size=(size, size), mode="bicubic", align_corners=False)
    rgb = normalize_rgb(rgb[0])  # 3 x S x S
    small = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0]
    p = pairs.shape[0]
    return torch.cat(
        [small[pairs[:, 0], None], small[pairs[:, 1], None], rgb.expand(p, -1, -1, -1)], dim=1
    )


def enlarge_boxes(boxes: Tensor, factor: float) -> Tensor:
    """Tensor[n, 4] xywh -> squares about the same centres, side
    ``max(sqrt(factor*w*h), 1.1w, 1.1h)``, coordinates truncated toward zero (test-time crop)."""
    x, y, w, h = boxes.unbind(1)
    side = torch.maximum(torch.sqrt(factor * w * h), torch.maximum(1.1 * w, 1.1 * h))
    cx, cy = x + w / 2, y + h / 2
    return torch.stack([cx - side / 2, cy - side / 2, side, side], dim=1).trunc()


def pair_windows(boxes: Tensor, pairs: Tensor) -> Tensor:
    """Square window around each pair's union box ([ION 3.1] steps 2, 3, 5, no jitter).

    Args:
        boxes: Tensor[n, 4] float xywh boxes.
        pairs: Tensor[P, 2] int (A, B).

    Returns:
        Tensor[P, 3] int64 ``(x0, y0, side)``, truncated toward zero.
    """
    a, b = boxes[pairs[:, 0]], boxes[pairs[:, 1]]
    left = torch.minimum(a[:, 0], b[:, 0])
    top = torch.minimum(a[:, 1], b[:, 1])
    right = torch.maximum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    bottom = torch.maximum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    w, h = right - left, bottom - top
    side = torch.maximum(torch.sqrt(2 * w * h), torch.maximum(1.1 * w, 1.1 * h))
    cx, cy = left + w / 2, top + h / 2
    return torch.stack([cx - side / 2, cy - side / 2, side], dim=1).trunc().long()


def _crop(x: Tensor, x0: int, y0: int, side: int) -> Tensor:
    """Tensor[C, H, W] -> Tensor[C, side, side] window at (x0, y0), zero outside the image."""
    c, h, w = x.shape
    out = x.new_zeros(c, side, side)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = x[:, sy0:sy1, sx0:sx1]
    return out


def patch_input(image: Tensor, two_masks: Tensor, x0: int, y0: int, side: int, size: int) -> Tensor:
    """One patch-mode input: the square window ``(x0, y0, side)`` of both masks and the image
    (0 outside the image), resized to S x S (masks nearest, RGB bicubic), RGB standardised.

    Args:
        image: float Tensor[3, H, W] RGB in [0, 1].
        two_masks: float Tensor[2, H, W] binary masks of A and B.
        x0, y0, side: the window in image pixels (``side >= 1``).
        size: network input side S.

    Returns:
        Tensor[5, S, S]: mask A, mask B, normalised RGB.
    """
    two = F.interpolate(_crop(two_masks, x0, y0, side)[None], size=(size, size), mode="nearest")
    rgb = _crop(image, x0, y0, side)[None]
    rgb = F.interpolate(rgb, size=(size, size), mode="bicubic", align_corners=False)
    return torch.cat([two[0], normalize_rgb(rgb[0])], dim=0)


def patch_mode_inputs(
    image: Tensor,
    masks: Tensor,
    boxes: Tensor,
    pairs: Tensor,
    size: int = 256,
    enlarge: float | None = 3.0,
) -> Tensor:
    """Patch-mode inputs of every pair.

    Args:
        image: Tensor[3, H, W] RGB in [0, 1].
        masks: Tensor[n, H, W] binary instance masks.
        boxes: Tensor[n, 4] float xywh boxes of the instances (COCO ``bbox``).
        pairs: Tensor[P, 2] int (A, B).
        size: network input side S.
        enlarge: test-time box enlargement factor (released: 3), None for the training crop.

    Returns:
        Tensor[P, 5, S, S].
    """
    if enlarge is not None:
        boxes = enlarge_boxes(boxes.float(), enlarge)
    windows = pair_windows(boxes.float(), pairs).tolist()
    out = image.new_zeros(pairs.shape[0], 5, size, size, dtype=torch.float32)
    image = image.float()
    for k, ((a, b), (x0, y0, side)) in enumerate(zip(pairs.tolist(), windows, strict=True)):
        out[k] = patch_input(image, masks[[a, b]].float(), x0, y0, max(side, 1), size)
    return out
