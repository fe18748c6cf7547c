"""Reading images and COCO panoptic PNGs with errors that name the file at fault.

Shape shorthand: H, W image size.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["DataError", "read_image", "read_panoptic_ids"]

logger = logging.getLogger(__name__)

# Modes converted to RGB without loss of meaning: grayscale and palette images occur in COCO.
_CONVERTIBLE = {
    "L": "grayscale",
    "P": "palette",
    "LA": "grayscale+alpha",
    "RGBA": "RGBA",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
}
_warned_modes: set[str] = set()


class DataError(ValueError):
    """A dataset file or record is unusable; the message names the file and the record."""


def _open(path: str, what: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError as e:
        raise DataError(f"{what} not found: {path}") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"cannot decode {what} {path} (corrupt or truncated file): {e}") from e
    return image


def read_image(path: str, image_format: str = "RGB") -> np.ndarray:
    """Decode an 8-bit image file.

    Grayscale, palette, CMYK and YCbCr images are converted to RGB and an alpha channel is
    dropped (each logged once per mode); 16-bit or floating-point images are refused, since no
    conversion to 8 bits is right for every dataset.

    Args:
        image_format: "RGB" or "BGR", the channel order of the result.
    Returns:
        uint8 array[H, W, 3] in ``image_format`` channel order.
    Raises:
        DataError: missing, corrupt or truncated file, or an unsupported pixel mode.
    """
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image format must be 'RGB' or 'BGR', got {image_format!r}")
    image = _open(path, "image")
    if image.mode != "RGB":
        if image.mode not in _CONVERTIBLE:
            raise DataError(
                f"image {path} has pixel mode '{image.mode}' (e.g. 16-bit or float); "
                "only 8-bit grayscale, palette or colour images are supported"
            )
        if image.mode not in _warned_modes:
            _warned_modes.add(image.mode)
            logger.warning(
                "Converting %s image(s) to RGB (first: %s)", _CONVERTIBLE[image.mode], path
            )
        image = image.convert("RGB")
    array = np.array(image, dtype=np.uint8)
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
    rgb = np.asarray(image, dtype=np.uint8)
    ids = rgb[:, :, 2].astype(np.int32) << 16
    ids |= rgb[:, :, 1].astype(np.int32) << 8
    ids |= rgb[:, :, 0]
    return ids
