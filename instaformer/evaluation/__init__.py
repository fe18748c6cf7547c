"""Evaluators of InstaFormer: occlusion and depth order, plus the Mask2Former ones."""

from instaformer.evaluation.depth import DepthEvaluator
from instaformer.evaluation.occlusion import OcclusionEvaluator

__all__ = ["DepthEvaluator", "OcclusionEvaluator"]
