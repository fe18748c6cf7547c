"""Duplicate ids and file names in annotation files, refused right after parsing.

A repeated id does not fail anywhere later: the loaders and the evaluators index records by id,
so a second image with the same ``id`` silently replaces the first (or is scored twice), a
segment listed twice in one ``segments_info`` becomes two ground-truth instances of one mask,
and two order records for one image become two images with the same pixels. Every one of them
changes PQ, mIoU and the order metrics without an error. The loaders
(:func:`instaformer.data.datasets.load_instaorder_panoptic_json`, ``load_instaorder_json``,
hence the custom datasets, InstaOrderNet and ``tools/check_dataset.py``) and
``datasets/prepare_instaorder_panoptic.py`` call these checks on the parsed JSON; each raises
one :class:`DataError` naming the file, what is repeated and the ids (all kinds at once).

Cost: one pass over the records with C-level counting (``collections.Counter``); malformed
records (not an object, no id) are skipped here and named by the loaders' own checks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from instaformer.data.io import DataError

__all__ = ["check_instaorder_duplicates", "check_panoptic_duplicates", "repeated"]

_SHOWN = 5  # repeated values named in a message; the rest are counted


def repeated(values: Iterable[Any]) -> list[Any]:
    """The values that occur more than once, in order of first occurrence (unhashable values,
    which a malformed record may hold, are ignored)."""
    counts = Counter(v for v in values if isinstance(v, Hashable))
    return [value for value, count in counts.items() if count > 1]


def _listed(texts: Sequence[str]) -> str:
    """The first texts, comma-separated, and how many more."""
    more = f" and {len(texts) - _SHOWN} more" if len(texts) > _SHOWN else ""
    return ", ".join(texts[:_SHOWN]) + more


def _shown(values: Sequence[Any]) -> str:
    return _listed([repr(v) for v in values])


def _field(entries: Any, key: str) -> list[Any]:
    """``entry[key]`` of every object entry of a list that has the key (others skipped)."""
    if not isinstance(entries, list):
        return []
    return [e[key] for e in entries if isinstance(e, dict) and key in e]


def _faults_of(entries: Any, key: str, what: str) -> list[str]:
    values = repeated(_field(entries, key))
    return [f"{what} {_shown(values)}"] if values else []


def _segment_faults(annotations: Any) -> list[str]:
    """Segment ids listed more than once in one annotation's ``segments_info``."""
    if not isinstance(annotations, list):
        return []
    images: list[str] = []
    for ann in annotations:
        segments = ann.get("segments_info") if isinstance(ann, dict) else None
        if not isinstance(segments, list) or not segments:
            continue
        ids = [i for i in _field(segments, "id") if isinstance(i, Hashable)]
        if len(set(ids)) == len(ids):  # the common case: no Counter needed
            continue
        images.append(f"image_id {ann.get('image_id')!r} (segment ids {_shown(repeated(ids))})")
    if not images:
        return []
    return [f"segments listed twice in one segments_info: {_listed(images)}"]


def _raise(path: str, faults: list[str]) -> None:
    if faults:
        raise DataError(
            f"{path}: duplicates would be counted twice or silently replace each other: "
            + "; ".join(faults)
        )


def check_panoptic_duplicates(data: dict[str, Any], path: str) -> None:
    """Refuse repeats in a COCO panoptic / InstaOrder Panoptic object (parsed from ``path``).

    Checked: image ``id`` and ``file_name`` in ``images``; ``image_id`` (one annotation, hence
    one order record, per image) and PNG ``file_name`` in ``annotations``; segment ``id`` within
    each ``segments_info``.

    Raises:
        DataError: naming ``path``, each kind of repeat and the first repeated values.
    """
    images, annotations = data.get("images"), data.get("annotations")
    faults = _faults_of(images, "id", "image ids used by more than one entry of 'images':")
    faults += _faults_of(images, "file_name", "image file names used by more than one image:")
    faults += _faults_of(
        annotations, "image_id", "image ids with more than one annotation (order record):"
    )
    faults += _faults_of(
        annotations, "file_name", "panoptic PNG names used by more than one annotation:"
    )
    faults += _segment_faults(annotations)
    _raise(path, faults)


def check_instaorder_duplicates(
    orders: dict[str, Any], orders_path: str, instances: dict[str, Any], instances_path: str
) -> None:
    """Refuse repeats in an InstaOrder file and its COCO instances file (parsed from the paths).

    Checked: ``image_id`` of the order records (one per image); in the instances file, image
    ``id`` and ``file_name`` and annotation ``id``. (A record naming one instance twice is the
    preparation script's to skip, as the original did.)

    Raises:
        DataError: naming the file, each kind of repeat and the first repeated values.
    """
    faults = _faults_of(
        orders.get("annotations"), "image_id", "image ids with more than one order record:"
    )
    _raise(orders_path, faults)
    images = instances.get("images")
    faults = _faults_of(images, "id", "image ids used by more than one entry of 'images':")
    faults += _faults_of(images, "file_name", "image file names used by more than one image:")
    faults += _faults_of(
        instances.get("annotations"), "id", "annotation ids used by more than one instance:"
    )
    _raise(instances_path, faults)
