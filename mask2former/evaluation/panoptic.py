"""COCO panoptic quality (PQ, SQ, RQ) for all, thing and stuff categories.

Shape shorthand: H, W image size.

Definitions (Kirillov et al., "Panoptic Segmentation", CVPR 2019, §4, with the COCO rules for
void and crowd regions): a predicted and a GT segment of the same category match when their
IoU is > 0.5, where the union leaves out the predicted pixels that fall on GT void (id 0).
Per category, ``PQ = sum IoU(TP) / (TP + FP/2 + FN/2)``, ``SQ = sum IoU(TP) / TP``,
``RQ = TP / (TP + FP/2 + FN/2)``. Unmatched GT segments that are not crowd are FN; unmatched
predicted segments are FP unless more than half of their pixels lie on GT void or on the crowd
region of their category (panopticapi keeps one per category: the last crowd segment listed).
Dataset scores average the categories that have TP + FP + FN > 0 (times 100).

GT: a COCO panoptic JSON (``annotations[*].file_name`` / ``segments_info`` with dataset
category ids and ``iscrowd``; ``categories[*].isthing``) and the folder of its PNGs (segment
id = R + 256 G + 256^2 B). Predictions: the model's ``panoptic_seg`` = (Tensor[H, W] int segment
ids, 0 = void unless listed; ``segments_info`` list of ``{"id", "category_id" (contiguous),
"isthing"}``), or a prediction JSON + PNG folder in the same COCO format
(``pq_compute_from_files``). A listed id 0 is an ordinary segment, as panopticapi counts it; a
segment without ``isthing`` carries a dataset category id, as in detectron2's evaluator.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from mask2former.evaluation.evaluator import DatasetEvaluator, Results
from mask2former.structures import id2rgb, rgb2id
from mask2former.utils import comm
from mask2former.utils.atomic import atomic_write_bytes, atomic_write_path
from mask2former.utils.outputs import safe_relative

logger = logging.getLogger(__name__)

VOID = 0
_OFFSET = 256**3  # segment ids are below 256^3 (three 8-bit channels)
# Per-category statistics: [sum of IoU over TP, TP, FP, FN].
_IOU, _TP, _FP, _FN = range(4)
PQStats = dict[int, np.ndarray]


def read_panoptic_png(path: str) -> np.ndarray:
    """int64 [H, W] segment ids of a COCO panoptic PNG."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"panoptic PNG not found: {path}")
    return rgb2id(np.asarray(Image.open(path).convert("RGB")))


def pq_stats_single_image(
    gt_ids: np.ndarray,
    gt_segments: Mapping[int, Mapping[str, Any]],
    pred_ids: np.ndarray,
    pred_segments: Mapping[int, Mapping[str, Any]],
) -> PQStats:
    """Per-category TP/FP/FN and summed IoU of one image.

    Args:
        gt_ids: int [H, W] GT segment ids, 0 = void.
        gt_segments: GT segment id -> ``{"category_id", "iscrowd"}`` (dataset category ids).
        pred_ids: int [H, W] predicted segment ids, 0 = void unless ``pred_segments`` lists
            id 0: then, as in panopticapi, it is an ordinary segment (matched, TP or FP).
        pred_segments: predicted segment id -> ``{"category_id"}`` (dataset category ids).
            Segments without pixels are ignored.

    Returns:
        category id -> float64 [4] = (sum of IoU over TP, TP, FP, FN).
    """
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"GT panoptic map has shape {gt_ids.shape}, prediction {pred_ids.shape}")
    joint = gt_ids.astype(np.int64) * _OFFSET + pred_ids.astype(np.int64)
    pairs, intersections = np.unique(joint, return_counts=True)
    gt_of, pred_of = pairs // _OFFSET, pairs % _OFFSET

    gt_area: dict[int, int] = {}
    pred_area: dict[int, int] = {}
    for g, p, inter in zip(gt_of.tolist(), pred_of.tolist(), intersections.tolist(), strict=True):
        gt_area[g] = gt_area.get(g, 0) + inter
        pred_area[p] = pred_area.get(p, 0) + inter
    for g in gt_area:
        if g != VOID and g not in gt_segments:
            raise KeyError(f"GT segment id {g} is in the PNG but not in segments_info")
    for p in pred_area:
        if p != VOID and p not in pred_segments:
            raise KeyError(f"predicted segment id {p} is in the map but not in segments_info")

    stats: PQStats = {}

    def stat(category: int) -> np.ndarray:
        if category not in stats:
            stats[category] = np.zeros(4, dtype=np.float64)
        return stats[category]

    void_inter: dict[int, int] = {}
    crowd_inter: dict[tuple[int, int], int] = {}  # (pred id, crowd GT id) -> intersection
    # The crowd region of a category: its last crowd segment, as panopticapi keeps one per category.
    crowd_of = {
        int(segment["category_id"]): g
        for g, segment in gt_segments.items()
        if segment.get("iscrowd", 0)
    }
    candidates = []
    for g, p, inter in zip(gt_of.tolist(), pred_of.tolist(), intersections.tolist(), strict=True):
        if p not in pred_segments:  # unlisted predicted id 0: void, never matched
            continue
        if g == VOID:
            void_inter[p] = void_inter.get(p, 0) + inter
        elif gt_segments[g].get("iscrowd", 0):
            crowd_inter[(p, g)] = inter
        else:
            candidates.append((g, p, inter))

    matched_gt: set[int] = set()
    matched_pred: set[int] = set()
    for g, p, inter in candidates:
        category = int(gt_segments[g]["category_id"])
        if category != int(pred_segments[p]["category_id"]):
            continue
        union = pred_area[p] + gt_area[g] - inter - void_inter.get(p, 0)
        iou = inter / union
        if iou > 0.5:
            s = stat(category)
            s[_IOU] += iou
            s[_TP] += 1
            matched_gt.add(g)
            matched_pred.add(p)

    for g, segment in gt_segments.items():
        if g not in matched_gt and not segment.get("iscrowd", 0):
            stat(int(segment["category_id"]))[_FN] += 1
    for p, segment in pred_segments.items():
        if p in matched_pred or p not in pred_area:
            continue
        category = int(segment["category_id"])
        ignored = void_inter.get(p, 0) + crowd_inter.get((p, crowd_of.get(category, VOID)), 0)
        if ignored / pred_area[p] > 0.5:
            continue
        stat(category)[_FP] += 1
    return stats


def accumulate(total: PQStats, stats: PQStats) -> None:
    """Add ``stats`` into ``total`` in place."""
    for category, values in stats.items():
        if category in total:
            total[category] = total[category] + values
        else:
            total[category] = values.copy()


def pq_average(
    stats: PQStats, categories: Mapping[int, Mapping[str, Any]], isthing: bool | None
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """PQ/SQ/RQ (fractions in [0, 1]) averaged over categories with TP + FP + FN > 0.

    Args:
        stats: accumulated per-category statistics.
        categories: dataset category id -> ``{"isthing", "name"}``.
        isthing: restrict to thing (True) or stuff (False) categories; None = all.

    Returns:
        ``({"pq", "sq", "rq", "n"}, {category id: {"pq", "sq", "rq"}})``.
    """
    for category in stats:
        if category not in categories:
            raise KeyError(f"category id {category} is not in the GT categories")
    pq = sq = rq = 0.0
    n = 0
    per_class: dict[int, dict[str, float]] = {}
    for category, info in categories.items():
        if isthing is not None and bool(info.get("isthing", 0)) != isthing:
            continue
        iou, tp, fp, fn = stats.get(category, np.zeros(4)).tolist()
        if tp + fp + fn == 0:
            continue
        n += 1
        denominator = tp + 0.5 * fp + 0.5 * fn
        class_pq = iou / denominator
        class_sq = iou / tp if tp > 0 else 0.0
        class_rq = tp / denominator
        per_class[category] = {"pq": class_pq, "sq": class_sq, "rq": class_rq}
        pq += class_pq
        sq += class_sq
        rq += class_rq
    if n == 0:
        return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def pq_results(
    stats: PQStats, categories: Mapping[int, Mapping[str, Any]], per_class: bool = False
) -> dict[str, float]:
    """Metrics dict: PQ, SQ, RQ (+ _th, _st), times 100; ``PQ-{name}`` per class if asked."""
    results: dict[str, float] = {}
    for suffix, isthing in (("", None), ("_th", True), ("_st", False)):
        summary, classes = pq_average(stats, categories, isthing)
        results[f"PQ{suffix}"] = 100 * summary["pq"]
        results[f"SQ{suffix}"] = 100 * summary["sq"]
        results[f"RQ{suffix}"] = 100 * summary["rq"]
        if per_class and isthing is None:
            for category, values in classes.items():
                name = categories[category].get("name", str(category))
                results[f"PQ-{name}"] = 100 * values["pq"]
    return results


def load_panoptic_json(path: str) -> dict[str, Any]:
    """A COCO panoptic JSON file (ground truth or predictions); a missing file is named."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"panoptic JSON not found: {path}")
    with open(path) as f:
        return json.load(f)


def _categories(gt: Mapping[str, Any], path: str) -> dict[int, dict[str, Any]]:
    if "categories" not in gt:
        raise KeyError(f"{path} has no 'categories' list")
    return {int(c["id"]): c for c in gt["categories"]}


def _segments_by_id(segments_info: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    return {int(s["id"]): s for s in segments_info}


def pq_compute_from_files(
    gt_json: str, gt_folder: str, pred_json: str, pred_folder: str, per_class: bool = False
) -> dict[str, float]:
    """PQ of COCO-format panoptic predictions (JSON + PNG folder) against the GT.

    Every image of ``pred_json`` must be in ``gt_json``; GT images without a prediction are
    ignored. Returns the metrics dict of ``pq_results``.
    """
    gt = load_panoptic_json(gt_json)
    categories = _categories(gt, gt_json)
    gt_by_image = {a["image_id"]: a for a in gt["annotations"]}
    stats: PQStats = {}
    for pred in load_panoptic_json(pred_json)["annotations"]:
        if pred["image_id"] not in gt_by_image:
            raise KeyError(f"{pred_json}: image_id {pred['image_id']!r} is not in {gt_json}")
        ann = gt_by_image[pred["image_id"]]
        accumulate(
            stats,
            pq_stats_single_image(
                read_panoptic_png(os.path.join(gt_folder, ann["file_name"])),
                _segments_by_id(ann["segments_info"]),
                read_panoptic_png(os.path.join(pred_folder, pred["file_name"])),
                _segments_by_id(pred["segments_info"]),
            ),
        )
    return pq_results(stats, categories, per_class)


def resolve_panoptic_gt(
    evaluator: str,
    dataset_name: str | None,
    gt_json: str | None,
    gt_folder: str | None,
    thing_map: Mapping[int, int] | None,
    stuff_map: Mapping[int, int] | None = None,
) -> tuple[str, str, Mapping[int, int] | None, Mapping[int, int] | None]:
    """Panoptic ground truth of an evaluator: explicit arguments first, then the metadata of
    ``dataset_name`` (``panoptic_json``, ``panoptic_root``, the dataset-id -> contiguous-id maps).

    Returns:
        ``(gt_json, gt_folder, thing_map, stuff_map)``.
    """
    if dataset_name is not None:
        from mask2former.data.catalog import MetadataCatalog

        meta = MetadataCatalog.get(dataset_name)
        gt_json = gt_json or meta.panoptic_json
        gt_folder = gt_folder or meta.panoptic_root
        if thing_map is None:
            thing_map = meta.thing_dataset_id_to_contiguous_id
        if stuff_map is None:
            stuff_map = getattr(meta, "stuff_dataset_id_to_contiguous_id", {})
    if gt_json is None or gt_folder is None:
        raise ValueError(f"{evaluator} needs dataset_name or gt_json and gt_folder")
    return gt_json, gt_folder, thing_map, stuff_map


class COCOPanopticEvaluator(DatasetEvaluator):
    """PQ of the model's ``panoptic_seg`` outputs; returns ``{"panoptic_seg": {...}}``.

    Build it from a registered dataset (``dataset_name``: metadata ``panoptic_json``,
    ``panoptic_root``, ``thing_dataset_id_to_contiguous_id``,
    ``stuff_dataset_id_to_contiguous_id``) or from the explicit keyword arguments, which take
    precedence. Inputs must carry ``image_id``. With ``output_dir`` the predictions are also
    written in COCO panoptic format (``panoptic_predictions.json`` and PNGs in
    ``panoptic_predictions/``).
    """

    def __init__(
        self,
        dataset_name: str | None = None,
        output_dir: str | None = None,
        *,
        gt_json: str | None = None,
        gt_folder: str | None = None,
        thing_dataset_id_to_contiguous_id: Mapping[int, int] | None = None,
        stuff_dataset_id_to_contiguous_id: Mapping[int, int] | None = None,
        per_class: bool = False,
        distributed: bool = True,
    ) -> None:
        gt_json, gt_folder, thing_dataset_id_to_contiguous_id, stuff_dataset_id_to_contiguous_id = (
            resolve_panoptic_gt(
                type(self).__name__,
                dataset_name,
                gt_json,
                gt_folder,
                thing_dataset_id_to_contiguous_id,
                stuff_dataset_id_to_contiguous_id,
            )
        )
        gt = load_panoptic_json(gt_json)
        self._categories = _categories(gt, gt_json)
        self._gt_by_image = {a["image_id"]: a for a in gt["annotations"]}
        self._gt_folder = gt_folder
        # Contiguous id -> dataset id, separately for things and stuff (identity if not given).
        self._thing_ids = {v: k for k, v in (thing_dataset_id_to_contiguous_id or {}).items()}
        self._stuff_ids = {v: k for k, v in (stuff_dataset_id_to_contiguous_id or {}).items()}
        self._output_dir = output_dir
        if output_dir:  # prediction PNGs take the GT's names: each must stay inside output_dir
            for a in gt["annotations"]:
                safe_relative(a["file_name"], f"{gt_json}, image_id {a['image_id']!r}")
        self._per_class = per_class
        self._distributed = distributed
        self.reset()

    def reset(self) -> None:
        self._stats: PQStats = {}
        self._predictions: list[dict[str, Any]] = []

    def _dataset_category(self, segment: Mapping[str, Any]) -> int:
        """Dataset category id of a predicted segment; as detectron2, a segment without
        ``isthing`` already carries a dataset id, one with it a contiguous id."""
        contiguous = int(segment["category_id"])
        isthing = segment.get("isthing")
        if isthing is None:
            return contiguous
        table = self._thing_ids if isthing else self._stuff_ids
        if contiguous in table:
            return int(table[contiguous])
        if not self._thing_ids and not self._stuff_ids:
            return contiguous
        raise KeyError(f"predicted contiguous category_id {contiguous} has no dataset id")

    def process(self, inputs: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            image_id = inp.get("image_id")
            if image_id not in self._gt_by_image:
                raise KeyError(f"image_id {image_id!r} is not in the panoptic GT JSON")
            if "panoptic_seg" not in out:
                raise KeyError(f"image_id {image_id!r}: output has no 'panoptic_seg'")
            seg, segments_info = out["panoptic_seg"]
            if segments_info is None:
                raise ValueError(f"image_id {image_id!r}: panoptic_seg needs a segments_info list")
            pred_ids = seg.cpu().numpy() if isinstance(seg, torch.Tensor) else np.asarray(seg)
            pred_segments = {
                int(s["id"]): {"category_id": self._dataset_category(s)} for s in segments_info
            }
            ann = self._gt_by_image[image_id]
            gt_ids = read_panoptic_png(os.path.join(self._gt_folder, ann["file_name"]))
            try:
                stats = pq_stats_single_image(
                    gt_ids, _segments_by_id(ann["segments_info"]), pred_ids, pred_segments
                )
            except (KeyError, ValueError) as err:
                raise type(err)(f"image_id {image_id!r}: {err}") from err
            accumulate(self._stats, stats)
            if self._output_dir:
                self._save_prediction(ann, pred_ids, pred_segments, segments_info)

    def _save_prediction(
        self,
        ann: Mapping[str, Any],
        pred_ids: np.ndarray,
        pred_segments: Mapping[int, Mapping[str, Any]],
        segments_info: Sequence[Mapping[str, Any]],
    ) -> None:
        folder = os.path.join(self._output_dir, "panoptic_predictions")
        file_name = os.path.splitext(ann["file_name"])[0] + ".png"
        png = Image.fromarray(id2rgb(pred_ids))
        atomic_write_path(os.path.join(folder, file_name), lambda tmp: png.save(tmp, format="PNG"))
        segments = []
        for s in segments_info:
            entry = {k: v for k, v in s.items() if k not in ("category_id", "isthing")}
            entry["id"] = int(s["id"])
            entry["category_id"] = pred_segments[int(s["id"])]["category_id"]
            segments.append(entry)
        self._predictions.append(
            {"image_id": ann["image_id"], "file_name": file_name, "segments_info": segments}
        )

    def evaluate(self) -> Results:
        stats, predictions = self._stats, self._predictions
        if self._distributed:
            gathered = comm.gather_lists([stats], predictions)
            if gathered is None:
                return {}
            stats = {}
            for part_stats in gathered[0]:
                accumulate(stats, part_stats)
            predictions = gathered[1]
        if self._output_dir:
            path = os.path.join(self._output_dir, "panoptic_predictions.json")
            atomic_write_bytes(path, json.dumps({"annotations": predictions}).encode())
            logger.info("Panoptic predictions written to %s", path)
        return {"panoptic_seg": pq_results(stats, self._categories, self._per_class)}
