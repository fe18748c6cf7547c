"""Panoptic segment-id maps: reading COCO panoptic PNGs and indexing their segment ids.

Shape shorthand: H, W image size, S listed segments.

A COCO panoptic PNG stores segment id ``R + 256 G + 256^2 B`` per pixel, 0 (VOID) where no
segment is. The panoptic, instance and semantic evaluators all read the GT PNG of an image and
index its ids among the segments its annotation lists; the last few decoded maps are kept
(by the hash of the file's bytes) with their indices, so one image is decoded and indexed once.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from mask2former.structures import rgb2id

VOID = 0

# Decoded PNGs (and their segment indices) kept by read_panoptic_png and read_panoptic_index:
# the panoptic, instance and semantic evaluators read the GT PNG of an image one after the other.
_PNG_CACHE_SIZE = 4
# Segment ids below this are indexed with a lookup table (a model's segment numbers), larger
# ones (PNG colours) by binary search.
_LOOKUP_IDS = 1 << 16


@dataclass
class _DecodedPNG:
    ids: np.ndarray  # int64 [H, W], read-only
    # segment_index results by the bytes of their keys; arrays read-only
    indices: dict[bytes, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


_png_cache: OrderedDict[bytes, _DecodedPNG] = OrderedDict()


def _decode_rgb(data: bytes) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of an encoded image (OpenCV for 8-bit colour, else Pillow)."""
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is not None and pixels.dtype == np.uint8 and pixels.shape[2:] == (3,):
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # palette, alpha, 16-bit


def _read(path: str) -> _DecodedPNG:
    """The decoded PNG at ``path``; the last few are kept by the hash of their bytes (reading
    a file again costs far less than decoding it)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"panoptic PNG not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    key = hashlib.blake2b(data, digest_size=16).digest()
    png = _png_cache.get(key)
    if png is None:
        try:
            ids = rgb2id(_decode_rgb(data))
        except OSError as err:  # Pillow's UnidentifiedImageError included
            raise type(err)(f"panoptic PNG {path} cannot be decoded: {err}") from err
        ids.flags.writeable = False
        png = _png_cache[key] = _DecodedPNG(ids)
        if len(_png_cache) > _PNG_CACHE_SIZE:
            _png_cache.popitem(last=False)
    else:
        _png_cache.move_to_end(key)
    return png


def read_panoptic_png(path: str) -> np.ndarray:
    """int64 [H, W] segment ids of a COCO panoptic PNG, read-only (the evaluators of one image
    share one decoding)."""
    return _read(path).ids


def read_panoptic_index(
    path: str, listed: Iterable[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A COCO panoptic PNG's segment ids and their :func:`segment_index` over ``listed``.

    Returns:
        ``(ids, keys, index)`` as ``read_panoptic_png`` and ``segment_index`` give them,
        read-only; the index is kept with the decoded map, so the evaluators of one image that
        list the same segments share one.
    """
    png = _read(path)
    keys = _segment_keys(listed)
    found = png.indices.get(keys.tobytes())
    if found is None:
        index = _index_by_keys(png.ids, keys)
        keys.flags.writeable = index.flags.writeable = False
        found = png.indices[keys.tobytes()] = (keys, index)
    return png.ids, found[0], found[1]


def _segment_keys(listed: Iterable[int]) -> np.ndarray:
    """int64 [S] the sorted distinct ``listed`` ids and VOID."""
    return np.union1d(np.fromiter(listed, dtype=np.int64), [VOID])


def _index_by_keys(ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """int64 [H, W] position of each pixel's id in ``keys`` (sorted), -1 if absent."""
    if ids.dtype.kind not in "iu":
        ids = ids.astype(np.int64)
    low, high = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if low >= 0 and high < _LOOKUP_IDS:
        table = np.full(high + 1, -1, dtype=np.int64)
        present = np.flatnonzero((keys >= 0) & (keys <= high))
        table[keys[present]] = present
        return table[ids]
    index = np.searchsorted(keys, ids)
    np.minimum(index, len(keys) - 1, out=index)
    index[keys[index] != ids] = -1
    return index


def segment_index(ids: np.ndarray, listed: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the pixels' segment ids among the listed ids and VOID.

    Args:
        ids: int [H, W] segment ids.
        listed: segment ids (of ``segments_info``); VOID (0) is added.

    Returns:
        ``(keys, index)``: int64 [S] the sorted listed ids and VOID; int64 [H, W] with
        ``keys[index] == ids``, and -1 where the id is neither listed nor VOID.
    """
    keys = _segment_keys(listed)
    return keys, _index_by_keys(ids, keys)
