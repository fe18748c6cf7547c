"""The web demo (``demo/app.py``, not a package) loaded once per process, and a free local port."""

from __future__ import annotations

import functools
import importlib.util
import socket
import sys
from types import ModuleType

from tests.support import REPO


@functools.cache
def load_app() -> ModuleType:
    """``demo/app.py`` as the module ``instaformer_app`` (one instance for every test module)."""
    spec = importlib.util.spec_from_file_location("instaformer_app", REPO / "demo" / "app.py")
    if spec is None or spec.loader is None:
        raise ImportError("cannot load demo/app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
