"""The repository's scripts (``tools/``, ``datasets/``) loaded by path for tests: the folders are
not packages."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.support import REPO


def load_script(relative_path: str) -> ModuleType:
    """Execute ``REPO / relative_path`` as a fresh module (named after the file) and return it."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the script {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
