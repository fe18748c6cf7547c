"""Order heads (holistic ``GeometricTransformer``, pairwise ``PairwiseResNet``), their losses and
query selection. Importing this package registers both heads in ``ORDER_HEAD_REGISTRY``; the
contract every head follows is :class:`OrderHead` / :class:`OrderInputs` (``contract``)."""

from instaformer.modeling.order.build import build_order_head, order_tasks
from instaformer.modeling.order.contract import OrderHead, OrderInputs
from instaformer.modeling.order.geometric_transformer import GeometricTransformer
from instaformer.modeling.order.losses import OrderCriterion, order_loss
from instaformer.modeling.order.pairwise import PairwiseResNet, low_image_from
from instaformer.modeling.order.selection import select_matched_queries, select_segment_queries

__all__ = [
    "GeometricTransformer",
    "OrderCriterion",
    "OrderHead",
    "OrderInputs",
    "PairwiseResNet",
    "build_order_head",
    "low_image_from",
    "order_loss",
    "order_tasks",
    "select_matched_queries",
    "select_segment_queries",
]
