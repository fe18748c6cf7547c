"""Containers passed between the data pipeline, the model and the evaluators, and the mask
conversions they share.

Shape shorthand: N instances, H, W image size.

``Instances`` follows detectron2's interface (``image_size``, field access by attribute,
``len``, ``to``, indexing), so code written against detectron2 reads the same here.

Mask conversions (one home for each):

* boxes: :func:`masks_to_boxes` (Tensor, ``(x0, y0, x1, y1)`` with exclusive ``x1, y1``, as
  detectron2's ``BitMasks.get_bounding_boxes``; torchvision's ``masks_to_boxes`` has inclusive
  ends), :func:`masks_to_xywh` (Tensor, COCO ``(x, y, w, h)``) and :func:`mask_bbox` (one numpy
  mask, COCO ``bbox`` as ints);
* COCO masks: :func:`encode_rle` (compressed RLE) and :func:`decode_segmentation` (polygons,
  uncompressed or compressed RLE);
* COCO panoptic PNG colours: :func:`rgb2id` and :func:`id2rgb` (``id = R + 256 G + 256^2 B``).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_util
from torch import Tensor
from torchvision.ops import box_convert

__all__ = [
    "Instances",
    "decode_segmentation",
    "encode_rle",
    "id2rgb",
    "mask_bbox",
    "masks_to_boxes",
    "masks_to_xywh",
    "rgb2id",
]


class Instances:
    """A set of N instances of one image, each field a sequence of length N.

    Typical fields: ``gt_classes`` Tensor[N] int64, ``gt_masks`` Tensor[N, H, W] bool,
    ``gt_boxes`` Tensor[N, 4] float (x0, y0, x1, y1); on predictions ``pred_classes``,
    ``pred_masks``, ``scores``, ``pred_boxes``, ``query_index``.
    """

    def __init__(self, image_size: tuple[int, int], **fields: Any) -> None:
        self._image_size = (int(image_size[0]), int(image_size[1]))
        self._fields: dict[str, Any] = {}
        for name, value in fields.items():
            self.set(name, value)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the image the instances belong to."""
        return self._image_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails; "_fields" itself is missing during unpickling.
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._fields:
            raise AttributeError(f"Instances has no field '{name}'; fields: {list(self._fields)}")
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        """Set a field; its length must equal that of the existing fields."""
        if self._fields:
            n = len(self)
            if len(value) != n:
                raise ValueError(f"field '{name}' has length {len(value)}, expected {n}")
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def get(self, name: str) -> Any:
        return self._fields[name]

    def remove(self, name: str) -> None:
        del self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> Instances:
        """Move every tensor field (``Tensor.to`` arguments)."""
        out = Instances(self._image_size)
        for name, value in self._fields.items():
            out.set(name, value.to(*args, **kwargs) if hasattr(value, "to") else value)
        return out

    def __getitem__(self, item: int | slice | torch.Tensor) -> Instances:
        if isinstance(item, int):
            if item >= len(self) or item < -len(self):
                raise IndexError("Instances index out of range")
            item = slice(item, item + 1 if item != -1 else None)
        out = Instances(self._image_size)
        for name, value in self._fields.items():
            out.set(name, value[item])
        return out

    def __len__(self) -> int:
        for value in self._fields.values():
            return len(value)
        return 0

    def __repr__(self) -> str:
        fields = ", ".join(self._fields)
        size = self._image_size
        return f"Instances(num_instances={len(self)}, image_size={size}, fields=[{fields}])"


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of binary masks.

    Args:
        masks: Tensor[N, H, W] bool (or 0/1 integers).

    Returns:
        float32 Tensor[N, 4] ``(x0, y0, x1, y1)``: first and one-past-last column and row of each
        mask (zeros for an empty mask), on the device of ``masks``.
    """
    n, h, w = masks.shape
    rows, cols = masks.any(2), masks.any(1)  # N x H, N x W
    x0 = cols.float().argmax(1)
    x1 = w - cols.flip(1).float().argmax(1)
    y0 = rows.float().argmax(1)
    y1 = h - rows.flip(1).float().argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return boxes * cols.any(1, keepdim=True)


def masks_to_xywh(masks: Tensor) -> Tensor:
    """Tensor[N, H, W] bool -> float32 Tensor[N, 4] COCO ``(x, y, w, h)`` tight boxes (zeros for an
    empty mask), on the device of ``masks``."""
    return box_convert(masks_to_boxes(masks), "xyxy", "xywh")


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """bool array[H, W] -> COCO ``bbox`` ``(x, y, w, h)`` in pixels (``(0, 0, 0, 0)`` if empty)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return 0, 0, 0, 0
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0]) + 1, int(rows[-1] - rows[0]) + 1


# Pixels from which encode_rle finds the runs in the mask's bounding columns itself instead of
# running pycocotools' encoder over the whole mask (faster for smaller masks).
_RLE_STRIP_MIN_PIXELS = 1 << 16


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """bool array[H, W] -> COCO compressed RLE ``{"size": [H, W], "counts": str}`` (JSON-ready).

    The RLE of ``pycocotools.mask.encode`` of ``mask.astype(np.uint8)`` (column-major order, a
    new run at every change of value). From 2^16 pixels the runs are found in the mask's bounding
    columns only: the columns left and right of them hold zeros and only lengthen the first and
    last runs, so a small mask in a large image costs little.
    """
    pixels = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    height, width = pixels.shape
    if pixels.size < _RLE_STRIP_MIN_PIXELS:
        rle = mask_util.encode(np.asfortranarray(pixels))
        return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}
    pixels = np.ascontiguousarray(pixels)
    x, _, w, _ = cv2.boundingRect(pixels)
    if w == 0:  # nothing but zeros: one run
        counts = [height * width]
    else:
        # Columns x .. x + w - 1 in column-major order, uint8 [w * H]; zeros around them.
        strip = cv2.transpose(pixels[:, x : x + w]).reshape(-1)
        inner = np.flatnonzero(strip[1:] != strip[:-1]) + 1
        # Run boundaries in the image: 0, the value changes, H * W. A change at the strip's
        # start or end if a nonzero value meets the zeros there (not at the image's end).
        starts = [0, x * height] if strip[0] else [0]
        end = (x + w) * height
        ends = [end, height * width] if strip[-1] and end < height * width else [height * width]
        bounds = np.concatenate([starts, inner + x * height, ends])
        counts = (bounds[1:] - bounds[:-1]).tolist()
    rle = mask_util.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO ``segmentation`` -> bool array[H, W].

    Args:
        segmentation: polygons (a list of ``[x0, y0, x1, y1, ...]``, merged into one mask; an
            empty list is an empty mask), uncompressed RLE (``counts`` a list) or compressed RLE
            (``counts`` bytes or str).
        height, width: the image size.

    Raises:
        ValueError: another type, or an RLE of another size.
    """
    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), dtype=bool)
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        counts = segmentation["counts"]
        if isinstance(counts, list):
            rle = mask_util.frPyObjects(segmentation, height, width)
        else:
            rle = dict(segmentation, counts=counts.encode() if isinstance(counts, str) else counts)
    else:
        raise ValueError(f"unsupported COCO segmentation of type {type(segmentation).__name__}")
    mask = mask_util.decode(rle)
    if mask.shape != (height, width):
        raise ValueError(f"segmentation decodes to {mask.shape}, image is {(height, width)}")
    return mask.astype(bool)


def rgb2id(color: np.ndarray, dtype: type = np.int64) -> np.ndarray:
    """uint8 array[H, W, 3] COCO panoptic PNG -> array[H, W] of ``dtype`` segment ids
    (``R + 256 G + 256^2 B``; int32 holds every id, int64 also their products with 256^3)."""
    if (
        color.dtype == np.uint8
        and color.ndim == 3
        and color.shape[2] == 3
        and color.size
        and np.dtype(dtype).itemsize >= 4
    ):
        # The three bytes plus a zero byte, read as one little-endian uint32 per pixel.
        packed = cv2.cvtColor(np.ascontiguousarray(color), cv2.COLOR_RGB2RGBA)
        packed[..., 3] = 0
        return packed.view("<u4")[..., 0].astype(dtype)
    color = color.astype(dtype)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """int array[H, W] segment ids (below 256^3) -> uint8 array[H, W, 3] COCO panoptic PNG.

    The three low bytes of each id (``(id % 256, id // 256 % 256, id // 256^2 % 256)`` for any
    integer id; other numbers are truncated to integers first)."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        ids = ids.astype(np.int64)
    if not ids.size:
        return np.zeros((*ids.shape, 3), dtype=np.uint8)
    # The low four bytes of each id as one row of RGBA pixels; OpenCV drops the fourth.
    rgba = ids.astype("<i4", copy=False).reshape(1, -1).view(np.uint8).reshape(1, -1, 4)
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB).reshape(*ids.shape, 3)
