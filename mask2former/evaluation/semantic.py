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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from mask2former.evaluation.evaluator import DatasetEvaluator, Results
from mask2former.evaluation.segment_maps import read_panoptic_index
from mask2former.utils import comm

logger = logging.getLogger(__name__)


# Pixels per block of class_map: C x 1024 scores (about half a MiB for 133 float32 classes) stay
# in the CPU caches while they are transposed.
_ARGMAX_BLOCK = 1024


def _to_numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def class_map(scores: torch.Tensor | np.ndarray) -> np.ndarray:
    """int64 [H, W] index of the highest of the C scores of each pixel (Tensor[C, H, W] or array).

    As ``argmax`` over the first axis: the first index among equal scores, a NaN above every
    number. A CUDA tensor is reduced on its device. On the CPU, ``argmax`` over the first of
    three axes reads the scores with a stride of H * W; here blocks of pixels are transposed to
    ``[pixels, C]`` (OpenCV's transpose) and reduced over contiguous memory instead, several
    times faster, on as many threads as torch uses (both release the GIL).
    """
    if isinstance(scores, torch.Tensor):
        if scores.device.type != "cpu":
            return scores.argmax(dim=0).cpu().numpy()
        if scores.dtype in (torch.float16, torch.bfloat16):
            scores = scores.float()  # exact: the same order, NaN included
        scores = scores.detach().numpy()
    scores = np.asarray(scores)
    flat = scores.reshape(scores.shape[0], -1) if scores.ndim else scores
    if flat.dtype not in (np.float32, np.float64) or flat.ndim != 2 or not flat.shape[0]:
        return np.argmax(scores, axis=0).astype(np.int64)
    index = np.empty(flat.shape[1], dtype=np.int64)

    def reduce(first: int, last: int) -> None:
        for start in range(first, last, _ARGMAX_BLOCK):
            stop = min(start + _ARGMAX_BLOCK, last)
            index[start:stop] = cv2.transpose(flat[:, start:stop]).argmax(axis=1)

    blocks = -(-flat.shape[1] // _ARGMAX_BLOCK)
    threads = min(torch.get_num_threads(), blocks)
    if threads > 1:
        # Contiguous ranges of whole blocks, one per thread.
        bounds = [
            min(flat.shape[1], -(-blocks * t // threads) * _ARGMAX_BLOCK)
            for t in range(threads + 1)
        ]
        with ThreadPoolExecutor(threads) as pool:
            for done in [pool.submit(reduce, bounds[t], bounds[t + 1]) for t in range(threads)]:
                done.result()
    else:
        reduce(0, flat.shape[1])
    return index.reshape(scores.shape[1:])


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
    gt, pred = gt.astype(np.int64, copy=False), pred.astype(np.int64, copy=False)
    if keep.any():
        if gt.min(where=keep, initial=0) < 0 or gt.max(where=keep, initial=0) >= num_classes:
            raise ValueError(f"GT class ids must be in [0, {num_classes}) or {ignore_label}")
        if pred.min(where=keep, initial=0) < 0 or pred.max(where=keep, initial=0) >= num_classes:
            raise ValueError(f"predicted class ids must be in [0, {num_classes})")
    # Pixel codes gt * C + pred, ignored pixels in one more bin that is dropped.
    codes = gt * num_classes + pred
    codes[~keep] = num_classes * num_classes
    counts = np.bincount(codes.ravel(), minlength=num_classes * num_classes + 1)
    return counts[: num_classes * num_classes].reshape(num_classes, num_classes)


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
            # The class of each pixel's segment (of the last one listed with its id), ignored
            # where its id is not listed.
            category_of = {int(s["id"]): int(s["category_id"]) for s in inp["segments_info"]}
            _, keys, index = read_panoptic_index(inp["pan_seg_file_name"], category_of)
            classes = [category_of.get(k, self._ignore_label) for k in keys.tolist()]
            return np.array([*classes, self._ignore_label], dtype=np.int64)[index]  # -1: last
        raise KeyError(
            "input needs 'sem_seg', 'sem_seg_file_name' or 'pan_seg_file_name' + 'segments_info'"
        )

    def process(self, inputs: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            name = inp.get("image_id", inp.get("file_name"))
            if "sem_seg" not in out:
                raise KeyError(f"image {name!r}: output has no 'sem_seg'")
            pred = class_map(out["sem_seg"])
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
