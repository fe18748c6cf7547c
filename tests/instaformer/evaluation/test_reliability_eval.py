"""Order evaluators: undefined values are refused, and nothing to score reads "n/a", not 0/100."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from instaformer.evaluation import DepthEvaluator, OcclusionEvaluator
from instaformer.evaluation.depth import SUBSETS
from instaformer.evaluation.results import format_results_table, report_results


def _depth_inputs(gt: list, pred: list, overlap: int = 0) -> tuple[dict, dict]:
    gt_arr = np.array(gt)
    k = len(gt_arr)
    off = ~np.eye(k, dtype=bool)
    return (
        {
            "image_id": 5,
            "depth_matrix": gt_arr,
            "overlap_matrix": np.where(off, overlap, -1),
            "count_matrix": np.where(off, 2, -1),
        },
        {"depth": np.array(pred)},
    )


@pytest.mark.parametrize(
    ("gt", "pred", "message"),
    [
        ([[-1, 7], [0, -1]], [[-1, 1], [0, -1]], r"GT depth values .* got \[7\]"),
        ([[-1, 1], [7, -1]], [[-1, 1], [0, -1]], r"GT depth values .* got \[7\]"),
        ([[-1, 1], [0, -1]], [[-1, 7], [0, -1]], r"predicted depth .* got \[7\]"),
    ],
)
def test_depth_labels_the_metric_does_not_define_are_refused(gt, pred, message) -> None:
    inp, out = _depth_inputs(gt, pred)
    with pytest.raises(ValueError, match=rf"image_id=5: {message}"):
        DepthEvaluator().process([inp], [out])
    bad_overlap = _depth_inputs([[-1, 1], [0, -1]], [[-1, 1], [0, -1]], overlap=3)
    with pytest.raises(ValueError, match=r"overlap values .* got \[3\]"):
        DepthEvaluator().process([bad_overlap[0]], [bad_overlap[1]])


def test_subsets_without_a_labelled_pair_are_nan_with_a_warning(caplog) -> None:
    evaluator = DepthEvaluator()
    inp, out = _depth_inputs([[-1, 1], [0, -1]], [[-1, 1], [0, -1]])  # one distinct, unequal pair
    evaluator.process([inp], [out])
    with caplog.at_level(logging.WARNING):
        result = evaluator.evaluate()["depth_order"]
    assert result["ovlX/WHDR_all"] == 0.0 and result["ovlX/WHDR_neq"] == 0.0
    undefined = [name for name in SUBSETS if np.isnan(result[name])]
    assert undefined == [
        "ovlX/WHDR_eq",
        "ovlO/WHDR_eq",
        "ovlO/WHDR_neq",
        "ovlO/WHDR_all",
        "ovlOX/WHDR_eq",
    ]
    assert "n/a (NaN) for ovlX/WHDR_eq, ovlO/WHDR_eq" in caplog.text
    nothing = DepthEvaluator()
    nothing.process(*map(list, zip(_depth_inputs([[-1]], [[-1]]), strict=True)))
    assert all(np.isnan(nothing.evaluate()["depth_order"][name]) for name in SUBSETS)


def test_no_evaluable_pair_prints_na_and_says_why(tmp_path: Path, caplog) -> None:
    occlusion = OcclusionEvaluator()
    occlusion.process([{"occlusion_matrix": np.zeros((1, 1))}], [{"occlusion": np.zeros((1, 1))}])
    depth = DepthEvaluator()
    depth.process(*map(list, zip(_depth_inputs([[-1]], [[-1]]), strict=True)))
    with caplog.at_level(logging.INFO):
        results = {**occlusion.evaluate(), **depth.evaluate()}
        table = report_results(results, str(tmp_path))
    assert "100.00" not in table and "0.00" not in table
    assert table.splitlines()[1].replace(" ", "") == "|" + "n/a|" * 9
    assert "n/a: undefined, nothing in the evaluation set to score" in caplog.text
    assert "none of the 1 images has an evaluable pair" in caplog.text
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    assert saved["occlusion_order"]["f1"] is None and saved["depth_order"]["ovlOX/WHDR_all"] is None
    assert format_results_table({"occlusion_order": {"f1": 50.0}}).endswith("50.00 |")
