"""InstaOrder datasets, the ``instaorder_panoptic`` mapper and the synthetic twin.

Importing this package registers ``instaorder_2017_{train,val}_panoptic`` (InstaFormer) and
``instaorder_2017_{train,val}`` (InstaOrderNet) under ``$DETECTRON2_DATASETS`` (read when the
data is loaded). The synthetic twin is registered on demand with
:func:`register_synthetic_instaorder`.
"""

from __future__ import annotations

from typing import Any

from instaformer.data.datasets import (
    datasets_root,
    load_instaorder_json,
    load_instaorder_panoptic_json,
    register_all_instaorder,
    register_instaorder,
    register_instaorder_panoptic,
)
from instaformer.data.io import DataError
from instaformer.data.mapper import InstaOrderPanopticMapper
from instaformer.data.synthetic import make_synthetic_dataset, register_synthetic_instaorder

__all__ = [
    "DataError",
    "InstaOrderPanopticMapper",
    "build_dataset_mapper",
    "datasets_root",
    "load_instaorder_json",
    "load_instaorder_panoptic_json",
    "make_synthetic_dataset",
    "register_all_instaorder",
    "register_instaorder",
    "register_instaorder_panoptic",
    "register_synthetic_instaorder",
]

DATASET_MAPPERS = {"instaorder_panoptic": InstaOrderPanopticMapper}
"""``INPUT.DATASET_MAPPER_NAME`` -> mapper class (with a ``from_config(cfg, is_train)``)."""


def build_dataset_mapper(cfg: Any, is_train: bool) -> Any:
    """The mapper named by ``INPUT.DATASET_MAPPER_NAME``, built from ``cfg``."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in DATASET_MAPPERS:
        raise KeyError(
            f"INPUT.DATASET_MAPPER_NAME {name!r} is unknown; available: {sorted(DATASET_MAPPERS)}"
        )
    mapper_cls = DATASET_MAPPERS[name]
    return mapper_cls(**mapper_cls.from_config(cfg, is_train))


register_all_instaorder()
