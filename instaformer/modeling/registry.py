"""Registry of order heads (``MODEL.GEOMETRIC_PREDICTOR.NAME``)."""

from fvcore.common.registry import Registry

ORDER_HEAD_REGISTRY = Registry("GEOMETRIC_PREDICTOR")
ORDER_HEAD_REGISTRY.__doc__ = (
    "Order heads predicting occlusion/depth relations between instances: OrderHead subclasses "
    "(instaformer.modeling.order.contract) with a ``from_config(cfg)`` classmethod returning "
    "their constructor's keyword arguments, or builders ``fn(cfg) -> OrderHead``. The "
    "meta-architecture stores the head as ``geometric_predictor``."
)
