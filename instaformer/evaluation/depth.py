"""Depth-order metric: weighted human disagreement rate (WHDR) over unordered instance pairs.

Shape shorthand: K annotated instances of one image, I evaluated images.

The reference's metric (docs/reference.md [IF 3.5], [ION 9.2]), so that published numbers
compare. Per image, the pairs i < j (strict upper triangle) with a label (GT depth in {0, 1, 2}
and overlap flag in {0, 1}; -1 = unlabelled or removed) are weighted ``w = 2 / count``. For a
subset S of them

    WHDR_S = 100 * sum_S w * [pred != gt] / sum_S w        (undefined when S is empty)

for S = overlap filter x label filter: ``ovlX`` (overlap 0, "distinct"), ``ovlO`` (overlap 1),
``ovlOX`` (both) x ``eq`` (gt 2), ``neq`` (gt 0/1), ``all``. The dataset value of a subset is
the exact mean over the images where it is defined (the reference divides by count + 1e-6),
and NaN ("n/a", with a warning naming the subset) when no image defines it: the reference's 0.0
would read as a perfect score. See docs/metrics.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from instaformer.evaluation._matrix import check_same_shape, get_matrix, image_name
from instaformer.vocabulary import DEPTH_SAME, GT_MATRIX_KEYS
from mask2former.evaluation.evaluator import DatasetEvaluator, Results
from mask2former.utils import comm
from mask2former.utils.atomic import atomic_write_bytes

logger = logging.getLogger(__name__)

TASK = "depth_order"
_GT_KEY = GT_MATRIX_KEYS["depth"]  # ground-truth depth matrix of an input

# A labelled pair falls in one of four cells: index = 2 * overlap + (gt == DEPTH_SAME).
_OVERLAP_CELLS = {"ovlX": (0, 1), "ovlO": (2, 3), "ovlOX": (0, 1, 2, 3)}
_LABEL_CELLS = {"eq": (1, 3), "neq": (0, 2), "all": (0, 1, 2, 3)}
SUBSETS: tuple[str, ...] = tuple(f"{o}/WHDR_{e}" for o in _OVERLAP_CELLS for e in _LABEL_CELLS)


def _subset_masks() -> np.ndarray:
    """bool [9, 4]: which of the four cells each subset (in ``SUBSETS`` order) contains."""
    masks = np.zeros((len(SUBSETS), 4), dtype=bool)
    for s, name in enumerate(SUBSETS):
        ovl, label = name.split("/WHDR_")
        masks[s, sorted(set(_OVERLAP_CELLS[ovl]) & set(_LABEL_CELLS[label]))] = True
    return masks


_MASKS = _subset_masks().astype(np.float64)


@lru_cache(maxsize=64)
def _upper(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(k, 1)


def depth_cell_sums(
    gt: np.ndarray, overlap: np.ndarray, count: np.ndarray, pred: np.ndarray
) -> np.ndarray:
    """Weighted error and weight sums of one image, per cell.

    Args:
        gt: Tensor[K, K] GT depth: 1 = row nearer than column, 0 = farther, 2 = same depth,
            -1 = no label. Only i < j is read.
        overlap: Tensor[K, K] 1 = the two depth extents overlap, 0 = distinct, -1 = excluded.
        count: Tensor[K, K] number of annotators of the pair (>= 1 on labelled pairs).
        pred: Tensor[K, K] predicted depth in {0, 1, 2} (same meaning as ``gt``).

    Returns:
        float64 [8]: weighted errors of the cells (distinct-neq, distinct-eq, overlap-neq,
        overlap-eq), then their weight sums in the same order.
    """
    off_diagonal = ~np.eye(gt.shape[0], dtype=bool)
    _check_values(gt[off_diagonal], (-1, 0, 1, 2), "GT depth")
    _check_values(overlap[off_diagonal], (-1, 0, 1), "overlap")
    rows, cols = _upper(gt.shape[0])
    g = gt[rows, cols]
    v = overlap[rows, cols]
    valid = (g >= 0) & (v >= 0)
    g = g[valid]
    v = v[valid]
    c = count[rows, cols][valid].astype(np.float64)
    if (c <= 0).any():
        raise ValueError(f"count must be >= 1 on labelled pairs, got {np.unique(c).tolist()}")
    weight = 2.0 / c
    p = pred[rows, cols][valid]
    _check_values(p, (0, 1, 2), "predicted depth (labelled pairs)")
    wrong = p != g
    cell = 2 * v.astype(np.int64) + (g == DEPTH_SAME)
    errors = np.bincount(cell, weights=weight * wrong, minlength=4)
    weights = np.bincount(cell, weights=weight, minlength=4)
    return np.concatenate([errors, weights])


def _check_values(values: np.ndarray, allowed: tuple[int, ...], what: str) -> None:
    """Refuse values outside ``allowed`` (the labels the metric defines)."""
    bad = ~np.isin(values, allowed)
    if bad.any():
        raise ValueError(
            f"{what} values must be in {{{', '.join(map(str, allowed))}}}, got "
            f"{np.unique(values[bad]).tolist()} (values the metric does not define)"
        )


def whdr_per_image(sums: np.ndarray) -> np.ndarray:
    """WHDR of each subset per image (NaN where undefined).

    Args:
        sums: float64 [I, 8] from ``depth_cell_sums``.

    Returns:
        float64 [I, 9] in ``SUBSETS`` order.
    """
    errors = sums[:, :4] @ _MASKS.T
    weights = sums[:, 4:] @ _MASKS.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(weights > 0, 100.0 * errors / np.where(weights > 0, weights, 1.0), np.nan)


class DepthEvaluator(DatasetEvaluator):
    """Depth-order evaluator.

    Reads ``input["depth_matrix"]``, ``input["overlap_matrix"]``, ``input["count_matrix"]`` and
    ``output["depth"]`` (Tensor[K, K] each). Returns ``{"depth_order": {...}}`` with the nine
    ``"{ovlX|ovlO|ovlOX}/WHDR_{eq|neq|all}"`` values, ``num_images`` (with at least one
    labelled pair) and ``num_skipped``. With ``multi_scale_evaluation`` the same dict is added
    per instance count K under ``"depth_order/dim_{K}"``, for the counts that occur only.
    """

    def __init__(
        self,
        *,
        multi_scale_evaluation: bool = False,
        output_dir: str | None = None,
        distributed: bool = True,
    ) -> None:
        """
        Args:
            multi_scale_evaluation: add the breakdown by instance count
                (``TEST.MULTI_SCALE_EVALUATION``).
            output_dir: if set, per-image WHDR values are written to
                ``{output_dir}/depth_per_image.json``.
            distributed: gather the statistics of all processes before evaluating.
        """
        self._multi_scale = bool(multi_scale_evaluation)
        self._output_dir = output_dir
        self._distributed = distributed
        self.reset()

    def reset(self) -> None:
        self._sums: list[np.ndarray] = []
        self._sizes: list[int] = []
        self._image_ids: list[Any] = []

    def process(self, inputs: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            name = image_name(inp)
            try:
                gt = get_matrix(inp, _GT_KEY, "input")
                overlap = get_matrix(inp, "overlap_matrix", "input")
                count = get_matrix(inp, "count_matrix", "input")
                pred = get_matrix(out, "depth", "output")
                check_same_shape(gt, overlap, _GT_KEY, "overlap_matrix", name)
                check_same_shape(gt, count, _GT_KEY, "count_matrix", name)
                check_same_shape(gt, pred, _GT_KEY, "depth", name)
                sums = depth_cell_sums(gt, overlap, count, pred)
            except (KeyError, ValueError) as err:
                raise type(err)(f"DepthEvaluator, {name}: {err}") from err
            self._sums.append(sums)
            self._sizes.append(gt.shape[0])
            self._image_ids.append(inp.get("image_id"))

    @staticmethod
    def summarize(per_image: np.ndarray) -> dict[str, float]:
        """Dataset values from per-image WHDR (float64 [I, 9], NaN = undefined); a subset that no
        image defines is NaN."""
        defined = ~np.isnan(per_image)
        num_defined = defined.sum(axis=0)
        totals = np.where(defined, per_image, 0.0).sum(axis=0)
        means = np.where(num_defined > 0, totals / np.maximum(num_defined, 1), np.nan)
        result: dict[str, float] = {name: float(m) for name, m in zip(SUBSETS, means, strict=True)}
        evaluated = int(defined.any(axis=1).sum())
        result["num_images"] = evaluated
        result["num_skipped"] = int(len(per_image) - evaluated)
        return result

    def evaluate(self) -> Results:
        sums, sizes, image_ids = self._sums, self._sizes, self._image_ids
        if self._distributed:
            gathered = comm.gather_lists(sums, sizes, image_ids)
            if gathered is None:
                return {}
            sums, sizes, image_ids = gathered
        per_image = whdr_per_image(np.asarray(sums, dtype=np.float64).reshape(-1, 8))
        sizes_arr = np.asarray(sizes, dtype=np.int64)

        results: Results = {TASK: self.summarize(per_image)}
        empty = [SUBSETS[s] for s in np.flatnonzero(np.isnan(per_image).all(axis=0))]
        if empty:
            logger.warning(
                "DepthEvaluator: n/a (NaN) for %s: no image of the evaluation set has a labelled "
                "pair in %s",
                ", ".join(empty),
                "it" if len(empty) == 1 else "them",
            )
        if self._multi_scale:
            evaluated = ~np.isnan(per_image).all(axis=1)
            for k in np.unique(sizes_arr[evaluated]).tolist():
                results[f"{TASK}/dim_{k}"] = self.summarize(per_image[evaluated & (sizes_arr == k)])
        if self._output_dir:
            self._write_per_image(per_image, sizes, image_ids)
        return results

    def _write_per_image(self, per_image: np.ndarray, sizes: list[int], image_ids: list) -> None:
        rows = []
        for i, image_id in enumerate(image_ids):
            row: dict[str, Any] = {"image_id": image_id, "num_instances": int(sizes[i])}
            for s, name in enumerate(SUBSETS):
                value = per_image[i, s]
                row[name] = None if np.isnan(value) else float(value)
            rows.append(row)
        path = os.path.join(self._output_dir, "depth_per_image.json")
        atomic_write_bytes(path, json.dumps(rows).encode("utf-8"))
        logger.info("Per-image depth WHDR written to %s", path)
