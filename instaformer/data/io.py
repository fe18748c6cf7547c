"""Reading images and COCO panoptic PNGs with errors that name the file at fault.

Shape shorthand: H, W image size.

One reading path serves every entry point (dataset mappers, ``Predictor``, demo): files go
through :func:`read_image`, in-memory PIL images and arrays through :func:`image_to_rgb`. The
rules, identical everywhere:

* 8-bit grayscale, bilevel, palette, CMYK and YCbCr images are converted to RGB and an alpha
  channel is dropped (each logged once per mode); EXIF orientation is applied (as detectron2's
  ``read_image``).
* 16-bit integer images (PNG/TIFF ``I;16``, ``uint16`` arrays) are scaled from 0-65535 to 0-255
  (``round(v / 257)``); PIL already keeps the high byte of 16-bit-per-channel RGB files.
* Floating-point and 32-bit integer images are refused: their value range is not defined.
* Images over :data:`MAX_IMAGE_PIXELS` pixels or with a side over :data:`MAX_IMAGE_SIDE` are
  refused from the file header, before the pixels are decoded.
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mask2former.structures import rgb2id

__all__ = [
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "DataError",
    "ImageError",
    "check_image_size",
    "image_to_rgb",
    "read_image",
    "read_panoptic_ids",
]

logger = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 120_000_000
"""Largest image accepted, in pixels: above the 102-megapixel medium-format cameras, below
PIL's own decompression-bomb refusal (179 megapixels). Its RGB decode alone takes 360 MB."""
MAX_IMAGE_SIDE = 20_000
"""Longest image side accepted, in pixels."""

# Modes converted to RGB without loss of meaning: grayscale and palette images occur in COCO.
_CONVERTIBLE = {
    "1": "bilevel",
    "L": "grayscale",
    "P": "palette",
    "LA": "grayscale+alpha",
    "PA": "palette+alpha",
    "RGBA": "RGBA",
    "RGBX": "RGBX",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_warned_modes: set[str] = set()


class DataError(ValueError):
    """A dataset file or record is unusable; the message names the file and the record."""


class ImageError(DataError):
    """An image file or array that cannot be read faithfully (unreadable, unsupported pixel
    type, too large); the message names the image."""


def check_image_size(width: int, height: int, source: str) -> None:
    """Refuse an image of ``width`` x ``height`` pixels over the limits.

    Raises:
        ImageError: more than :data:`MAX_IMAGE_PIXELS` pixels or a side over
            :data:`MAX_IMAGE_SIDE`; the message names ``source`` and the limits.
    """
    if width * height > MAX_IMAGE_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
        raise ImageError(
            f"image {source} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels): "
            f"over the limit of {MAX_IMAGE_PIXELS / 1e6:g} megapixels and {MAX_IMAGE_SIDE} "
            "pixels per side; downscale it first"
        )


def _open(path: str, what: str) -> Image.Image:
    """Open ``path`` lazily (header only) and check its size."""
    try:
        with warnings.catch_warnings():  # our own limit applies, below PIL's error threshold
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError as e:
        raise DataError(f"{what} not found: {path}") from e
    except Image.DecompressionBombError as e:
        raise ImageError(
            f"{what} {path} is over the limit of {MAX_IMAGE_PIXELS / 1e6:g} megapixels "
            f"and {MAX_IMAGE_SIDE} pixels per side ({e}); downscale it first"
        ) from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"cannot decode {what} {path} (corrupt or truncated file): {e}") from e
    check_image_size(image.width, image.height, path)
    return image


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """uint16 array -> uint8 array, 0-65535 scaled to 0-255 with rounding."""
    return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _pil_to_rgb(image: Image.Image, source: str) -> np.ndarray:
    """Decode a PIL image to uint8 array[H, W, 3] RGB under the module's rules."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "I" and image.format == "PNG":  # PNG has no 32-bit samples: a 16-bit grey PNG
        mode = "I;16"
    if mode in _SIXTEEN_BIT:
        grey = _to_uint8(np.asarray(image))
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode != "RGB":
        if mode not in _CONVERTIBLE:
            raise ImageError(
                f"image {source} has pixel mode '{mode}' (32-bit integer or floating point): its "
                "value range is undefined; save it as an 8-bit (or 16-bit) grayscale or colour "
                "image"
            )
        if mode not in _warned_modes:
            _warned_modes.add(mode)
            logger.warning("Converting %s image(s) to RGB (first: %s)", _CONVERTIBLE[mode], source)
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def image_to_rgb(image: Image.Image | np.ndarray, source: str = "array") -> np.ndarray:
    """An in-memory image -> uint8 array[H, W, 3] RGB, under the same rules as files.

    Args:
        image: a PIL image, or an array ``[H, W]`` (grey), ``[H, W, 3]`` (RGB) or
            ``[H, W, 4]`` (RGBA, alpha dropped) of dtype uint8 (0-255) or uint16 (0-65535,
            scaled to 0-255).
        source: how the image is named in error messages.
    Raises:
        ImageError: an unsupported dtype, shape or pixel mode, or an image over the limits.
    """
    if isinstance(image, Image.Image):
        check_image_size(image.width, image.height, source)
        return _pil_to_rgb(image, source)
    if image.dtype == np.uint16:
        image = _to_uint8(image)
    elif image.dtype != np.uint8:
        raise ImageError(
            f"image {source} has dtype {image.dtype}: image arrays must be uint8 (RGB, 0-255) or "
            "uint16 (0-65535); floating-point images have no agreed range, scale them first"
        )
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageError(
            f"image {source} has shape {image.shape}: expected [H, W], [H, W, 3] (RGB) or "
            "[H, W, 4] (RGBA)"
        )
    check_image_size(image.shape[1], image.shape[0], source)
    return np.ascontiguousarray(image[:, :, :3])


def read_image(path: str | os.PathLike, image_format: str = "RGB") -> np.ndarray:
    """Decode an image file under the module's rules (8-bit and 16-bit images, size limits).

    Args:
        image_format: "RGB" or "BGR", the channel order of the result.
    Returns:
        uint8 array[H, W, 3] in ``image_format`` channel order.
    Raises:
        DataError: missing, corrupt or truncated file; ``ImageError`` (a ``DataError``) for an
            unsupported pixel mode or an image over the size limits.
    """
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image format must be 'RGB' or 'BGR', got {image_format!r}")
    path = str(path)
    image = _open(path, "image")
    try:
        with image:
            array = _pil_to_rgb(image, path)
    except (OSError, SyntaxError) as e:
        raise DataError(f"cannot decode image {path} (corrupt or truncated file): {e}") from e
    if image_format == "BGR":
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array)


def read_panoptic_ids(path: str) -> np.ndarray:
    """Decode a COCO panoptic PNG into segment ids (``id = R + 256 G + 256^2 B``).

    Returns:
        int32 array[H, W] of segment ids (0 = unlabelled).
    Raises:
        DataError: missing or corrupt file, or not an 8-bit RGB PNG.
    """
    image = _open(path, "panoptic PNG")
    if image.mode != "RGB":
        raise DataError(
            f"panoptic PNG {path} has pixel mode '{image.mode}'; COCO panoptic PNGs are 8-bit RGB"
        )
    try:
        with image:
            rgb = np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError) as e:
        raise DataError(
            f"cannot decode panoptic PNG {path} (corrupt or truncated file): {e}"
        ) from e
    return rgb2id(rgb, np.int32)
