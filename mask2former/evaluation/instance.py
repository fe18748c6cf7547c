"""COCO instance-segmentation AP (pycocotools) with GT taken from panoptic annotations.

Shape shorthand: K predicted instances, H, W image size.

GT: the thing segments of a COCO panoptic JSON + PNG folder (crowd segments stay crowd), so
no separate instances JSON is needed. Predictions: the model's ``instances`` with
``pred_masks`` Tensor[K, H, W] (bool, or float thresholded at 0.5), ``scores`` Tensor[K] and
``pred_classes`` Tensor[K] (contiguous thing ids). Masks are RLE-encoded and scored with
``COCOeval(iouType="segm")``; AP, AP50, AP75, APs, APm, APl are reported times 100 under
``"segm"``, NaN when there is no prediction at all (as detectron2).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mask2former.evaluation.evaluator import DatasetEvaluator, Results
from mask2former.evaluation.panoptic import (
    load_panoptic_json,
    read_panoptic_png,
    resolve_panoptic_gt,
)
from mask2former.structures import encode_rle
from mask2former.utils import comm
from mask2former.utils.atomic import atomic_write_bytes

logger = logging.getLogger(__name__)

AP_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _to_numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def panoptic_gt_instances(
    ann: Mapping[str, Any], gt_ids: np.ndarray, thing_categories: set[int]
) -> list[dict[str, Any]]:
    """COCO instance annotations (without ``id``) of the thing segments of one image.

    Args:
        ann: the panoptic annotation (``image_id``, ``segments_info`` with dataset ids).
        gt_ids: int [H, W] segment ids of its PNG.
        thing_categories: dataset category ids that are things.
    """
    annotations = []
    for segment in ann["segments_info"]:
        category = int(segment["category_id"])
        if category not in thing_categories:
            continue
        mask = gt_ids == int(segment["id"])
        area = int(mask.sum())
        if area == 0:
            continue
        rle = encode_rle(mask)
        annotations.append(
            {
                "image_id": ann["image_id"],
                "category_id": category,
                "segmentation": rle,
                "area": area,
                "bbox": mask_util.toBbox(rle).tolist(),
                "iscrowd": int(segment.get("iscrowd", 0)),
            }
        )
    return annotations


def coco_segm_ap(
    gt_annotations: list[dict[str, Any]],
    predictions: list[dict[str, Any]],
    images: Sequence[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
    per_class: bool = False,
) -> dict[str, float]:
    """Run ``COCOeval`` (segm) on in-memory GT and predictions; AP metrics times 100.

    Args:
        gt_annotations: COCO instance annotations (RLE ``segmentation``), ids are assigned here.
        predictions: ``{"image_id", "category_id", "segmentation", "score"}`` per instance.
        images: the evaluated images ``{"id", "height", "width"}``.
        categories: thing categories ``{"id", "name"}``.
        per_class: add ``AP-{name}``.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` (+ per class); -1 from COCOeval (no GT in
        a size range) is passed through as NaN. Without any prediction every metric is NaN and
        no per-class entry is given (detectron2's ``COCOEvaluator`` rule).
    """
    gt = {
        "images": [dict(i) for i in images],
        "annotations": [dict(a, id=k + 1) for k, a in enumerate(gt_annotations)],
        "categories": [dict(c) for c in categories],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
    if not predictions:  # as detectron2's COCOEvaluator: undefined, not 0
        logger.warning("No instance predictions: AP is NaN")
        return dict.fromkeys(AP_METRICS, float("nan"))
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        coco_dt = coco_gt.loadRes(copy.deepcopy(predictions))
        coco_eval = COCOeval(coco_gt, coco_dt, "segm")
        coco_eval.params.imgIds = [i["id"] for i in images]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.info("COCOeval segm:\n%s", buffer.getvalue())
    results = {
        name: float(coco_eval.stats[i] * 100) if coco_eval.stats[i] >= 0 else float("nan")
        for i, name in enumerate(AP_METRICS)
    }
    if per_class:
        precision = coco_eval.eval["precision"]  # [T IoU, R recall, K class, A area, M max dets]
        for k, category in enumerate(coco_eval.params.catIds):
            values = precision[:, :, k, 0, -1]
            values = values[values > -1]
            name = next(c["name"] for c in categories if c["id"] == category)
            results[f"AP-{name}"] = float(values.mean() * 100) if values.size else float("nan")
    return results


class COCOInstanceEvaluator(DatasetEvaluator):
    """Mask AP of the model's ``instances``; returns ``{"segm": {...}}``.

    Build it from a registered dataset (metadata ``panoptic_json``, ``panoptic_root``,
    ``thing_dataset_id_to_contiguous_id``) or from the explicit keyword arguments. Inputs must
    carry ``image_id``. With ``output_dir`` the predictions are written to
    ``instances_predictions.json``.
    """

    def __init__(
        self,
        dataset_name: str | None = None,
        output_dir: str | None = None,
        *,
        gt_json: str | None = None,
        gt_folder: str | None = None,
        thing_dataset_id_to_contiguous_id: Mapping[int, int] | None = None,
        per_class: bool = False,
        distributed: bool = True,
    ) -> None:
        gt_json, gt_folder, thing_dataset_id_to_contiguous_id, _ = resolve_panoptic_gt(
            type(self).__name__, dataset_name, gt_json, gt_folder, thing_dataset_id_to_contiguous_id
        )
        gt = load_panoptic_json(gt_json)
        self._categories = [
            {"id": int(c["id"]), "name": c.get("name", str(c["id"]))}
            for c in gt["categories"]
            if c.get("isthing", 0)
        ]
        self._thing_categories = {c["id"] for c in self._categories}
        self._gt_by_image = {a["image_id"]: a for a in gt["annotations"]}
        self._gt_folder = gt_folder
        if thing_dataset_id_to_contiguous_id is None:
            thing_dataset_id_to_contiguous_id = {c: c for c in self._thing_categories}
        self._to_dataset_id = {v: k for k, v in thing_dataset_id_to_contiguous_id.items()}
        self._output_dir = output_dir
        self._per_class = per_class
        self._distributed = distributed
        self.reset()

    def reset(self) -> None:
        self._images: list[dict[str, Any]] = []
        self._gt: list[dict[str, Any]] = []
        self._predictions: list[dict[str, Any]] = []

    def process(self, inputs: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            image_id = inp.get("image_id")
            if image_id not in self._gt_by_image:
                raise KeyError(f"image_id {image_id!r} is not in the panoptic GT JSON")
            if "instances" not in out:
                raise KeyError(f"image_id {image_id!r}: output has no 'instances'")
            ann = self._gt_by_image[image_id]
            gt_ids = read_panoptic_png(os.path.join(self._gt_folder, ann["file_name"]))
            height, width = gt_ids.shape
            self._images.append({"id": image_id, "height": height, "width": width})
            self._gt.extend(panoptic_gt_instances(ann, gt_ids, self._thing_categories))

            instances = out["instances"]
            masks = _to_numpy(instances.pred_masks)
            masks = masks > 0.5 if masks.dtype != bool else masks
            if masks.shape[1:] != gt_ids.shape:
                raise ValueError(
                    f"image_id {image_id!r}: pred_masks are {masks.shape[1:]}, GT is {gt_ids.shape}"
                )
            scores = _to_numpy(instances.scores).tolist()
            classes = _to_numpy(instances.pred_classes).tolist()
            for mask, score, cls in zip(masks, scores, classes, strict=True):
                if int(cls) not in self._to_dataset_id:
                    raise KeyError(f"image_id {image_id!r}: pred_class {cls} is not a thing class")
                self._predictions.append(
                    {
                        "image_id": image_id,
                        "category_id": int(self._to_dataset_id[int(cls)]),
                        "segmentation": encode_rle(mask),
                        "score": float(score),
                    }
                )

    def evaluate(self) -> Results:
        images, gt, predictions = self._images, self._gt, self._predictions
        if self._distributed:
            gathered = comm.gather_lists(images, gt, predictions)
            if gathered is None:
                return {}
            images, gt, predictions = gathered
        if self._output_dir:
            path = os.path.join(self._output_dir, "instances_predictions.json")
            atomic_write_bytes(path, json.dumps(predictions).encode())
        results = coco_segm_ap(gt, predictions, images, self._categories, self._per_class)
        return {"segm": results}
