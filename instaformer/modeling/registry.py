"""Registry of order heads (``MODEL.GEOMETRIC_PREDICTOR.NAME``)."""

from fvcore.common.registry import Registry

ORDER_HEAD_REGISTRY = Registry("GEOMETRIC_PREDICTOR")
ORDER_HEAD_REGISTRY.__doc__ = (
    "Order heads predicting occlusion/depth relations between instances. Entries are called as "
    "``fn(cfg)`` and return an ``nn.Module`` that the meta-architecture stores as "
    "``geometric_predictor``."
)
