"""Builders of the order heads from ``MODEL.GEOMETRIC_PREDICTOR.*`` (docs/reference.md [IF 5.1]).

``build_order_head(cfg)`` looks ``NAME`` up in ``ORDER_HEAD_REGISTRY``; ``NAME = ""`` means no
order head. Registered entries: ``"GeometricTransformer"`` (holistic) and ``"PairwiseResNet"``
(InstaOrderNet). An entry is an :class:`~instaformer.modeling.order.contract.OrderHead` subclass
with a ``from_config(cfg)`` classmethod, or a builder function ``fn(cfg) -> OrderHead``. The
reference's options with one released value (``METHOD``, ``FUSE``, ``MASK_NON_MASK_VALUES``,
``PAIRWISE``) are retired keys of the config (:mod:`instaformer.config`): other values are refused
when the config is read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from instaformer.instaordernet.network import InstaOrderResNet, load_instaordernet_checkpoint
from instaformer.modeling.order.contract import OrderHead
from instaformer.modeling.order.geometric_transformer import GeometricTransformer
from instaformer.modeling.order.pairwise import PairwiseResNet
from instaformer.modeling.registry import ORDER_HEAD_REGISTRY
from instaformer.vocabulary import tasks_from_code
from mask2former.config import CfgNode

__all__ = ["build_order_head", "order_tasks"]

logger = logging.getLogger(__name__)

# Released file name of the InstaOrderNet weights inside INSTAORDERNET_WEIGHTS_PATH.
INSTAORDERNET_FILE = "InstaOrder_InstaOrderNet_{task}.pth.tar"


def order_tasks(cfg: CfgNode) -> tuple[str, ...]:
    """The order tasks of ``cfg`` (``MODEL.GEOMETRIC_PREDICTOR.TASK``)."""
    return tasks_from_code(cfg.MODEL.GEOMETRIC_PREDICTOR.TASK, "MODEL.GEOMETRIC_PREDICTOR.TASK")


def build_order_head(cfg: CfgNode) -> OrderHead | None:
    """The order head named by ``MODEL.GEOMETRIC_PREDICTOR.NAME``, or None when NAME is ""."""
    gp = cfg.MODEL.GEOMETRIC_PREDICTOR
    name = gp.NAME
    if not name:
        return None
    entry = ORDER_HEAD_REGISTRY.get(name)
    from_config = getattr(entry, "from_config", None)
    head = entry(**from_config(cfg)) if from_config is not None else entry(cfg)
    if not isinstance(head, OrderHead):
        raise TypeError(
            f"MODEL.GEOMETRIC_PREDICTOR.NAME = {name!r} built a {type(head).__name__}, "
            "not an OrderHead (instaformer.modeling.order.contract)"
        )
    return head


def _register(name: str) -> Callable:
    """Register a builder ``fn(cfg) -> OrderHead`` under ``name`` (the head's class name)."""

    def decorator(fn: Callable) -> Callable:
        fn.__name__ = name  # fvcore registers by __name__
        ORDER_HEAD_REGISTRY.register(fn)
        return fn

    return decorator


@_register("GeometricTransformer")
def build_geometric_transformer(cfg: CfgNode) -> GeometricTransformer:
    gp = cfg.MODEL.GEOMETRIC_PREDICTOR
    return GeometricTransformer(
        tasks=order_tasks(cfg),
        mask_dim=cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
        d_model=gp.D_MODEL,
        num_heads=gp.NUM_HEADS,
        num_layers=gp.NUM_LAYERS,
        mlp_num_layers=gp.MLP_NUM_LAYERS,
        mlp_expansion=gp.MLP_EXPANSION,
        attn_before_pool=gp.ATTN_BEFORE_POOL,
        add_input_representations=gp.ADD_INPUT_REPRESENTATIONS,
        transpose_queries=gp.TRANSPOSE_QUERIES,
        chain_task_mlps=gp.CHAIN_TASK_MLPS,
    )


@_register("PairwiseResNet")
def build_pairwise_resnet(cfg: CfgNode) -> PairwiseResNet:
    gp = cfg.MODEL.GEOMETRIC_PREDICTOR
    network = InstaOrderResNet(tasks=order_tasks(cfg))
    if gp.USE_INSTAORDERNET_WEIGHTS and not gp.INSTAORDERNET_WEIGHTS_PATH:
        logger.warning(
            "MODEL.GEOMETRIC_PREDICTOR.USE_INSTAORDERNET_WEIGHTS is True but "
            "MODEL.GEOMETRIC_PREDICTOR.INSTAORDERNET_WEIGHTS_PATH is empty: the pairwise head's "
            "InstaOrderNet is not initialised from InstaOrderNet weights; its weights come from "
            "MODEL.WEIGHTS (released pairwise checkpoints hold them) or stay random"
        )
    if gp.USE_INSTAORDERNET_WEIGHTS and gp.INSTAORDERNET_WEIGHTS_PATH:
        path = gp.INSTAORDERNET_WEIGHTS_PATH
        if os.path.isdir(path):
            path = os.path.join(path, INSTAORDERNET_FILE.format(task=gp.TASK))
        load_instaordernet_checkpoint(network, path)
    return PairwiseResNet(network=network, input_size=gp.INPUT_SIZE)
