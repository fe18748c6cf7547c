"""Shared test fixtures: deterministic CPU runs and the location of the reference fixtures."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton's interpreter runs the deformable-attention Triton kernels on CPU tensors
# (tests/test_ops_triton.py). Triton reads this when it is first imported, so it is set here,
# before any test imports it; nothing else in the suite runs Triton kernels on the CPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "reference"
PROJECT_LOGGERS = ("instaformer", "mask2former")  # the loggers setup_logger configures


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """The project's cache folder (downloads, exported ONNX graphs) is a temporary folder of the
    session, never the user's ``~/.cache/instaformer``; a test may point it elsewhere."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INSTAFORMER_CACHE", str(tmp_path_factory.mktemp("instaformer-cache")))
        yield


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Undo what a test's entry point did to logging (``setup_logger``, ``basicConfig``).

    Their stream handlers hold the test's captured stdout/stderr, closed once the test ends, and
    ``setup_logger`` stops the project loggers from propagating to pytest's capture: left in
    place, they would break the logging assertions of later tests in the same process.
    """
    root = logging.getLogger()
    root_handlers = list(root.handlers)
    yield
    for handler in root.handlers[:]:
        if handler not in root_handlers:
            root.removeHandler(handler)
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        for handler in logger.handlers[:]:
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``tests/data/reference``: manifests, parity fixtures and evaluator cases of the reference."""
    return REFERENCE


@pytest.fixture(scope="session")
def synthetic_datasets(tmp_path_factory) -> Path:
    """A small synthetic twin (12 train, 4 val images, 64 px) in ``<root>/synthetic_instaorder``.

    Returns the dataset root to use as ``DETECTRON2_DATASETS``.
    """
    from instaformer.data import make_synthetic_dataset
    from instaformer.data.datasets import SYNTHETIC_SUBDIR

    root = tmp_path_factory.mktemp("datasets")
    make_synthetic_dataset(
        str(root / SYNTHETIC_SUBDIR), num_train=12, num_val=4, image_size=64, seed=0
    )
    return root
