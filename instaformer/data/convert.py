"""Convert the simple order-annotation format into InstaOrder Panoptic (docs/custom_data.md).

Shape shorthand: H, W image size; m instances of an image.

Input, one file per split (or a folder: ``categories.json`` holding ``{"categories": [...]}``
and one JSON per image, each one entry of ``images``, read in file-name order)::

    {"categories": [{"id": 1, "name": "mug", "isthing": 1, "color": [R, G, B]}, ...],
     "images": [{
        "file_name": "kitchen/0001.jpg",          # relative to the image folder
        "height": 480, "width": 640,              # optional: read from the image
        "image_id": 1,                            # optional: position in the list + 1
        "mask_file": "masks/0001.png",            # optional: PNG of instance ids (0 = none;
                                                  #   one channel, or RGB in the COCO panoptic
                                                  #   encoding), relative to the input's folder
        "instances": [                            # things and stuff regions, m in all
            {"category_id": 1, "mask_id": 3},                  # pixels == 3 in mask_file
            {"category_id": 5, "segmentation": {"size": [H, W], "counts": ...}},  # COCO RLE
            {"category_id": 2, "mask_file": "masks/0001_cup.png"},  # own binary PNG (> 0)
            {"category_id": 1, "mask_id": 7, "iscrowd": 1},    # crowd: never ordered
            {"category_id": 1, "mask_id": 8, "ordered": false}, # a thing without order labels
        ],
        "occlusion": [[0, 1], [1, 0]],            # [i, j]: instance i hides part of j
        "depth": [{"closer": 0, "farther": 1, "overlap": false, "count": 2},
                  {"equal": [0, 1]}]}]}

Indices in ``occlusion`` and ``depth`` are positions in ``instances``. The *ordered* instances
are the non-crowd things without ``"ordered": false``; orders may only name those. Between two
ordered instances, a pair absent from ``occlusion`` means "neither hides the other" and a pair
absent from ``depth`` has no depth label (ignored by the depth loss and metrics). ``overlap``
(default false) says whether the two depth extents overlap; ``count`` (default 2) is the number
of annotator votes, WHDR weight ``2 / count``.

Output: the InstaOrder Panoptic JSON (docs/reference.md [DS 5.3]; segment ids are 1..m per
image, the instance ids of the ``instaorder`` record are the segment ids) and one panoptic PNG
per image (``file_name`` with extension ``.png``, sub-folders kept) under the panoptic folder.
Outputs follow :mod:`mask2former.utils.outputs`: a ``file_name`` must be relative without
``..``; the panoptic folder is neither the image folder nor a mask folder; no output replaces an
input (the annotation file, an image, a mask) or a file the converter did not write; every name
is checked before the first file is written.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import numpy as np
from PIL import Image

from instaformer.data.custom import categories_metadata
from instaformer.data.io import DataError
from instaformer.data.relations import build_order_matrices
from mask2former.structures import decode_segmentation, id2rgb, mask_bbox, rgb2id
from mask2former.utils.outputs import OutputFolder, safe_relative

__all__ = ["convert_to_instaorder_panoptic", "read_order_annotations"]


def _read_json(path: str, what: str) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{what} {path} is not valid JSON: {e}") from e


def read_order_annotations(source: str) -> tuple[dict[str, Any], str]:
    """Read a split file or a per-image folder (module docstring).

    Returns:
        ``({"categories": [...], "images": [...]}, folder that mask_file paths are relative to)``.
    Raises:
        FileNotFoundError: ``source``, or a folder's ``categories.json``, is missing.
        DataError: invalid JSON, or ``categories`` / ``images`` missing.
    """
    if os.path.isdir(source):
        categories = _read_json(os.path.join(source, "categories.json"), "category file")
        files = sorted(glob.glob(os.path.join(source, "*.json")))
        files = [f for f in files if os.path.basename(f) != "categories.json"]
        data = {
            "categories": categories.get("categories") if isinstance(categories, dict) else None,
            "images": [_read_json(f, "image annotation file") for f in files],
        }
        folder = source
    else:
        data = _read_json(source, "order annotation file")
        folder = os.path.dirname(source)
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
        raise DataError(f"{source}: needs a 'categories' list (see docs/custom_data.md)")
    if not isinstance(data.get("images"), list):
        raise DataError(f"{source}: needs an 'images' list (see docs/custom_data.md)")
    return data, folder


def _decode_masks(
    image: dict[str, Any], folder: str, size: tuple[int, int], where: str
) -> list[np.ndarray]:
    """bool[H, W] per instance, from its RLE or its id in the image's ``mask_file``."""
    ids = None
    if "mask_file" in image:
        path = os.path.join(folder, image["mask_file"])
        if not os.path.isfile(path):
            raise DataError(f"{where}: mask_file not found: {path}")
        ids = np.asarray(Image.open(path)).astype(np.int64)
        if ids.ndim == 3 and ids.shape[2] == 3:  # COCO panoptic encoding R + 256 G + 256^2 B
            ids = rgb2id(ids)
        if ids.ndim != 2:
            raise DataError(
                f"{where}: mask_file {path} must hold instance ids: one channel, or RGB "
                "with the COCO panoptic encoding"
            )
        if ids.shape != size:
            raise DataError(
                f"{where}: mask_file {path} is {ids.shape[1]}x{ids.shape[0]}, "
                f"the image is {size[1]}x{size[0]}"
            )
    masks = []
    for k, inst in enumerate(image["instances"]):
        what = f"{where}, instance {k}"
        if "segmentation" in inst:
            rle = inst["segmentation"]
            if not isinstance(rle, dict) or list(rle.get("size", [])) != list(size):
                raise DataError(f"{what}: 'segmentation' must be a COCO RLE of size {list(size)}")
            try:
                mask = decode_segmentation(rle, *size)
            except ValueError as err:
                raise DataError(f"{what}: 'segmentation': {err}") from err
        elif "mask_id" in inst:
            if ids is None:
                raise DataError(f"{what} has a 'mask_id' but the image has no 'mask_file'")
            mask = ids == inst["mask_id"]
        elif "mask_file" in inst:
            path = os.path.join(folder, inst["mask_file"])
            if not os.path.isfile(path):
                raise DataError(f"{what}: mask_file not found: {path}")
            mask = np.asarray(Image.open(path).convert("L")) > 0
            if mask.shape != size:
                raise DataError(
                    f"{what}: mask_file {path} is {mask.shape[1]}x{mask.shape[0]}, "
                    f"the image is {size[1]}x{size[0]}"
                )
        else:
            raise DataError(f"{what} needs 'segmentation' (RLE), 'mask_id' or 'mask_file'")
        if not mask.any():
            raise DataError(f"{what}: the mask is empty")
        masks.append(mask)
    return masks


def _orders(image: dict[str, Any], ordered: list[int], where: str) -> dict[str, list]:
    """The ``occlusion`` / ``depth`` entries of the InstaOrder record, indexed by position in
    ``ordered`` (the instance indices that carry orders)."""
    position = {k: p for p, k in enumerate(ordered)}

    def pos(k: Any, what: str) -> int:
        if k not in position:
            raise DataError(
                f"{where}: {what} names instance {k!r}, which is not an ordered instance "
                f'(a non-crowd thing without "ordered": false); ordered: {ordered}'
            )
        return position[k]

    pairs = set()
    for entry in image.get("occlusion", []):
        if not isinstance(entry, list) or len(entry) != 2 or entry[0] == entry[1]:
            raise DataError(f"{where}: occlusion entry {entry!r} must be [i, j] with i != j")
        pairs.add((pos(entry[0], "occlusion"), pos(entry[1], "occlusion")))
    occlusion = []
    for i, j in sorted(pairs):
        if (j, i) in pairs:
            if i < j:
                occlusion.append({"order": f"{i}<{j} & {j}<{i}", "count": 2})
        else:
            occlusion.append({"order": f"{i}<{j}", "count": 2})
    depth = []
    for entry in image.get("depth", []):
        what = f"depth entry {entry!r}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: {what} must be an object")
        if "equal" in entry and len(entry["equal"]) == 2:
            i, j, op = pos(entry["equal"][0], what), pos(entry["equal"][1], what), "="
        elif "closer" in entry and "farther" in entry:
            i, j, op = pos(entry["closer"], what), pos(entry["farther"], what), "<"
        else:
            raise DataError(f"{where}: {what} needs 'closer' and 'farther', or 'equal': [i, j]")
        if i == j:
            raise DataError(f"{where}: {what} relates an instance to itself")
        count = entry.get("count", 2)
        if not isinstance(count, int) or count <= 0:
            raise DataError(f"{where}: {what}: 'count' must be a positive integer")
        overlap = entry.get("overlap", False)
        depth.append({"order": f"{i}{op}{j}", "count": count, "overlap": bool(overlap)})
    return {"occlusion": occlusion, "depth": depth}


def convert_to_instaorder_panoptic(
    source: str, *, image_root: str, out_json: str, out_panoptic: str
) -> dict[str, int]:
    """Convert ``source`` (a split file or per-image folder, module docstring) into an
    InstaOrder Panoptic JSON ``out_json`` and panoptic PNGs under ``out_panoptic``.

    Args:
        image_root: folder of the images (read for the size when an entry has none, and to
            check that each image exists).
    Returns:
        ``{"images", "segments", "ordered_instances", "occlusion_pairs", "depth_pairs"}``
        counts of the written dataset.
    Raises:
        FileNotFoundError: ``source`` or an image is missing.
        DataError: an invalid entry; the message names the image and the instance or order.
        OutputError: an output would replace an input or a file the converter did not write,
            or leave its folder (an absolute or ``..`` ``file_name``); nothing is written.
        RunLockError: another run writes into one of the output folders.
    """
    data, folder = read_order_annotations(source)
    names, inputs = _plan(data["images"], source, image_root, folder)
    json_name = os.path.basename(out_json)
    with OutputFolder(os.path.dirname(out_json) or ".", what="--out-json", tool="convert") as jsons:
        for label, paths in inputs.items():
            jsons.protect(paths, label)
        jsons.target(json_name)
        with OutputFolder(out_panoptic, what="--out-panoptic", tool="convert") as pngs:
            pngs.keep_apart(image_root, "the image folder (--image-root)")
            for mask_folder in sorted({os.path.dirname(p) for p in inputs["the mask file"]}):
                pngs.keep_apart(mask_folder, f"a folder of mask files ({mask_folder})")
            for label, paths in inputs.items():
                pngs.protect(paths, label)
            pngs.check(names)
            counts, output = _convert(data, source, folder, image_root, names, pngs)

            def write_json(tmp: str) -> None:
                with open(tmp, "w") as f:
                    json.dump(output, f, indent=1)

            jsons.write(json_name, write_json)
    return counts


def _where(source: str, n: int, image: Any) -> str:
    name = image.get("file_name") if isinstance(image, dict) else None
    return f"{source}, image {n} ({name!r})"


def _plan(
    images: list[Any], source: str, image_root: str, folder: str
) -> tuple[list[str], dict[str, list[str]]]:
    """The panoptic PNG name of every image (a safe relative name, used once) and the input
    files by kind (``"the order annotation file"``, ``"the image"``, ``"the mask file"``).

    Raises:
        DataError: an entry without ``file_name``, two entries with one PNG name.
        OutputError: a ``file_name`` that is absolute or has ``..``.
    """
    inputs: dict[str, list[str]] = {
        "the order annotation file": (
            sorted(glob.glob(os.path.join(source, "*.json"))) if os.path.isdir(source) else [source]
        ),
        "the image": [],
        "the mask file": [],
    }
    names: list[str] = []
    first: dict[str, int] = {}
    for n, image in enumerate(images):
        where = _where(source, n, image)
        if not isinstance(image, dict) or "file_name" not in image:
            raise DataError(f"{where}: needs a 'file_name'")
        png = os.path.splitext(safe_relative(image["file_name"], where))[0] + ".png"
        if png in first:
            raise DataError(
                f"{where}: its panoptic PNG {png} is also the one of image {first[png]}; file "
                "names must differ by more than their extension"
            )
        first[png] = n
        names.append(png)
        inputs["the image"].append(os.path.join(image_root, image["file_name"]))
        instances = image.get("instances")
        masks = [image] + (instances if isinstance(instances, list) else [])
        inputs["the mask file"] += [
            os.path.join(folder, m["mask_file"])
            for m in masks
            if isinstance(m, dict) and isinstance(m.get("mask_file"), str)
        ]
    return names, inputs


def _convert(
    data: dict[str, Any],
    source: str,
    folder: str,
    image_root: str,
    names: list[str],
    pngs: OutputFolder,
) -> tuple[dict[str, int], dict[str, Any]]:
    """Write the panoptic PNGs into ``pngs``, once :func:`_plan` and the output folders accepted
    the names; returns the counts and the InstaOrder Panoptic JSON object."""
    meta = categories_metadata(data["categories"], source)
    images, annotations = [], []
    counts = dict.fromkeys(
        ("images", "segments", "ordered_instances", "occlusion_pairs", "depth_pairs"), 0
    )
    seen_ids: set[Any] = set()
    for n, (image, png_name) in enumerate(zip(data["images"], names, strict=True)):
        where = _where(source, n, image)
        size, image_id = _image_entry(image, n, image_root, seen_ids, where)
        masks = _decode_masks(image, folder, size, where)
        ids, segments, ordered = _panoptic_segments(image["instances"], masks, size, meta, where)
        record = _orders(image, ordered, where)
        segment_ids = [k + 1 for k in ordered]
        build_order_matrices({"instance_ids": segment_ids, **record}, where=where)
        images.append(
            {"id": image_id, "file_name": image["file_name"], "height": size[0], "width": size[1]}
        )
        annotations.append(
            {
                "file_name": png_name,
                "image_id": image_id,
                "segments_info": segments,
                "instaorder": {
                    "instance_ids": segment_ids,
                    **record,
                    "pan_instance_ids": segment_ids,
                },
            }
        )
        rgb = id2rgb(ids)
        pngs.write(png_name, lambda tmp, rgb=rgb: Image.fromarray(rgb).save(tmp, format="PNG"))
        counts["images"] += 1
        counts["segments"] += len(segments)
        counts["ordered_instances"] += len(ordered)
        counts["occlusion_pairs"] += len(record["occlusion"])
        counts["depth_pairs"] += len(record["depth"])
    output = {
        "info": {"description": f"converted from {os.path.basename(source)}"},
        "licenses": [],
        "categories": meta["categories"],
        "images": images,
        "annotations": annotations,
    }
    return counts, output


def _image_entry(
    image: dict[str, Any], n: int, image_root: str, seen_ids: set[Any], where: str
) -> tuple[tuple[int, int], Any]:
    """The ``(H, W)`` size (given, else read from the image file) and the image id (given,
    else ``n + 1``) of entry ``n``; the id is added to ``seen_ids``.

    Raises:
        DataError: no ``instances`` list, or an image id used twice.
        FileNotFoundError: the image file is missing.
    """
    if not isinstance(image.get("instances"), list):
        raise DataError(f"{where}: needs an 'instances' list")
    path = os.path.join(image_root, image["file_name"])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: image not found: {path}")
    if "height" in image and "width" in image:
        size = (int(image["height"]), int(image["width"]))
    else:
        with Image.open(path) as pil:
            size = (pil.height, pil.width)
    image_id = image.get("image_id", n + 1)
    if image_id in seen_ids:
        raise DataError(f"{where}: image_id {image_id} used twice")
    seen_ids.add(image_id)
    return size, image_id


def _panoptic_segments(
    instances: list[dict[str, Any]],
    masks: list[np.ndarray],
    size: tuple[int, int],
    meta: dict[str, Any],
    where: str,
) -> tuple[np.ndarray, list[dict[str, Any]], list[int]]:
    """The panoptic id map (int64[H, W] of ``size``, instance k has id k + 1; 0 where none),
    ``segments_info`` of the bool[H, W] ``masks``, and the
    indices of the ordered instances (non-crowd things without ``"ordered": false``).

    Raises:
        DataError: an unknown category, or two instances whose masks overlap.
    """
    known = meta["stuff_dataset_id_to_contiguous_id"]
    things = meta["thing_dataset_id_to_contiguous_id"]
    ids = np.zeros(size, dtype=np.int64)
    segments, ordered = [], []
    for k, (inst, mask) in enumerate(zip(instances, masks, strict=True)):
        if inst.get("category_id") not in known:
            raise DataError(
                f"{where}, instance {k}: category_id {inst.get('category_id')!r} is not in "
                f"the categories ({sorted(known)})"
            )
        clash = np.unique(ids[mask & (ids > 0)])
        if clash.size:
            raise DataError(
                f"{where}: instance {k} overlaps instance {int(clash[0]) - 1}; panoptic "
                "masks must not overlap"
            )
        ids[mask] = k + 1
        crowd = int(bool(inst.get("iscrowd", 0)))
        segments.append(
            {
                "id": k + 1,
                "category_id": inst["category_id"],
                "iscrowd": crowd,
                "bbox": list(mask_bbox(mask)),
                "area": int(mask.sum()),
            }
        )
        if inst["category_id"] in things and not crowd and inst.get("ordered", True):
            ordered.append(k)
    return ids, segments, ordered
