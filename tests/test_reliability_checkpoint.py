"""Local checkpoint files that used to fail with a raw error or load silently wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from mask2former.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    M2FCheckpointer,
    NonFiniteCheckpointError,
    UnsafeCheckpointError,
)


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(8, 8)  # 72 values
        self.head = nn.Linear(8, 2)  # 18 values


class _Code:
    def __reduce__(self):
        return (os.getcwd, ())


def _save(path: Path, state) -> str:
    torch.save(state, path)
    return str(path)


def test_zero_byte_and_truncated_files_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pth is empty \(0 bytes\)"):
        M2FCheckpointer(Model()).load_weights(str(empty))
    good = Path(_save(tmp_path / "good.pth", {"model": Model().state_dict()}))
    for name, size in (("half.pth", good.stat().st_size // 2), ("ten.pth", 10)):
        (tmp_path / name).write_bytes(good.read_bytes()[:size])
        with pytest.raises(CheckpointError, match=rf"cannot read checkpoint file .*{name}"):
            M2FCheckpointer(Model()).load_weights(str(tmp_path / name))
    (tmp_path / "half.pkl").write_bytes(b"\x80\x02}q\x00(X")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint file .*half\.pkl"):
        M2FCheckpointer(Model()).load_weights(str(tmp_path / "half.pkl"))
    with pytest.raises(CheckpointError, match=r"not found: .*missing\.pth"):
        M2FCheckpointer(Model()).load_weights(str(tmp_path / "missing.pth"))


def test_file_refused_by_weights_only_is_called_unsafe(tmp_path: Path) -> None:
    path = _save(tmp_path / "code.pth", {"model": Model().state_dict(), "extra": _Code()})
    with pytest.raises(UnsafeCheckpointError) as info:
        M2FCheckpointer(Model()).load_weights(path)
    message = str(info.value)
    assert f"refusing unsafe checkpoint file {path}: it contains Python objects (code)" in message
    assert "weights_only" not in message and info.value.__cause__ is None


def test_non_finite_weights_are_refused_by_name(tmp_path: Path) -> None:
    state = Model().state_dict()
    state["head.bias"] = torch.tensor([0.0, float("nan")])
    state["backbone.weight"][0, 0] = float("inf")
    path = _save(tmp_path / "diverged.pth", {"model": state})
    with pytest.raises(NonFiniteCheckpointError, match=r"diverged\.pth.*2 weight.*head\.bias"):
        M2FCheckpointer(Model()).load_weights(path)
    unused = {"model": {**Model().state_dict(), "other.weight": torch.tensor([float("nan")])}}
    M2FCheckpointer(Model()).load_weights(_save(tmp_path / "unused.pth", unused))


def test_checkpoint_filling_too_little_is_refused_unless_asked(tmp_path: Path) -> None:
    nothing = _save(tmp_path / "other.pth", {"fc.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointMismatchError, match=r"other\.pth fills only 0\.0%.*1 of its"):
        M2FCheckpointer(Model()).load_weights(nothing)
    head_only = {k: v for k, v in Model().state_dict().items() if k.startswith("head.")}
    path = _save(tmp_path / "head.pth", head_only)  # 18 of 90 values: 20%
    report = M2FCheckpointer(Model()).load_weights(path)
    assert sorted(report["missing_keys"]) == ["backbone.bias", "backbone.weight"]
    with pytest.raises(CheckpointMismatchError, match="fills only 20.0%"):
        M2FCheckpointer(Model()).load_weights(path, min_share=0.5)
    M2FCheckpointer(Model()).load_weights(nothing, min_share=0.0)


def test_demo_names_a_broken_checkpoint_in_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from PIL import Image

    from instaformer.apps.demo import cli

    (tmp_path / "empty.pth").write_bytes(b"")
    Image.new("RGB", (32, 32)).save(tmp_path / "photo.png")
    argv = ["instaformer-demo", "--config-file", "synthetic/instaformer_od_tiny.yaml"]
    argv += ["--input", str(tmp_path / "photo.png"), "--output", str(tmp_path / "out")]
    argv += ["MODEL.WEIGHTS", str(tmp_path / "empty.pth"), "MODEL.DEVICE", "cpu"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as info:
        cli()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"instaformer-demo: error: checkpoint file {tmp_path / 'empty.pth'} is empty" in err
    assert "Traceback" not in err
