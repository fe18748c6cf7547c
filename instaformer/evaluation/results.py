"""The end-of-evaluation summary: a one-row results table and ``eval_results.json``.

Columns follow the README: occlusion recall / precision / F1, depth WHDR distinct / overlap /
all, then panoptic PQ, SQ, RQ (things, stuff), mask AP, mIoU, and last the pair-level
occlusion scores. Only the columns whose metric is present are printed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

from mask2former.utils.atomic import atomic_write_bytes

logger = logging.getLogger(__name__)

NOT_AVAILABLE = "n/a"
# Results key of the parts evaluated with random weights (``--allow-random-init``): module ->
# number of state-dict entries ("" = the whole model).
RANDOM_INIT = "random_init"

# (task, metric, column header), in print order.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("occlusion_order", "recall", "Occ R"),
    ("occlusion_order", "precision", "Occ P"),
    ("occlusion_order", "f1", "Occ F1"),
    ("depth_order", "ovlX/WHDR_all", "WHDR distinct"),
    ("depth_order", "ovlO/WHDR_all", "WHDR overlap"),
    ("depth_order", "ovlOX/WHDR_all", "WHDR all"),
    ("panoptic_seg", "PQ", "PQ"),
    ("panoptic_seg", "SQ", "SQ"),
    ("panoptic_seg", "RQ", "RQ"),
    ("panoptic_seg", "PQ_th", "PQ th"),
    ("panoptic_seg", "PQ_st", "PQ st"),
    ("segm", "AP", "AP"),
    ("sem_seg", "mIoU", "mIoU"),
    ("occlusion_order", "micro_recall", "Occ R pairs"),
    ("occlusion_order", "micro_precision", "Occ P pairs"),
    ("occlusion_order", "micro_f1", "Occ F1 pairs"),
)


def describe_random_parts(parts: dict[str, int]) -> str:
    """``{module: tensors}`` left random (``""``: the whole model) as ``"m1 (8 tensors), ..."``."""
    return ", ".join(f"{m or 'the whole model'} ({n} tensors)" for m, n in parts.items())


def format_results_table(results: dict[str, dict[str, Any]]) -> str:
    """A two-line, pipe-separated table (header, values with 2 decimals) of the main metrics.

    An undefined metric (NaN: the evaluation set has no pair or segment it can score) is shown
    as ``n/a``. Results with :data:`RANDOM_INIT` get a last line naming the random parts.
    Returns an empty string when there is nothing to show.
    """
    warning = ""
    if results.get(RANDOM_INIT):
        parts = describe_random_parts(results[RANDOM_INIT])
        warning = (
            f"RANDOM WEIGHTS (--allow-random-init) in {parts}: not the metrics of a trained model"
        )
    headers, values = [], []
    for task, metric, header in COLUMNS:
        if metric in results.get(task, {}):
            headers.append(header)
            value = float(results[task][metric])
            values.append(f"{value:.2f}" if math.isfinite(value) else NOT_AVAILABLE)
    if not headers:
        return warning
    widths = [max(len(h), len(v)) for h, v in zip(headers, values, strict=True)]
    head = " | ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))
    row = " | ".join(v.rjust(w) for v, w in zip(values, widths, strict=True))
    table = f"| {head} |\n| {row} |"
    return f"{table}\n{warning}" if warning else table


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # NumPy / torch scalars
        return _json_safe(value.item())
    return value


def write_results(results: dict[str, dict[str, Any]], output_dir: str) -> str:
    """Write ``results`` to ``{output_dir}/eval_results.json`` (NaN/inf as null) atomically;
    return the path."""
    path = os.path.join(output_dir, "eval_results.json")
    text = json.dumps(_json_safe(results), indent=2, allow_nan=False)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def report_results(results: dict[str, dict[str, Any]], output_dir: str | None = None) -> str:
    """Log the results table (and every metric), write the JSON if ``output_dir``; return the
    table."""
    table = format_results_table(results)
    if table:
        note = (
            f"\n{NOT_AVAILABLE}: undefined, nothing in the evaluation set to score (see the "
            "evaluator's warning above)"
            if NOT_AVAILABLE in table
            else ""
        )
        logger.info("Evaluation results:\n%s%s", table, note)
    for task, metrics in results.items():
        logger.info("%s: %s", task, ", ".join(f"{k}={v}" for k, v in metrics.items()))
    if output_dir:
        logger.info("Results written to %s", write_results(results, output_dir))
    return table
