"""``@configurable``: a constructor callable with plain keyword arguments or with a config.

``Cls(cfg, *args)`` calls ``Cls.from_config(cfg, *args)`` for the keyword arguments and then the
decorated ``__init__``; ``Cls(key=value, ...)`` calls ``__init__`` directly. Leaf modules never
see a config; only the top-level modules of an extension point (registered in a registry) use
this.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from fvcore.common.config import CfgNode

__all__ = ["configurable"]


def configurable(init: Callable[..., None]) -> Callable[..., None]:
    """Decorate ``__init__`` of a class that defines ``from_config(cls, cfg, ...) -> dict``."""

    @functools.wraps(init)
    def wrapped(self, *args: Any, **kwargs: Any) -> None:
        if args and isinstance(args[0], CfgNode):
            from_config = getattr(type(self), "from_config", None)
            if from_config is None:
                raise TypeError(f"{type(self).__name__} was given a config but has no from_config")
            init(self, **from_config(*args, **kwargs))
        else:
            init(self, *args, **kwargs)

    return wrapped
