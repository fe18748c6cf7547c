"""Atomic writes: the destination changes only when the writer finished; no temporary remains."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mask2former.utils.atomic import atomic_write_bytes, atomic_write_path


def test_path_writer_gets_the_destination_extension(tmp_path: Path) -> None:
    seen = []

    def write(tmp: str) -> None:
        seen.append(tmp)
        assert cv2.imwrite(tmp, np.full((4, 6, 3), 7, dtype=np.uint8))  # format from the name

    atomic_write_path(tmp_path / "sub" / "picture.png", write)
    assert seen[0].endswith(".png") and Path(seen[0]).parent == tmp_path / "sub"
    assert cv2.imread(str(tmp_path / "sub" / "picture.png")).shape == (4, 6, 3)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["picture.png"]


def test_failed_writer_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "data.json"
    atomic_write_bytes(target, b'{"previous": 1}')

    def fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write_path(target, fail)
    assert target.read_bytes() == b'{"previous": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]
