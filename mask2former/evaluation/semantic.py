"""Semantic segmentation metrics: mIoU, fwIoU, mACC, pACC from a confusion matrix.

Shape shorthand: C classes, H, W image size.

Per class c with ``TP_c`` correctly labelled pixels, ``G_c`` GT pixels and ``P_c`` predicted
pixels (pixels whose GT is ``ignore_label`` are left out): ``IoU_c = TP_c / (G_c + P_c - TP_c)``,
``ACC_c = TP_c / G_c``, both defined only for classes with ``G_c > 0`` (detectron2's
``SemSegEvaluator`` rule, with which Mask2Former's mIoU is published): mIoU and mACC average
them over those classes, so a class that is only predicted lowers the IoU of the GT classes it
overlaps but is not averaged in. fwIoU weighs IoU by ``G_c / sum G``, pACC = ``sum TP / sum G``.
All times 100 under ``"sem_seg"``; all NaN when no pixel is labelled.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from mask2former.evaluation.evaluator import DatasetEvaluator, Results
from mask2former.evaluation.panoptic import read_panoptic_png
from mask2former.utils import comm

logger = logging.getLogger(__name__)


def _to_numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_label: int
) -> np.ndarray:
    """int64 [C, C] counts (row = GT class, column = predicted class) of one image.

    Args:
        gt: int [H, W] GT class ids in [0, C) or ``ignore_label``.
        pred: int [H, W] predicted class ids in [0, C).
    """
    if gt.shape != pred.shape:
        raise ValueError(f"GT semantic map has shape {gt.shape}, prediction {pred.shape}")
    keep = gt != ignore_label
    g = gt[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    if g.size and (g.min() < 0 or g.max() >= num_classes):
        raise ValueError(f"GT class ids must be in [0, {num_classes}) or {ignore_label}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted class ids must be in [0, {num_classes})")
    counts = np.bincount(g * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def semantic_metrics(
    conf: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """mIoU, fwIoU, mACC, pACC (times 100) of a confusion matrix, as detectron2 computes them.

    Args:
        conf: int [C, C] pixel counts, row = GT class, column = predicted class.
        class_names: C names; adds ``IoU-{name}`` and ``ACC-{name}`` per class (NaN for a
            class without GT pixels).

    Returns:
        The metrics; NaN (with a warning) when ``conf`` holds no pixel.
    """
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    gt_pixels = conf.sum(axis=1)
    pred_pixels = conf.sum(axis=0)
    union = gt_pixels + pred_pixels - tp
    valid = gt_pixels > 0  # union >= G_c > 0 there
    iou = np.full(len(tp), np.nan)
    acc = np.full(len(tp), np.nan)
    iou[valid] = tp[valid] / union[valid]
    acc[valid] = tp[valid] / gt_pixels[valid]
    total = gt_pixels.sum()
    if total == 0:
        logger.warning("No labelled GT pixel: semantic metrics are NaN")
        results = dict.fromkeys(("mIoU", "fwIoU", "mACC", "pACC"), float("nan"))
    else:
        results = {
            "mIoU": 100 * float(iou[valid].mean()),
            "fwIoU": 100 * float((iou[valid] * gt_pixels[valid]).sum() / total),
            "mACC": 100 * float(acc[valid].mean()),
            "pACC": 100 * float(tp.sum() / total),
        }
    if class_names is not None:
        for name, value in zip(class_names, iou, strict=True):
            results[f"IoU-{name}"] = 100 * float(value)
        for name, value in zip(class_names, acc, strict=True):
            results[f"ACC-{name}"] = 100 * float(value)
    return results


class SemSegEvaluator(DatasetEvaluator):
    """Semantic metrics of the model's ``sem_seg`` (Tensor[C, H, W] scores, argmax taken).

    The GT of each input is read from, in this order: ``input["sem_seg"]`` (Tensor[H, W] class
    ids), ``input["sem_seg_file_name"]`` (PNG of class ids), or ``input["pan_seg_file_name"]``
    with ``input["segments_info"]`` (contiguous ``category_id`` per segment; every segment,
    crowd included, paints its class; the rest is ``ignore_label``).
    Build from a registered dataset (metadata ``stuff_classes``, ``ignore_label``) or from
    ``num_classes`` / ``ignore_label`` / ``class_names``.
    """

    def __init__(
        self,
        dataset_name: str | None = None,
        *,
        num_classes: int | None = None,
        ignore_label: int | None = None,
        class_names: Sequence[str] | None = None,
        per_class: bool = False,
        distributed: bool = True,
    ) -> None:
        if dataset_name is not None:
            from mask2former.data.catalog import MetadataCatalog

            meta = MetadataCatalog.get(dataset_name)
            if class_names is None:
                class_names = list(meta.stuff_classes)
            if ignore_label is None:
                ignore_label = meta.ignore_label
        if num_classes is None:
            if class_names is None:
                raise ValueError("SemSegEvaluator needs dataset_name, num_classes or class_names")
            num_classes = len(class_names)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}")
        self._num_classes = int(num_classes)
        self._ignore_label = 255 if ignore_label is None else int(ignore_label)
        self._class_names = list(class_names) if class_names is not None else None
        self._per_class = per_class
        self._distributed = distributed
        self.reset()

    def reset(self) -> None:
        self._conf = np.zeros((self._num_classes, self._num_classes), dtype=np.int64)

    def _ground_truth(self, inp: dict[str, Any]) -> np.ndarray:
        if "sem_seg" in inp:
            return _to_numpy(inp["sem_seg"]).astype(np.int64)
        if "sem_seg_file_name" in inp:
            path = inp["sem_seg_file_name"]
            if not os.path.isfile(path):
                raise FileNotFoundError(f"semantic GT PNG not found: {path}")
            return np.asarray(Image.open(path), dtype=np.int64)
        if "pan_seg_file_name" in inp and "segments_info" in inp:
            ids = read_panoptic_png(inp["pan_seg_file_name"])
            gt = np.full(ids.shape, self._ignore_label, dtype=np.int64)
            for segment in inp["segments_info"]:
                gt[ids == int(segment["id"])] = int(segment["category_id"])
            return gt
        raise KeyError(
            "input needs 'sem_seg', 'sem_seg_file_name' or 'pan_seg_file_name' + 'segments_info'"
        )

    def process(self, inputs: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            name = inp.get("image_id", inp.get("file_name"))
            if "sem_seg" not in out:
                raise KeyError(f"image {name!r}: output has no 'sem_seg'")
            scores = out["sem_seg"]
            if isinstance(scores, torch.Tensor):
                pred = scores.argmax(dim=0).cpu().numpy()
            else:
                pred = np.asarray(scores).argmax(axis=0)
            try:
                self._conf += confusion_matrix(
                    self._ground_truth(inp), pred, self._num_classes, self._ignore_label
                )
            except (KeyError, ValueError) as err:
                raise type(err)(f"image {name!r}: {err}") from err

    def evaluate(self) -> Results:
        conf = self._conf
        if self._distributed:
            gathered = comm.gather_lists([conf])
            if gathered is None:
                return {}
            conf = np.sum(gathered[0], axis=0)
        names = self._class_names or [str(c) for c in range(self._num_classes)]
        return {"sem_seg": semantic_metrics(conf, names if self._per_class else None)}
