"""Builders of the order heads from ``MODEL.GEOMETRIC_PREDICTOR.*`` (docs/reference.md [IF 5.1]).

``build_order_head(cfg)`` looks ``NAME`` up in ``ORDER_HEAD_REGISTRY``; ``NAME = ""`` means no
order head. Registered entries: ``"GeometricTransformer"`` (holistic) and ``"PairwiseResNet"``
(InstaOrderNet). An entry is an :class:`~instaformer.modeling.order.contract.OrderHead` subclass
with a ``from_config(cfg)`` classmethod, or a builder function ``fn(cfg) -> OrderHead``. Option
values the re-implementation does not support are refused here with the offending key, so a
config never silently runs something else than it says.

``PAIRWISE`` is a legacy key: ``NAME`` chooses the head. It is accepted when it agrees with
``NAME`` (True exactly for ``"PairwiseResNet"``) and refused otherwise.
"""

from __future__ import annotations

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
    pairwise = name == "PairwiseResNet"
    if bool(gp.PAIRWISE) != pairwise:
        raise ValueError(
            f"MODEL.GEOMETRIC_PREDICTOR.PAIRWISE = {gp.PAIRWISE!r} contradicts "
            f"MODEL.GEOMETRIC_PREDICTOR.NAME = {name!r}: PAIRWISE is a legacy key (NAME chooses "
            f"the head); leave it at its default or set it to {pairwise} with this NAME."
        )
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


def _require(cfg_node: CfgNode, key: str, supported: object, why: str) -> None:
    value = getattr(cfg_node, key)
    if value != supported:
        raise ValueError(
            f"MODEL.GEOMETRIC_PREDICTOR.{key} = {value!r} is not supported (only {supported!r}): "
            f"{why}"
        )


@_register("GeometricTransformer")
def build_geometric_transformer(cfg: CfgNode) -> GeometricTransformer:
    gp = cfg.MODEL.GEOMETRIC_PREDICTOR
    _require(gp, "METHOD", "stack", "'cat' and 'sep' were never released nor validated.")
    _require(gp, "FUSE", False, "Gram-matrix scores are symmetric and cannot express direction.")
    _require(
        gp,
        "MASK_NON_MASK_VALUES",
        True,
        "the released head always zeroes the attended features outside each mask.",
    )
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
    if gp.USE_INSTAORDERNET_WEIGHTS and gp.INSTAORDERNET_WEIGHTS_PATH:
        path = gp.INSTAORDERNET_WEIGHTS_PATH
        if os.path.isdir(path):
            path = os.path.join(path, INSTAORDERNET_FILE.format(task=gp.TASK))
        load_instaordernet_checkpoint(network, path)
    return PairwiseResNet(network=network, input_size=gp.INPUT_SIZE)
