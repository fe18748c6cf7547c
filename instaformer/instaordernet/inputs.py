"""InstaOrderNet input construction for instance pairs (docs/reference.md [ION 3]).

Shape shorthand: K instances, P ordered pairs ``(A, B)``, H x W image, S network input side.

A network input is ``Tensor[5, S, S]`` float32: mask A, mask B (``{0., 1.}``), then RGB
standardised with the ImageNet mean and std.

Test time ([ION 3.4]): :class:`ResizeModeInputs` and :class:`PatchModeInputs` build, for any
batch of pairs, the original's inputs value for value, with OpenCV's ``resize`` called as the
original calls it. Images enter as ``Tensor[3, H, W]`` RGB uint8 (floats in [0, 1] are first
quantised to 8 bits, ``round(255 x)``: the original reads 8-bit files); masks as
``Tensor[K, H, W]`` (non-zero = inside).

* Resize mode (``d``, ``od``; S = 384): RGB ``image / 255`` in float64, OpenCV bicubic to S x S,
  standardised in float64, then cast to float32; masks OpenCV nearest neighbour (source index
  ``floor(x * (1 / (S / W)))`` in double precision). Done once per image, gathered per pair.
* Patch mode (``o``; S = 256): per pair a square window ``(x0, y0, side)`` computed in float64
  and truncated ([ION 3.1]), optionally from boxes enlarged first (``enlarge``, the test-time
  crop of the original), padded with 0 outside the image; the uint8 crop resized with OpenCV
  bicubic (so rounded and clipped to 0-255), the masks with OpenCV nearest; RGB ``/ 255`` and
  standardised in float32.

Training (the mapper's jittered crops) uses :func:`patch_input`: torch interpolation in float.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from instaformer.vocabulary import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "PatchModeInputs",
    "ResizeModeInputs",
    "enlarge_boxes",
    "normalize_rgb",
    "pair_windows",
    "patch_input",
    "to_uint8_hwc",
]


def normalize_rgb(image: Tensor) -> Tensor:
    """Tensor[..., 3, H, W] RGB in [0, 1] -> ImageNet-standardised (in the input's dtype)."""
    mean = image.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = image.new_tensor(IMAGENET_STD)[:, None, None]
    return (image - mean) / std


def to_uint8_hwc(image: Tensor) -> np.ndarray:
    """Tensor[3, H, W] RGB, uint8 or float in [0, 1] -> uint8 array[H, W, 3] on the CPU.

    Floats are quantised as ``round(255 x)`` clipped to 0-255, which gives back the 8-bit values
    of an image that was read as uint8 and divided by 255.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be Tensor[3, H, W], got shape {tuple(image.shape)}")
    if image.is_floating_point():
        image = (image.double() * 255.0).round().clamp(0, 255)
    elif image.dtype != torch.uint8:
        raise ValueError(f"image must be uint8 or floating point, got {image.dtype}")
    return np.ascontiguousarray(image.to("cpu", torch.uint8).permute(1, 2, 0).numpy())


def _uint8_masks(masks: Tensor) -> np.ndarray:
    """Tensor[K, H, W] -> uint8 array[K, H, W] in {0, 1} on the CPU."""
    return np.ascontiguousarray((masks != 0).to("cpu", torch.uint8).numpy())


class ResizeModeInputs:
    """Resize-mode inputs (``d``, ``od``) of one image's pairs (module docstring).

    The image and every mask are resized once, on construction; calling the object gathers the
    inputs of a batch of pairs on ``device``.
    """

    def __init__(
        self, image: Tensor, masks: Tensor, size: int = 384, device: torch.device | None = None
    ) -> None:
        """
        Args:
            image: Tensor[3, H, W] RGB, uint8 or float in [0, 1].
            masks: Tensor[K, H, W] instance masks.
            size: network input side S.
            device: where the inputs are returned (default: the CPU).
        """
        hwc = to_uint8_hwc(image)
        if masks.dim() != 3 or tuple(masks.shape[1:]) != hwc.shape[:2]:
            raise ValueError(
                f"masks must be Tensor[K, H, W] at the image size {hwc.shape[:2]}, "
                f"got shape {tuple(masks.shape)}"
            )
        dsize = (size, size)  # OpenCV takes (width, height)
        rgb = cv2.resize(hwc / 255.0, dsize, interpolation=cv2.INTER_CUBIC)  # S x S x 3 float64
        rgb = (rgb - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
        rgb = np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32)  # 3 x S x S
        small = [cv2.resize(m, dsize, interpolation=cv2.INTER_NEAREST) for m in _uint8_masks(masks)]
        small_masks = np.stack(small) if small else np.zeros((0, size, size), np.uint8)
        self.rgb = torch.from_numpy(rgb).to(device)  # 3 x S x S float32
        self.masks = torch.from_numpy(small_masks).to(device)  # K x S x S uint8

    def __call__(self, pairs: Tensor) -> Tensor:
        """Tensor[P, 2] int (A, B) -> Tensor[P, 5, S, S] float32."""
        pairs = pairs.to(self.masks.device)
        two = self.masks[pairs].float()  # P x 2 x S x S
        return torch.cat([two, self.rgb.expand(pairs.shape[0], -1, -1, -1)], dim=1)


def enlarge_boxes(boxes: Tensor, factor: float) -> Tensor:
    """Tensor[K, 4] xywh -> Tensor[K, 4] float64 squares about the same centres, side
    ``max(sqrt(w*h*factor), 1.1w, 1.1h)``, truncated toward zero (test-time crop, [ION 3.1]).
    Computed in float64 in the original's order of operations."""
    x, y, w, h = boxes.double().unbind(1)
    side = torch.maximum(torch.sqrt(w * h * factor), torch.maximum(w * 1.1, h * 1.1))
    cx, cy = x + w / 2.0, y + h / 2.0
    return torch.stack([cx - side / 2.0, cy - side / 2.0, side, side], dim=1).trunc()


def pair_windows(boxes: Tensor, pairs: Tensor) -> Tensor:
    """Square window around each pair's union box ([ION 3.1] steps 2, 3, 5, no jitter).

    Computed in float64 in the original's order of operations, then truncated toward zero.

    Args:
        boxes: Tensor[K, 4] xywh boxes.
        pairs: Tensor[P, 2] int (A, B).

    Returns:
        Tensor[P, 3] int64 ``(x0, y0, side)``.
    """
    boxes = boxes.double()
    a, b = boxes[pairs[:, 0]], boxes[pairs[:, 1]]
    left = torch.minimum(a[:, 0], b[:, 0])
    top = torch.minimum(a[:, 1], b[:, 1])
    w = torch.maximum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - left
    h = torch.maximum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - top
    side = torch.maximum(torch.sqrt(w * h * 2.0), torch.maximum(w * 1.1, h * 1.1))
    cx, cy = left + w / 2.0, top + h / 2.0
    return torch.stack([cx - side / 2.0, cy - side / 2.0, side], dim=1).trunc().long()


def _crop_array(
    x: np.ndarray, x0: int, y0: int, side: int, channels: list[int] | None = None
) -> np.ndarray:
    """array[H, W, C] -> array[side, side, C'] window at (x0, y0), 0 outside the image;
    ``channels`` selects C' of the C channels (default: all)."""
    h, w = x.shape[:2]
    depth = x.shape[2] if channels is None else len(channels)
    out = np.zeros((side, side, depth), dtype=x.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        window = x[sy0:sy1, sx0:sx1]
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = (
            window if channels is None else window[:, :, channels]
        )
    return out


class PatchModeInputs:
    """Patch-mode inputs (``o``) of one image's pairs (module docstring).

    Windows, crops and resizes run on the CPU per pair, as in the original; calling the object
    returns the inputs of a batch of pairs on ``device``.
    """

    def __init__(
        self,
        image: Tensor,
        masks: Tensor,
        boxes: Tensor,
        size: int = 256,
        enlarge: float | None = 3.0,
        device: torch.device | None = None,
    ) -> None:
        """
        Args:
            image: Tensor[3, H, W] RGB, uint8 or float in [0, 1].
            masks: Tensor[K, H, W] instance masks.
            boxes: Tensor[K, 4] xywh boxes (COCO ``bbox``; float64 keeps them exact).
            size: network input side S.
            enlarge: test-time box enlargement factor (the original's test crop: 3), None for
                the training crop without jitter.
            device: where the inputs are returned (default: the CPU).
        """
        self.rgb = to_uint8_hwc(image)  # H x W x 3
        if masks.dim() != 3 or tuple(masks.shape[1:]) != self.rgb.shape[:2]:
            raise ValueError(
                f"masks must be Tensor[K, H, W] at the image size {self.rgb.shape[:2]}, "
                f"got shape {tuple(masks.shape)}"
            )
        if boxes.shape != (masks.shape[0], 4):
            raise ValueError(f"boxes must be Tensor[K={masks.shape[0]}, 4], got {boxes.shape}")
        self.masks = _uint8_masks(masks).transpose(1, 2, 0)  # H x W x K
        boxes = boxes.detach().cpu().double()
        self.boxes = boxes if enlarge is None else enlarge_boxes(boxes, enlarge)
        self.size = int(size)
        self.device = device

    def __call__(self, pairs: Tensor) -> Tensor:
        """Tensor[P, 2] int (A, B) -> Tensor[P, 5, S, S] float32."""
        pairs = pairs.cpu()
        dsize = (self.size, self.size)
        rgb = np.empty((len(pairs), self.size, self.size, 3), dtype=np.uint8)
        two = np.empty((len(pairs), self.size, self.size, 2), dtype=np.uint8)
        windows = pair_windows(self.boxes, pairs).tolist()
        for k, ((a, b), (x0, y0, side)) in enumerate(zip(pairs.tolist(), windows, strict=True)):
            side = max(side, 1)
            crop = _crop_array(self.rgb, x0, y0, side)
            rgb[k] = cv2.resize(crop, dsize, interpolation=cv2.INTER_CUBIC)
            crop = _crop_array(self.masks, x0, y0, side, [a, b])
            two[k] = cv2.resize(crop, dsize, interpolation=cv2.INTER_NEAREST)
        x = normalize_rgb(torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0)
        masks = torch.from_numpy(two).permute(0, 3, 1, 2).float()
        return torch.cat([masks, x], dim=1).to(self.device)


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
    """One training patch-mode input: the square window ``(x0, y0, side)`` of both masks and the
    image (0 outside the image), resized to S x S with torch (masks nearest, RGB bicubic in
    float), RGB standardised.

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
