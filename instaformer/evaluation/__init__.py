"""Evaluators of InstaFormer: occlusion and depth order, plus the Mask2Former ones.

``build_evaluators(cfg, dataset_name, output_dir)`` assembles what [IF 3.7] lists
for an order dataset: panoptic PQ, mask AP and semantic mIoU when the corresponding
``MODEL.MASK_FORMER.TEST.*_ON`` is set, occlusion and depth order when
``TEST.OCCLUSION_EVALUATION`` / ``TEST.DEPTH_EVALUATION`` are set.
"""

from __future__ import annotations

from fvcore.common.config import CfgNode

from instaformer.evaluation.depth import DepthEvaluator
from instaformer.evaluation.occlusion import OcclusionEvaluator
from instaformer.evaluation.results import format_results_table, report_results, write_results
from mask2former.evaluation import (
    COCOInstanceEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

__all__ = [
    "DepthEvaluator",
    "OcclusionEvaluator",
    "build_evaluators",
    "format_results_table",
    "report_results",
    "write_results",
]


def build_evaluators(cfg: CfgNode, dataset_name: str, output_dir: str | None) -> DatasetEvaluators:
    """The evaluators enabled by ``cfg`` for ``dataset_name``, merged in one.

    Args:
        cfg: full config (``instaformer.config.get_cfg()`` layout).
        dataset_name: a registered dataset (its metadata gives GT files and id maps).
        output_dir: where evaluators write predictions / per-image metrics (None: nothing).

    Raises:
        ValueError: no evaluator is enabled.
    """
    test = cfg.MODEL.MASK_FORMER.TEST
    evaluators: list[DatasetEvaluator] = []
    if test.PANOPTIC_ON:
        evaluators.append(COCOPanopticEvaluator(dataset_name, output_dir))
    if test.INSTANCE_ON:
        evaluators.append(COCOInstanceEvaluator(dataset_name, output_dir))
    if test.SEMANTIC_ON:
        evaluators.append(SemSegEvaluator(dataset_name))
    multi_scale = bool(cfg.TEST.MULTI_SCALE_EVALUATION)
    if cfg.TEST.OCCLUSION_EVALUATION:
        evaluators.append(
            OcclusionEvaluator(
                zero_division=cfg.TEST.OCCLUSION_ZERO_DIV,
                multi_scale_evaluation=multi_scale,
                output_dir=output_dir,
            )
        )
    if cfg.TEST.DEPTH_EVALUATION:
        evaluators.append(DepthEvaluator(multi_scale_evaluation=multi_scale, output_dir=output_dir))
    if not evaluators:
        raise ValueError(
            f"no evaluator enabled for dataset '{dataset_name}': set one of "
            "MODEL.MASK_FORMER.TEST.{PANOPTIC,INSTANCE,SEMANTIC}_ON, TEST.OCCLUSION_EVALUATION, "
            "TEST.DEPTH_EVALUATION"
        )
    return DatasetEvaluators(evaluators)
