"""Shared test fixtures: deterministic CPU runs and the location of the reference fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference`` next to the checkout (manifests, parity, evaluator cases)."""
    if not REFERENCE.is_dir():
        pytest.fail(
            f"reference fixtures not found at {REFERENCE}; CI places shared/ beside the repo"
        )
    return REFERENCE
