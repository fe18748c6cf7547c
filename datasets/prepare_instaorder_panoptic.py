"""Convert InstaOrder + COCO panoptic 2017 into InstaOrder Panoptic (docs/reference.md [DS 5]).

For each image with both an InstaOrder record and a COCO panoptic annotation, the InstaOrder
instances (COCO instance masks) are matched greedily by IoU to the panoptic *thing, non-crowd*
segments; images with at least two matched instances are written with the record and its
``pan_instance_ids``. Usage (files under ``$DETECTRON2_DATASETS/coco``, see datasets/README.md)::

    python datasets/prepare_instaorder_panoptic.py --train --val

writes ``coco/annotations/InstaOrderPanoptic_{train,val}2017.json`` (one file per split) and
prints what was dropped and why. Every input of the requested splits is checked before anything
is created; each output is written to a temporary file in ``--dest-dir`` and renamed into place,
so an interrupted run or a full disk never leaves a truncated file where a good one was. The
outputs follow mask2former/utils/outputs.py: one run at a time per ``--dest-dir``; an output
name held by an input, a symbolic link or a file this script did not write (recorded in
``--dest-dir``) is refused before any split is written.

Differences from the original script: the output is a file per split inside ``--dest-dir`` (the
original wrote both splits to ``--dest_path`` verbatim, so the default folder failed and
``--train --val`` overwrote one split with the other); stuff and crowd segments are not matching
candidates (an instance matched to one was dropped at load time anyway, after taking the
segment from a thing); the split comes from the flag, not from the number of annotations.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from instaformer.data.datasets import load_json_object
from instaformer.data.duplicates import check_instaorder_duplicates, check_panoptic_duplicates
from instaformer.data.io import DataError, read_panoptic_ids
from instaformer.data.relations import build_order_matrices, check_record_types
from mask2former.structures import decode_segmentation
from mask2former.utils.outputs import OutputFolder, require_dir

logger = logging.getLogger("prepare_instaorder_panoptic")

IOU_THRESHOLD = 0.5


def match_instances(segment_masks: np.ndarray, instance_masks: np.ndarray) -> list[int]:
    """Greedy IoU matching of K instances to P segments ([DS 5.2] step 3).

    Repeatedly takes the (segment, instance) pair of largest IoU (first in row-major order on
    ties) while it is > 0.5 and instances are unmatched, then removes the instance's pixels from
    every instance mask and the segment's pixels from every segment mask and recomputes the IoU
    of the pairs still available.

    Args:
        segment_masks: bool array[P, H, W].
        instance_masks: bool array[K, H, W] (may overlap each other).
    Returns:
        for each instance, the index of its matched segment, or -1.
    """
    num_seg, num_inst = len(segment_masks), len(instance_masks)
    match = [-1] * num_inst
    if num_seg == 0 or num_inst == 0:
        return match
    seg = segment_masks.reshape(num_seg, -1).astype(np.float32)
    inst = instance_masks.reshape(num_inst, -1).astype(np.float32)
    free_seg = np.ones(num_seg, dtype=bool)
    free_inst = np.ones(num_inst, dtype=bool)
    while free_inst.any() and free_seg.any():
        inter = seg @ inst.T  # P x K
        union = seg.sum(1)[:, None] + inst.sum(1)[None, :] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        iou[~free_seg, :] = -1.0
        iou[:, ~free_inst] = -1.0
        p, k = np.unravel_index(int(np.argmax(iou)), iou.shape)
        if not iou[p, k] > IOU_THRESHOLD:
            break
        match[k] = int(p)
        free_seg[p], free_inst[k] = False, False
        seg_pixels, inst_pixels = seg[p] > 0, inst[k] > 0
        seg[:, seg_pixels] = 0.0
        inst[:, inst_pixels] = 0.0
    return match


def annotation_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """bool array[H, W] of a COCO instance annotation (polygons, uncompressed or compressed RLE)."""
    return decode_segmentation(ann["segmentation"], height, width)


def convert_split(
    instaorder: dict[str, Any],
    instances: dict[str, Any],
    panoptic: dict[str, Any],
    panoptic_dir: str,
    *,
    progress: bool = True,
    source: str = "InstaOrder file",
    instances_source: str = "COCO instances file",
    panoptic_source: str = "COCO panoptic file",
) -> tuple[dict[str, Any], Counter]:
    """Build the InstaOrder Panoptic JSON object of one split.

    Args:
        instaorder, instances, panoptic: the parsed ``InstaOrder_``, ``instances_`` and
            ``panoptic_{split}2017.json``.
        panoptic_dir: folder of the panoptic PNGs.
        source, instances_source, panoptic_source: the three files' names, used in messages.
    Returns:
        ``(output, summary)``: the JSON object ([DS 5.3]) and counts of what was kept
        and dropped, keyed by a readable reason (``"images kept"``, ``"instances unmatched"``,
        ``"images dropped: fewer than two matched instances"``, ``"records skipped: ..."``).
    Raises:
        DataError: a missing key, a missing or corrupt PNG, a PNG whose size differs from its
            image entry; a repeated image id or file name, two order records or two panoptic
            annotations for one image, a segment id repeated in one image, a repeated COCO
            instance id (:mod:`instaformer.data.duplicates`; the message names the file and the
            ids).
    """
    for name, data, keys in (
        ("InstaOrder", instaorder, ("annotations",)),
        ("instances", instances, ("images", "annotations")),
        ("panoptic", panoptic, ("images", "annotations", "categories")),
    ):
        for key in keys:
            if key not in data:
                raise DataError(f"{name} file has no top-level '{key}'")
    check_instaorder_duplicates(instaorder, source, instances, instances_source)
    check_panoptic_duplicates(panoptic, panoptic_source)
    isthing = {c["id"]: bool(c["isthing"]) for c in panoptic["categories"]}
    images = {img["id"]: img for img in panoptic["images"]}
    coco_anns = {a["id"]: a for a in instances["annotations"]}
    records = {}
    summary: Counter = Counter()
    for index, record in enumerate(instaorder["annotations"]):
        if not isinstance(record, dict) or "image_id" not in record:
            raise DataError(f"{source}, annotation {index}: not an object with an 'image_id'")
        records[record["image_id"]] = record
    panoptic_ids = {a["image_id"] for a in panoptic["annotations"]}
    summary["records without a panoptic annotation"] = sum(r not in panoptic_ids for r in records)

    kept_annotations = []
    todo = [a for a in panoptic["annotations"] if a["image_id"] in records]
    for pan in tqdm(todo, desc="matching", disable=not progress, unit="img"):
        image_id = pan["image_id"]
        record = records[image_id]
        where = f"image_id {image_id}"
        reason, detail = _invalid_record(record, coco_anns, image_id)
        if reason:
            summary[f"records skipped: {reason}"] += 1
            logger.warning("%s, %s: InstaOrder record skipped: %s", source, where, detail)
            continue
        if image_id not in images:
            raise DataError(f"panoptic annotation of {where} has no entry in 'images'")
        height, width = images[image_id]["height"], images[image_id]["width"]
        png = os.path.join(panoptic_dir, pan["file_name"])
        ids = read_panoptic_ids(png)
        if ids.shape != (height, width):
            raise DataError(
                f"{png} is {ids.shape[1]}x{ids.shape[0]}, its image entry says {width}x{height}"
            )
        candidates = [
            s
            for s in pan["segments_info"]
            if isthing.get(s["category_id"], False) and not s.get("iscrowd", 0)
        ]
        seg_masks = (
            np.stack([ids == s["id"] for s in candidates])
            if candidates
            else np.zeros((0, height, width), dtype=bool)
        )
        inst_masks = np.stack(
            [annotation_mask(coco_anns[i], height, width) for i in record["instance_ids"]]
        )
        match = match_instances(seg_masks, inst_masks)
        pan_instance_ids = [candidates[p]["id"] if p >= 0 else -1 for p in match]
        unmatched = pan_instance_ids.count(-1)
        summary["instances unmatched"] += unmatched
        if unmatched:
            logger.debug("%s: %d of %d instances unmatched", where, unmatched, len(match))
        if len(match) - unmatched < 2:
            summary["images dropped: fewer than two matched instances"] += 1
            continue
        summary["images kept"] += 1
        summary["instances matched"] += len(match) - unmatched
        instaorder_out = {k: v for k, v in record.items() if k != "image_id"}
        instaorder_out["pan_instance_ids"] = pan_instance_ids
        kept_annotations.append({**pan, "instaorder": instaorder_out})

    kept_ids = {a["image_id"] for a in kept_annotations}
    output = {k: v for k, v in panoptic.items() if k not in ("images", "annotations")}
    output["images"] = [img for img in panoptic["images"] if img["id"] in kept_ids]
    output["annotations"] = kept_annotations
    return output, summary


def _invalid_record(record: dict, coco_anns: dict[int, dict], image_id: int) -> tuple[str, str]:
    """Why an InstaOrder record cannot be used: (reason for the summary, detail for the log);
    ``("", "")`` when it can."""
    ids = record.get("instance_ids")
    if not isinstance(ids, list) or "occlusion" not in record or "depth" not in record:
        reason = "missing instance_ids, occlusion or depth"
        return reason, reason
    try:
        check_record_types(record, f"image_id {image_id}")
    except DataError as err:
        return "wrongly typed field", str(err)
    if len(set(ids)) != len(ids):
        return "repeated instance id", f"repeated instance id in {ids}"
    if any(i not in coco_anns for i in ids):
        return "instance id not in the instances file", f"instance ids {ids}"
    if any(coco_anns[i].get("image_id") != image_id for i in ids):
        return "instance of another image", f"instance ids {ids}"
    for i in ids:
        if not isinstance(coco_anns[i].get("segmentation"), list | dict):
            kind = type(coco_anns[i].get("segmentation")).__name__
            return (
                "instance without a COCO segmentation",
                f"instance {i} of the instances file has a 'segmentation' of type {kind}, not "
                "COCO polygons or RLE",
            )
    try:
        build_order_matrices(record, where=f"image_id {image_id}")
    except DataError as err:
        return "malformed order label", str(err)
    return "", ""


def _split_inputs(root: str, split: str) -> dict[str, str]:
    ann_dir = os.path.join(root, "coco", "annotations")
    return {
        "instaorder": os.path.join(ann_dir, f"InstaOrder_{split}2017.json"),
        "instances": os.path.join(ann_dir, f"instances_{split}2017.json"),
        "panoptic": os.path.join(ann_dir, f"panoptic_{split}2017.json"),
        "panoptic_dir": os.path.join(root, "coco", f"panoptic_{split}2017"),
    }


def _check_inputs(inputs: dict[str, str]) -> None:
    for key, path in inputs.items():
        exists = os.path.isdir(path) if key == "panoptic_dir" else os.path.isfile(path)
        if not exists:
            raise FileNotFoundError(f"{path} not found; see datasets/README.md for the layout")


def _output_name(split: str) -> str:
    return f"InstaOrderPanoptic_{split}2017.json"


def _open_dest(
    stack: contextlib.ExitStack, dest_dir: str, splits: list[str], inputs: dict[str, dict]
) -> OutputFolder:
    """Lock ``dest_dir`` (created) for the rest of the run and check every output name."""
    out = stack.enter_context(OutputFolder(dest_dir, what="--dest-dir", tool="prepare"))
    for split_inputs in inputs.values():
        for key, path in split_inputs.items():
            if key != "panoptic_dir":
                out.protect([path], f"the {key} file")
    out.check(_output_name(split) for split in splits)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", action="store_true", help="convert train2017")
    parser.add_argument("--val", action="store_true", help="convert val2017")
    parser.add_argument(
        "--root",
        default=os.environ.get("DETECTRON2_DATASETS", "datasets"),
        help="dataset root holding coco/ (default: $DETECTRON2_DATASETS or ./datasets)",
    )
    parser.add_argument(
        "--dest-dir",
        default=None,
        help="output folder for InstaOrderPanoptic_{split}2017.json (default: coco/annotations)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    splits = [s for s, on in (("train", args.train), ("val", args.val)) if on]
    if not splits:
        parser.error("choose at least one of --train and --val")
    inputs = {split: _split_inputs(args.root, split) for split in splits}
    for split_inputs in inputs.values():  # every input exists before anything is created
        _check_inputs(split_inputs)
    default_dest = os.path.join(args.root, "coco", "annotations")
    dest_dir = require_dir(default_dest if args.dest_dir is None else args.dest_dir, "--dest-dir")
    with contextlib.ExitStack() as stack:
        # an existing folder is locked and checked at once; a new one once a split is converted
        out = _open_dest(stack, dest_dir, splits, inputs) if os.path.isdir(dest_dir) else None
        for split in splits:
            paths = inputs[split]
            output, summary = convert_split(
                load_json_object(paths["instaorder"], "InstaOrder file", list_keys=()),
                load_json_object(paths["instances"], "COCO instances file", list_keys=()),
                load_json_object(paths["panoptic"], "COCO panoptic file", list_keys=()),
                paths["panoptic_dir"],
                progress=not args.no_progress,
                source=paths["instaorder"],
                instances_source=paths["instances"],
                panoptic_source=paths["panoptic"],
            )
            if out is None:
                out = _open_dest(stack, dest_dir, splits, inputs)
            dest = out.write_bytes(_output_name(split), json.dumps(output, indent=4).encode())
            logger.info("%s2017 -> %s", split, dest)
            for key in sorted(summary):
                logger.info("  %-50s %d", key, summary[key])


if __name__ == "__main__":
    main()
