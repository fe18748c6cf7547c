"""Shared test fixtures: deterministic CPU runs and the location of the reference fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "reference"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


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
