"""Evaluators (detectron2 protocol) and the inference loop."""

from mask2former.evaluation.evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_context,
    inference_on_dataset,
)
from mask2former.evaluation.instance import COCOInstanceEvaluator
from mask2former.evaluation.panoptic import COCOPanopticEvaluator, pq_compute_from_files
from mask2former.evaluation.semantic import SemSegEvaluator

__all__ = [
    "COCOInstanceEvaluator",
    "COCOPanopticEvaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "SemSegEvaluator",
    "inference_context",
    "inference_on_dataset",
    "pq_compute_from_files",
]
