"""Image + panoptic-id-map augmentations (torchvision.transforms.v2).

Shape shorthand: H, W image size; S the large-scale-jitter output side.

The transforms act jointly on the image (``tv_tensors.Image`` uint8[3, H, W]) and the panoptic
segment-id map (``tv_tensors.Mask`` int64[1, H, W], resized with nearest neighbour, padded with
0 = unlabelled), so every instance mask derived from the id map afterwards is consistent with the
image. Instances cropped away simply vanish from the id map; the mapper drops them.

The test-time resize is detectron2's ``ResizeShortestEdge`` (the convention of the reference's
evaluation and demo): :func:`shortest_edge_size` gives the size, rounded half up, and
:func:`resize_image` resizes with PIL (bilinear for images, nearest for id maps). The test mapper
and the ``Predictor`` both call them, so the demo and evaluation feed the model the same input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = [
    "ShortestEdgeResize",
    "build_lsj_augmentation",
    "build_test_resize",
    "resize_image",
    "shortest_edge_size",
]

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


def shortest_edge_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Size ``(h, w)`` of the test-time resize of an ``height`` x ``width`` image.

    The short side becomes ``min_size``, unless the long side would then exceed ``max_size``, in
    which case the long side becomes ``max_size``; both sides are rounded half up (detectron2's
    ``ResizeShortestEdge.get_output_shape``: 480x640 -> 800x1067 with 800/1333). ``min_size``
    0 keeps the size; ``max_size`` 0 sets no cap.
    """
    if min_size <= 0:
        return height, width
    scale = min_size / min(height, width)
    if height < width:
        new_h, new_w = float(min_size), scale * width
    else:
        new_h, new_w = scale * height, float(min_size)
    if max_size > 0 and max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_image(image: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize an array ``[H, W, C]`` uint8 (or ``[H, W]`` int32 ids) to ``size = (h, w)`` with
    PIL: bilinear, or nearest neighbour with ``nearest`` (id maps), as detectron2's
    ``ResizeTransform``. Returns the input itself when the size is unchanged."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    method = Image.NEAREST if nearest else Image.BILINEAR
    return np.array(Image.fromarray(image).resize((size[1], size[0]), method))


class ShortestEdgeResize:
    """Test-time resize of an image and its id map (:func:`shortest_edge_size`).

    Called as the mapper's augmentation: ``(tv_tensors.Image uint8[3, H, W], tv_tensors.Mask
    int[1, H, W]) -> (Tensor uint8[3, h, w], Tensor int[1, h, w])``.
    """

    def __init__(self, *, min_size: int, max_size: int) -> None:
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, image: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = shortest_edge_size(*image.shape[-2:], self.min_size, self.max_size)
        rgb = resize_image(image.permute(1, 2, 0).numpy(), size)  # 3 x H x W -> H x W x 3
        id_map = resize_image(ids[0].numpy().astype(np.int32), size, nearest=True)
        image_out = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
        ids_out = torch.from_numpy(np.ascontiguousarray(id_map)).to(ids.dtype)[None]
        return image_out, ids_out


def build_test_resize(*, min_size: int, max_size: int) -> ShortestEdgeResize:
    """Test-time resize: shortest edge ``min_size``, longest edge at most ``max_size``."""
    return ShortestEdgeResize(min_size=min_size, max_size=max_size)
