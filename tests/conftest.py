"""Shared test fixtures: deterministic CPU runs and the location of the reference fixtures."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from mask2former.utils.threads import available_cpus
from tests.support import REFERENCE

# Without a GPU, Triton's interpreter runs the deformable-attention Triton kernels on CPU tensors
# (tests/mask2former/modeling/ops/test_ops_triton.py). Triton reads this when it is first
# imported, so it is set here, before any test imports it; nothing else in the suite runs Triton
# kernels on the CPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist (the README's test command runs 2 workers), each worker takes its share of
# the cores for torch's threads, so that the workers' OpenMP threads do not wait on each other.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, available_cpus() // _WORKERS))

PROJECT_LOGGERS = ("instaformer", "mask2former")  # the loggers setup_logger configures


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip, with the reason, on a machine without a CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU: the test needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """The project's cache folder (downloads, exported ONNX graphs) is a temporary folder of the
    session, never the user's ``~/.cache/instaformer``; a test may point it elsewhere. So is
    Gradio's upload folder (``/tmp/gradio`` by default, shared by every process): it names
    uploads by their content, so that web-demo tests running at the same time in other pytest
    processes (xdist workers) would delete each other's uploads."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INSTAFORMER_CACHE", str(tmp_path_factory.mktemp("instaformer-cache")))
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
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
