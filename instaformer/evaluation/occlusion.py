"""Occlusion-order metrics: recall, precision and F1 of "i occludes j" over ordered pairs.

Shape shorthand: K annotated instances of one image, I evaluated images.

See docs/reference.md [IF 3.4] and [IF 3.6], [ION 9.1]. Per image, the K(K-1) off-diagonal
ordered pairs (i, j) are binary samples with positive class 1 (``occlusion[i, j] = 1`` means
instance i occludes instance j); GT cells equal to -1 are ignored. Two summaries are reported:

* macro (the reference's numbers): per-image recall/precision/F1 with ``zero_division`` for 0/0,
  times 100, averaged over images with equal weight;
* micro ("pair-level", not in the reference): TP/FP/FN summed over every pair of the dataset,
  then recall/precision/F1 once, times 100.

Images without an evaluable pair (K <= 1) are skipped and counted in ``num_skipped``; the
reference crashes on them. When no image has an evaluable pair every score is NaN ("n/a", with
a warning): there is nothing to score, and 0 or 100 would read as a result. See docs/metrics.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from instaformer.evaluation._matrix import check_same_shape, get_matrix, image_name
from instaformer.vocabulary import GT_MATRIX_KEYS, OCCLUDING, UNLABELLED
from mask2former.evaluation.evaluator import DatasetEvaluator, Results
from mask2former.utils import comm
from mask2former.utils.atomic import atomic_write_bytes

logger = logging.getLogger(__name__)

TASK = "occlusion_order"
_GT_KEY = GT_MATRIX_KEYS["occlusion"]  # ground-truth occlusion matrix of an input

# Columns of the per-image record array.
_N, _PAIRS, _TP, _FP, _FN = range(5)


def binary_scores(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, zero_division: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recall, precision and F1 in percent from counts (any matching shapes).

    ``recall = TP / (TP + FN)``, ``precision = TP / (TP + FP)``, ``F1 = 2TP / (2TP + FP + FN)``;
    a 0/0 gives ``zero_division`` (times 100), as scikit-learn's binary scores do.
    """
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        safe = np.where(den > 0, den, 1.0)
        return 100.0 * np.where(den > 0, num / safe, zero_division)

    return ratio(tp, tp + fn), ratio(tp, tp + fp), ratio(2 * tp, 2 * tp + fp + fn)


def occlusion_counts(gt: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, int]:
    """Counts of one image.

    Args:
        gt: Tensor[K, K] with values in {-1, 0, 1}; 1 = row occludes column, -1 = unlabelled.
        pred: Tensor[K, K] with values in {0, 1} off the diagonal (the diagonal is ignored).

    Returns:
        (number of evaluated pairs, TP, FP, FN).
    """
    k = gt.shape[0]
    off_diagonal = ~np.eye(k, dtype=bool)
    valid = off_diagonal & (gt != UNLABELLED)
    g = gt[valid]
    p = pred[valid]
    if ((g != 0) & (g != 1)).any():
        raise ValueError(f"GT occlusion values must be -1, 0 or 1, got {np.unique(g).tolist()}")
    if ((p != 0) & (p != 1)).any():
        raise ValueError(
            "predicted occlusion values must be 0 or 1 off the diagonal, "
            f"got {np.unique(p).tolist()}"
        )
    g = g == OCCLUDING
    p = p == OCCLUDING
    tp = int(np.count_nonzero(g & p))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(g)) - tp
    return int(g.size), tp, fp, fn


class OcclusionEvaluator(DatasetEvaluator):
    """Occlusion-order evaluator (reads ``input["occlusion_matrix"]``, ``output["occlusion"]``).

    Returns ``{"occlusion_order": {...}}`` with keys ``recall``, ``precision``, ``f1`` (macro, as
    the reference), ``micro_recall``, ``micro_precision``, ``micro_f1`` (pair level),
    ``num_images`` (evaluated) and ``num_skipped`` (no evaluable pair). With
    ``multi_scale_evaluation`` the same dict is added per instance count K under
    ``"occlusion_order/dim_{K}"``, for the counts that occur only.
    """

    def __init__(
        self,
        *,
        zero_division: float = 1,
        multi_scale_evaluation: bool = False,
        output_dir: str | None = None,
        distributed: bool = True,
    ) -> None:
        """
        Args:
            zero_division: value (0 or 1) of a per-image score whose denominator is 0
                (``TEST.OCCLUSION_ZERO_DIV``); also used for the micro scores.
            multi_scale_evaluation: add the breakdown by instance count
                (``TEST.MULTI_SCALE_EVALUATION``).
            output_dir: if set, per-image scores are written to
                ``{output_dir}/occlusion_per_image.json``.
            distributed: gather the statistics of all processes before evaluating.
        """
        if zero_division not in (0, 1):
            raise ValueError(f"zero_division must be 0 or 1, got {zero_division!r}")
        self._zero_division = float(zero_division)
        self._multi_scale = bool(multi_scale_evaluation)
        self._output_dir = output_dir
        self._distributed = distributed
        self.reset()

    def reset(self) -> None:
        self._counts: list[tuple[int, int, int, int, int]] = []
        self._image_ids: list[Any] = []

    def process(self, inputs: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            name = image_name(inp)
            try:
                gt = get_matrix(inp, _GT_KEY, "input")
                pred = get_matrix(out, "occlusion", "output")
                check_same_shape(gt, pred, _GT_KEY, "occlusion", name)
                pairs, tp, fp, fn = occlusion_counts(gt, pred)
            except (KeyError, ValueError) as err:
                raise type(err)(f"OcclusionEvaluator, {name}: {err}") from err
            self._counts.append((gt.shape[0], pairs, tp, fp, fn))
            self._image_ids.append(inp.get("image_id"))

    def _gathered(self) -> tuple[np.ndarray, list[Any]] | None:
        counts, image_ids = self._counts, self._image_ids
        if self._distributed:
            gathered = comm.gather_lists(counts, image_ids)
            if gathered is None:
                return None
            counts, image_ids = gathered
        return np.asarray(counts, dtype=np.int64).reshape(-1, 5), image_ids

    def summarize(self, counts: np.ndarray) -> dict[str, float]:
        """Macro and micro scores of the images in ``counts`` (int64 [I, 5] records)."""
        valid = counts[counts[:, _PAIRS] > 0]
        tp, fp, fn = valid[:, _TP], valid[:, _FP], valid[:, _FN]
        recall, precision, f1 = binary_scores(tp, fp, fn, self._zero_division)
        micro = binary_scores(tp.sum(), fp.sum(), fn.sum(), self._zero_division)
        num = len(valid)
        if num == 0:
            logger.warning(
                "OcclusionEvaluator: every score is n/a (NaN): none of the %d images has an "
                "evaluable pair (two annotated instances with a GT cell other than -1)",
                len(counts),
            )
            recall = precision = f1 = np.full(1, np.nan)
            micro = (np.nan, np.nan, np.nan)
        return {
            "recall": float(recall.mean()),
            "precision": float(precision.mean()),
            "f1": float(f1.mean()),
            "micro_recall": float(micro[0]),
            "micro_precision": float(micro[1]),
            "micro_f1": float(micro[2]),
            "num_images": num,
            "num_skipped": int(len(counts) - num),
        }

    def evaluate(self) -> Results:
        gathered = self._gathered()
        if gathered is None:
            return {}
        counts, image_ids = gathered
        skipped = int((counts[:, _PAIRS] == 0).sum())
        if skipped:
            logger.info(
                "OcclusionEvaluator: %d of %d images have no evaluable pair (fewer than 2 "
                "instances) and are skipped",
                skipped,
                len(counts),
            )
        results: Results = {TASK: self.summarize(counts)}
        if self._multi_scale:
            evaluated = counts[counts[:, _PAIRS] > 0]
            for k in np.unique(evaluated[:, _N]).tolist():
                results[f"{TASK}/dim_{k}"] = self.summarize(evaluated[evaluated[:, _N] == k])
        if self._output_dir:
            self._write_per_image(counts, image_ids)
        return results

    def _write_per_image(self, counts: np.ndarray, image_ids: list[Any]) -> None:
        recall, precision, f1 = binary_scores(
            counts[:, _TP], counts[:, _FP], counts[:, _FN], self._zero_division
        )
        rows = []
        for i, image_id in enumerate(image_ids):
            evaluated = bool(counts[i, _PAIRS] > 0)
            rows.append(
                {
                    "image_id": image_id,
                    "num_instances": int(counts[i, _N]),
                    "true_positives": int(counts[i, _TP]),
                    "false_positives": int(counts[i, _FP]),
                    "false_negatives": int(counts[i, _FN]),
                    "recall": float(recall[i]) if evaluated else None,
                    "precision": float(precision[i]) if evaluated else None,
                    "f1": float(f1[i]) if evaluated else None,
                }
            )
        path = os.path.join(self._output_dir, "occlusion_per_image.json")
        atomic_write_bytes(path, json.dumps(rows).encode("utf-8"))
        logger.info("Per-image occlusion scores written to %s", path)
