"""Helpers shared by several test modules (imported as ``tests.support.<module>``).

``REPO`` is the repository root: tests read configs, docs and scripts from it; ``REFERENCE`` holds
the reference fixtures (manifests, parity fixtures, evaluator and InstaOrderNet input cases).
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "tests" / "data" / "reference"
