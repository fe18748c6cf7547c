"""Evaluator protocol, inference loop, evaluator builder and the results table / JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from instaformer.config import get_cfg
from instaformer.evaluation import (
    DepthEvaluator,
    OcclusionEvaluator,
    build_evaluators,
    format_results_table,
    report_results,
)
from mask2former.evaluation import DatasetEvaluator, DatasetEvaluators, inference_on_dataset


class _CopyGT(nn.Module):
    """Predicts the GT occlusion matrix; records the mode and grad state it ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, batch: list[dict]) -> list[dict]:
        self.seen.append((self.training, torch.is_grad_enabled()))
        return [{"occlusion": x["occlusion_matrix"].clone()} for x in batch]


class _Fixed(DatasetEvaluator):
    def __init__(self, results: dict) -> None:
        self._results = results

    def evaluate(self) -> dict:
        return self._results


def _batches() -> list[list[dict]]:
    torch.manual_seed(0)
    batches = []
    for b in range(4):
        batch = []
        for i in range(2):
            occ = (torch.rand(4, 4) < 0.3).long()
            occ.fill_diagonal_(0)
            batch.append({"image_id": 2 * b + i, "occlusion_matrix": occ})
        batches.append(batch)
    return batches


def test_inference_on_dataset_restores_mode_and_evaluates() -> None:
    model = _CopyGT()
    model.train()
    results = inference_on_dataset(model, _batches(), OcclusionEvaluator())
    assert model.training
    assert model.seen and all(mode == (False, False) for mode in model.seen)
    assert results["occlusion_order"]["f1"] == pytest.approx(100.0)
    assert results["occlusion_order"]["num_images"] == 8


def test_inference_on_dataset_accepts_a_list_and_none() -> None:
    model = _CopyGT().eval()
    results = inference_on_dataset(model, _batches(), [OcclusionEvaluator()])
    assert "occlusion_order" in results
    assert not model.training
    assert inference_on_dataset(model, _batches(), None) == {}


def test_dataset_evaluators_merge_and_reject_duplicates() -> None:
    merged = DatasetEvaluators([_Fixed({"a": {"x": 1.0}}), _Fixed({"b": {"y": 2.0}})])
    assert merged.evaluate() == {"a": {"x": 1.0}, "b": {"y": 2.0}}
    with pytest.raises(ValueError, match="task key 'a'"):
        DatasetEvaluators([_Fixed({"a": {"x": 1.0}}), _Fixed({"a": {"x": 2.0}})]).evaluate()


def test_build_evaluators_follows_config() -> None:
    cfg = get_cfg()
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = False
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    with pytest.raises(ValueError, match="no evaluator enabled"):
        build_evaluators(cfg, "any", None)
    cfg.TEST.OCCLUSION_EVALUATION = True
    cfg.TEST.DEPTH_EVALUATION = True
    cfg.TEST.OCCLUSION_ZERO_DIV = 0
    evaluators = build_evaluators(cfg, "any", None).evaluators
    assert [type(e) for e in evaluators] == [OcclusionEvaluator, DepthEvaluator]
    # zero_division reaches the evaluator: all-zero GT and prediction give 0 instead of 100.
    evaluators[0].process(
        [{"occlusion_matrix": np.zeros((3, 3))}], [{"occlusion": np.zeros((3, 3))}]
    )
    assert evaluators[0].evaluate()["occlusion_order"]["recall"] == 0.0


def test_results_table_order_and_json(tmp_path: Path) -> None:
    results = {
        "panoptic_seg": {"PQ": 50.0, "SQ": 80.0, "RQ": 62.5},
        "depth_order": {"ovlX/WHDR_all": 8.1, "ovlO/WHDR_all": 24.9, "ovlOX/WHDR_all": 13.7},
        "occlusion_order": {
            "recall": 89.0,
            "precision": 76.0,
            "f1": 79.6,
            "micro_f1": float("nan"),
        },
    }
    table = report_results(results, str(tmp_path))
    header = [h.strip() for h in table.splitlines()[0].strip("| ").split("|")]
    assert header == [
        "Occ R",
        "Occ P",
        "Occ F1",
        "WHDR distinct",
        "WHDR overlap",
        "WHDR all",
        "PQ",
        "SQ",
        "RQ",
        "Occ F1 pairs",
    ]
    assert "79.60" in table.splitlines()[1]
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    assert saved["depth_order"]["ovlO/WHDR_all"] == 24.9
    assert saved["occlusion_order"]["micro_f1"] is None
    assert format_results_table({}) == ""
