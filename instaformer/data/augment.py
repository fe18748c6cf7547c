"""Image + panoptic-id-map augmentations (torchvision.transforms.v2).

Shape shorthand: H, W image size; S the large-scale-jitter output side.

The transforms act jointly on the image (``tv_tensors.Image`` uint8[3, H, W]) and the panoptic
segment-id map (``tv_tensors.Mask`` int64[1, H, W], resized with nearest neighbour, padded with
0 = unlabelled), so every instance mask derived from the id map afterwards is consistent with the
image. Instances cropped away simply vanish from the id map; the mapper drops them.
"""

from __future__ import annotations

from typing import Any

from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["build_lsj_augmentation", "build_test_resize"]

_PAD_IMAGE = 128  # grey, as Mask2Former's fixed-size crop


def _flip(random_flip: str) -> list[Any]:
    if random_flip == "horizontal":
        return [v2.RandomHorizontalFlip(p=0.5)]
    if random_flip == "vertical":
        return [v2.RandomVerticalFlip(p=0.5)]
    if random_flip == "none":
        return []
    raise ValueError(
        f"INPUT.RANDOM_FLIP must be 'horizontal', 'vertical' or 'none', got {random_flip!r}"
    )


def build_lsj_augmentation(
    *, image_size: int, min_scale: float, max_scale: float, random_flip: str
) -> v2.Compose:
    """Training large-scale jitter: random flip; resize so the image fits in an
    ``S * scale`` square (aspect kept, ``scale`` uniform in ``[min_scale, max_scale]``); random
    ``S x S`` crop, padding (image 128, ids 0) where the resized image is smaller than ``S``.

    Args:
        image_size: ``S`` in pixels.
    """
    if image_size <= 0 or not 0 < min_scale <= max_scale:
        raise ValueError(
            f"invalid LSJ parameters: IMAGE_SIZE {image_size}, MIN_SCALE {min_scale}, "
            f"MAX_SCALE {max_scale}"
        )
    return v2.Compose(
        [
            *_flip(random_flip),
            v2.ScaleJitter((image_size, image_size), scale_range=(min_scale, max_scale)),
            v2.RandomCrop(
                (image_size, image_size),
                pad_if_needed=True,
                fill={tv_tensors.Image: _PAD_IMAGE, tv_tensors.Mask: 0},
            ),
        ]
    )


def build_test_resize(*, min_size: int, max_size: int) -> v2.Compose:
    """Test-time resize: shortest edge ``min_size``, longest edge at most ``max_size``."""
    return v2.Compose([v2.Resize(min_size, max_size=max_size)])
