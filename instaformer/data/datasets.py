"""Registration and loading of InstaOrder Panoptic (InstaFormer) and InstaOrder (InstaOrderNet).

Layout under the dataset root (``$DETECTRON2_DATASETS``, default ``datasets``; see
``datasets/README.md``)::

    coco/{train,val}2017/*.jpg                  COCO images
    coco/panoptic_{train,val}2017/*.png         COCO panoptic PNGs
    coco/annotations/InstaOrderPanoptic_{train,val}2017.json
    coco/annotations/InstaOrder_{train,val}2017.json
    coco/annotations/instances_{train,val}2017.json

The root of the built-in datasets is read when a dataset is loaded (or a metadata path is read),
not at import, so setting ``DETECTRON2_DATASETS`` after importing works.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from instaformer.data.duplicates import check_instaorder_duplicates, check_panoptic_duplicates
from instaformer.data.io import DataError
from instaformer.data.relations import check_record_types
from mask2former.data.catalog import DatasetCatalog, Deferred, MetadataCatalog
from mask2former.data.coco_categories import coco_panoptic_metadata

__all__ = [
    "check_instaorder_panoptic_record",
    "datasets_root",
    "load_instaorder_json",
    "load_instaorder_panoptic_json",
    "register_instaorder",
    "register_instaorder_panoptic",
    "register_all_instaorder",
]

_README = "datasets/README.md"


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS``, or ``datasets`` when unset."""
    return os.environ.get("DETECTRON2_DATASETS", "datasets")


def _require(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{what} not found: {path}. Set DETECTRON2_DATASETS to the dataset root and prepare "
            f"the files as described in {_README}."
        )


def load_json_object(path: str, what: str, *, list_keys: tuple[str, ...] = ("annotations",)) -> Any:
    """The JSON object in ``path`` (``what`` names it in errors), whose ``list_keys`` are lists.

    Raises:
        FileNotFoundError: no such file (the message points to datasets/README.md).
        DataError: not UTF-8, not JSON, not an object, or a ``list_keys`` entry missing.
    """
    _require(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except UnicodeDecodeError as e:
        raise DataError(f"{what} {path} is not UTF-8 text: {e}") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{what} {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise DataError(f"{what} {path} must hold a JSON object, got a {type(data).__name__}")
    for key in list_keys:
        if not isinstance(data.get(key), list):
            found = "no" if key not in data else f"a {type(data[key]).__name__} as"
            raise DataError(f"{what} {path} has {found} top-level '{key}' (a list is expected)")
    return data


def _malformed(where: str, err: Exception) -> DataError:
    detail = f"missing key {err}" if isinstance(err, KeyError) else str(err)
    return DataError(f"{where}: malformed record ({type(err).__name__}: {detail})")


def load_instaorder_panoptic_json(
    json_file: str,
    image_dir: str,
    panoptic_dir: str,
    metadata: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Read an InstaOrder Panoptic file ([DS 5.3]) into dataset dicts.

    Args:
        metadata: the category maps ``thing_dataset_id_to_contiguous_id`` and
            ``stuff_dataset_id_to_contiguous_id`` (all classes); None = COCO panoptic's 133.
    Returns:
        one dict per annotation, in file order: ``file_name`` (image path: the ``file_name`` of
        the image entry, or the PNG stem + ``.jpg`` when ``images`` lacks it), ``image_id``,
        ``height``, ``width`` (from ``images``), ``pan_seg_file_name``, ``segments_info`` (each
        segment with ``category_id`` mapped to its contiguous id and ``isthing`` added), and
        ``instaorder`` (the record with ``pan_instance_ids``).
    Raises:
        FileNotFoundError: the JSON, or the first image / PNG, is missing (message names the
            path and points to datasets/README.md).
        DataError: an unknown category, ``pan_instance_ids`` inconsistent with
            ``instance_ids`` / ``segments_info``, or a repeated image id, order record, segment
            id or file name (:func:`~instaformer.data.duplicates.check_panoptic_duplicates`).
    """
    data = load_json_object(json_file, "InstaOrder Panoptic annotation file")
    check_panoptic_duplicates(data, json_file)
    meta = coco_panoptic_metadata() if metadata is None else metadata
    try:
        sizes = {img["id"]: (img["height"], img["width"]) for img in data.get("images", [])}
        names = {i["id"]: i["file_name"] for i in data.get("images", []) if "file_name" in i}
    except (KeyError, TypeError) as e:
        raise _malformed(f"{json_file}, 'images'", e) from e
    dicts = []
    for index, ann in enumerate(data["annotations"]):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        where = f"{json_file}, " + (f"image_id {image_id}" if image_id else f"annotation {index}")
        try:
            dicts.append(_panoptic_item(ann, where, image_dir, panoptic_dir, sizes, names, meta))
        except DataError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise _malformed(where, e) from e
    if dicts:
        _require(dicts[0]["file_name"], "image")
        _require(dicts[0]["pan_seg_file_name"], "panoptic PNG")
    return dicts


def _panoptic_item(
    ann: dict[str, Any],
    where: str,
    image_dir: str,
    panoptic_dir: str,
    sizes: dict[Any, tuple[int, int]],
    names: dict[Any, str],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """One dataset dict from one annotation of an InstaOrder Panoptic file (``names``: image file
    names by image id; ``meta``: the category maps, see :func:`load_instaorder_panoptic_json`)."""
    if not isinstance(ann, dict):
        raise DataError(f"{where}: annotation must be an object, got {type(ann).__name__}")
    if "instaorder" not in ann:
        raise DataError(
            f"{where}: annotation has no 'instaorder' record (not an InstaOrder "
            f"Panoptic file? see {_README})"
        )
    if not isinstance(ann.get("segments_info"), list) or not all(
        isinstance(seg, dict) for seg in ann["segments_info"]
    ):
        raise DataError(f"{where}: 'segments_info' must be a list of objects")
    thing_ids = meta["thing_dataset_id_to_contiguous_id"]
    all_ids = meta["stuff_dataset_id_to_contiguous_id"]
    segments = []
    for seg in ann["segments_info"]:
        if seg["category_id"] not in all_ids:
            raise DataError(
                f"{where}: segment {seg['id']} has unknown category_id {seg['category_id']}"
            )
        segments.append(
            dict(
                seg,
                category_id=all_ids[seg["category_id"]],
                isthing=seg["category_id"] in thing_ids,
            )
        )
    record = ann["instaorder"]
    check_record_types(record, where)
    check_instaorder_panoptic_record(record, {s["id"] for s in segments}, where)
    stem = os.path.splitext(ann["file_name"])[0]
    item = {
        "file_name": os.path.join(image_dir, names.get(ann["image_id"], stem + ".jpg")),
        "image_id": ann["image_id"],
        "pan_seg_file_name": os.path.join(panoptic_dir, ann["file_name"]),
        "segments_info": segments,
        "instaorder": record,
    }
    if ann["image_id"] in sizes:
        item["height"], item["width"] = sizes[ann["image_id"]]
    return item


def check_instaorder_panoptic_record(record: dict, segment_ids: set[int], where: str) -> None:
    for key in ("instance_ids", "occlusion", "depth", "pan_instance_ids"):
        if key not in record:
            raise DataError(f"{where}: instaorder record has no '{key}'")
    pan_ids = record["pan_instance_ids"]
    if len(pan_ids) != len(record["instance_ids"]):
        raise DataError(
            f"{where}: pan_instance_ids has {len(pan_ids)} entries but instance_ids has "
            f"{len(record['instance_ids'])}"
        )
    matched = [p for p in pan_ids if p != -1]
    if len(set(matched)) != len(matched):
        raise DataError(f"{where}: pan_instance_ids {pan_ids} matches a segment twice")
    missing = [p for p in matched if p not in segment_ids]
    if missing:
        raise DataError(
            f"{where}: pan_instance_ids refers to segment ids {missing} that are not "
            "in segments_info"
        )


def load_instaorder_json(
    instaorder_json: str, instances_json: str, image_dir: str
) -> list[dict[str, Any]]:
    """Read an InstaOrder file ([DS 2]) joined with COCO instances ([DS 3]).

    Returns:
        one dict per InstaOrder record, in file order: ``file_name``, ``image_id``, ``height``,
        ``width``, ``annotations`` (the COCO instance annotations of ``instance_ids``, in that
        order: ``id``, ``category_id``, ``bbox`` [x, y, w, h], ``segmentation``, ``iscrowd``,
        ``area``) and ``instaorder`` (the record without ``image_id``).
    Raises:
        FileNotFoundError: a JSON or the first image is missing.
        DataError: a record names an image or instance id absent from the instances file, or
            an id is repeated (:func:`~instaformer.data.duplicates.check_instaorder_duplicates`).
    """
    orders = load_json_object(instaorder_json, "InstaOrder annotation file")
    coco = load_json_object(
        instances_json, "COCO instances file", list_keys=("images", "annotations")
    )
    check_instaorder_duplicates(orders, instaorder_json, coco, instances_json)
    try:
        images = {img["id"]: img for img in coco["images"]}
        anns = {a["id"]: a for a in coco["annotations"]}
    except (KeyError, TypeError) as e:
        raise _malformed(instances_json, e) from e
    dicts = []
    for index, record in enumerate(orders["annotations"]):
        image_id = record.get("image_id") if isinstance(record, dict) else None
        where = f"{instaorder_json}, " + (
            f"image_id {image_id}" if image_id else f"annotation {index}"
        )
        try:
            dicts.append(_instaorder_item(record, where, images, anns, instances_json, image_dir))
        except DataError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise _malformed(where, e) from e
    if dicts:
        _require(dicts[0]["file_name"], "image")
    return dicts


def _instaorder_item(
    record: Any,
    where: str,
    images: dict[Any, dict],
    anns: dict[Any, dict],
    instances_json: str,
    image_dir: str,
) -> dict[str, Any]:
    """One dataset dict from one InstaOrder record joined with its COCO instances."""
    check_record_types(record, where)
    if record.get("image_id") not in images:
        raise DataError(f"{where}: image not in {instances_json}")
    missing = [i for i in record["instance_ids"] if i not in anns]
    if missing:
        raise DataError(f"{where}: instance ids {missing} not in {instances_json}")
    image = images[record["image_id"]]
    instances = []
    for i in record["instance_ids"]:
        a = anns[i]
        if a["image_id"] != record["image_id"]:
            raise DataError(f"{where}: instance {i} belongs to image {a['image_id']}")
        segmentation = a.get("segmentation")
        if not isinstance(segmentation, list | dict):
            raise DataError(
                f"{where}: instance {i} of {instances_json} has a 'segmentation' of type "
                f"{type(segmentation).__name__} ({segmentation!r:.40}); COCO polygons (a list) "
                "or RLE (an object) are expected"
            )
        keys = ("id", "category_id", "bbox", "segmentation", "iscrowd", "area")
        instances.append({k: a[k] for k in keys if k in a})
    return {
        "file_name": os.path.join(image_dir, image["file_name"]),
        "image_id": record["image_id"],
        "height": image["height"],
        "width": image["width"],
        "annotations": instances,
        "instaorder": {k: v for k, v in record.items() if k != "image_id"},
    }


SYNTHETIC_SUBDIR = "synthetic_instaorder"
"""Where the synthetic twin lives under the dataset root (``tools/make_synthetic_dataset.py``)."""


def _under(root: str | Callable[[], str] | None, *parts: str) -> Callable[[], str]:
    def path() -> str:
        base = datasets_root() if root is None else root() if callable(root) else root
        return os.path.join(base, *parts)

    return path


def _replace(name: str) -> None:
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def register_instaorder_panoptic(
    name: str, *, split: str, root: str | Callable[[], str] | None = None, replace: bool = False
) -> None:
    """Register an InstaOrder Panoptic split (InstaFormer) laid out under ``root``.

    Args:
        split: "train" or "val" (files ``*_{split}2017``).
        root: dataset root, or a function returning it; None reads ``$DETECTRON2_DATASETS``
            whenever the data is loaded.
        replace: drop an existing registration of ``name`` first.
    """
    if replace:
        _replace(name)
    image_dir = _under(root, "coco", f"{split}2017")
    panoptic_dir = _under(root, "coco", f"panoptic_{split}2017")
    json_file = _under(root, "coco", "annotations", f"InstaOrderPanoptic_{split}2017.json")
    DatasetCatalog.register(
        name, lambda: load_instaorder_panoptic_json(json_file(), image_dir(), panoptic_dir())
    )
    MetadataCatalog.get(name).set(
        **coco_panoptic_metadata(),
        evaluator_type="instaorder",
        image_root=Deferred(image_dir),
        panoptic_root=Deferred(panoptic_dir),
        panoptic_json=Deferred(json_file),
        json_file=Deferred(json_file),
        sem_seg_root=Deferred(_under(root, "coco", f"panoptic_semseg_{split}2017")),
    )


def register_instaorder(
    name: str, *, split: str, root: str | Callable[[], str] | None = None, replace: bool = False
) -> None:
    """Register an InstaOrder split (InstaOrderNet): InstaOrder JSON + COCO instances JSON."""
    if replace:
        _replace(name)
    image_dir = _under(root, "coco", f"{split}2017")
    order_json = _under(root, "coco", "annotations", f"InstaOrder_{split}2017.json")
    instances_json = _under(root, "coco", "annotations", f"instances_{split}2017.json")
    DatasetCatalog.register(
        name, lambda: load_instaorder_json(order_json(), instances_json(), image_dir())
    )
    meta = coco_panoptic_metadata()
    MetadataCatalog.get(name).set(
        thing_classes=meta["thing_classes"],
        thing_colors=meta["thing_colors"],
        thing_dataset_id_to_contiguous_id=meta["thing_dataset_id_to_contiguous_id"],
        evaluator_type="instaorder",
        image_root=Deferred(image_dir),
        json_file=Deferred(order_json),
        instances_json=Deferred(instances_json),
    )


def _synthetic_root() -> str:
    return os.path.join(datasets_root(), SYNTHETIC_SUBDIR)


def register_all_instaorder() -> None:
    """Register under ``$DETECTRON2_DATASETS`` (read when the data is loaded; idempotent):
    ``instaorder_2017_{train,val}_panoptic`` and ``instaorder_2017_{train,val}``, and the
    synthetic twin in its ``synthetic_instaorder/`` folder as ``synthetic_instaorder_{train,val}``
    and ``synthetic_instaorder_{train,val}_instances``."""
    for split in ("train", "val"):
        names = {
            f"instaorder_2017_{split}_panoptic": (register_instaorder_panoptic, None),
            f"instaorder_2017_{split}": (register_instaorder, None),
            f"synthetic_instaorder_{split}": (register_instaorder_panoptic, _synthetic_root),
            f"synthetic_instaorder_{split}_instances": (register_instaorder, _synthetic_root),
        }
        for name, (register, root) in names.items():
            if name not in DatasetCatalog:
                register(name, split=split, root=root)
