"""Standalone InstaOrderNet (o, d, od): network, pair data, training, inference, baselines.

Importing this package registers the "InstaOrderNet" meta-architecture (``META_ARCH_REGISTRY``).
Entry points for the training script and the demo (see docs/instaordernet.md):

* :func:`build_train_loader` ``(cfg, start_iter)``, :func:`build_test_loader`
  ``(cfg, dataset_name)``, :func:`build_evaluators` ``(cfg, dataset_name, output_dir)``;
* :func:`load_instaordernet_weights` ``(cfg, model, path)``: released ``.pth.tar`` files or project
  checkpoints;
* :func:`predict_orders` ``(model, image, masks)``: orders between user-given masks;
* :class:`MonocularDepthOrder`: depth order from any depth-map callable (per-mask median depth).
"""

from instaformer.instaordernet.data import (
    InstaOrderNetMapper,
    build_evaluators,
    build_test_loader,
    build_train_loader,
)
from instaformer.instaordernet.depth_baseline import MonocularDepthOrder
from instaformer.instaordernet.meta_arch import InstaOrderNet, load_instaordernet_weights
from instaformer.instaordernet.predict import predict_orders

__all__ = [
    "InstaOrderNet",
    "InstaOrderNetMapper",
    "MonocularDepthOrder",
    "build_evaluators",
    "build_test_loader",
    "build_train_loader",
    "load_instaordernet_weights",
    "predict_orders",
]
