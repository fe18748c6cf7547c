"""Order heads (holistic ``GeometricTransformer``, pairwise ``PairwiseResNet``), their losses and
query selection. Importing this package registers both heads in ``ORDER_HEAD_REGISTRY``."""

from instaformer.modeling.order.build import TASKS, build_order_head, order_tasks
from instaformer.modeling.order.geometric_transformer import (
    ORDER_TASK_CLASSES,
    GeometricTransformer,
)
from instaformer.modeling.order.losses import OrderCriterion, order_loss
from instaformer.modeling.order.pairwise import PairwiseResNet
from instaformer.modeling.order.selection import select_matched_queries, select_segment_queries

__all__ = [
    "ORDER_TASK_CLASSES",
    "TASKS",
    "GeometricTransformer",
    "OrderCriterion",
    "PairwiseResNet",
    "build_order_head",
    "order_loss",
    "order_tasks",
    "select_matched_queries",
    "select_segment_queries",
]
