"""Checkpoint loading: detectron2 pickles (restricted), .pth, plain state dicts, mismatches."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mask2former.checkpoint import (
    CheckpointMismatchError,
    M2FCheckpointer,
    UnsafeCheckpointError,
    load_pickle_restricted,
)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _numpy_state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy() + 1.0 for k, v in model.state_dict().items()}


def test_detectron2_pickle_loads(tmp_path: Path) -> None:
    model = Tiny()
    state = _numpy_state(model)
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps({"model": state, "__author__": "zoo"}, protocol=2))
    report = M2FCheckpointer(model).load_weights(str(path), strict=True)
    assert report == {"missing_keys": [], "unexpected_keys": [], "incorrect_shapes": []}
    assert np.allclose(model.head.weight.detach().numpy(), state["head.weight"])


def test_backbone_only_pickle_gets_prefix(tmp_path: Path) -> None:
    model = Tiny()
    state = {"weight": np.ones((4, 3), np.float32), "bias": np.zeros(4, np.float32)}
    path = tmp_path / "swin_tiny.pkl"
    path.write_bytes(pickle.dumps({"model": state}))
    report = M2FCheckpointer(model).load_weights(str(path))
    assert sorted(report["missing_keys"]) == ["head.bias", "head.weight"]
    assert torch.equal(model.backbone.weight, torch.ones(4, 3))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"x": _Evil()}}))
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system|os\.system|nt\.system"):
        load_pickle_restricted(str(path))
    with pytest.raises(UnsafeCheckpointError, match="refusing"):
        M2FCheckpointer(Tiny()).load_weights(str(path))


@pytest.mark.parametrize("wrapped", [True, False])
def test_pth_and_plain_state_dict(tmp_path: Path, wrapped: bool) -> None:
    source = Tiny()
    path = tmp_path / "weights.pth"
    torch.save(
        {"model": source.state_dict(), "iteration": 5} if wrapped else source.state_dict(), path
    )
    target = Tiny()
    M2FCheckpointer(target).load_weights(str(path), strict=True)
    assert torch.equal(target.head.weight, source.head.weight)


def test_shape_mismatch_is_reported(tmp_path: Path) -> None:
    state = Tiny().state_dict()
    state["head.weight"] = torch.zeros(3, 4)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    model = Tiny()
    report = M2FCheckpointer(model).load_weights(str(path))
    assert report["incorrect_shapes"] == [("head.weight", (3, 4), (2, 4))]
    assert report["unexpected_keys"] == ["extra.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"head\.weight: \(3, 4\) in checkpoint"):
        M2FCheckpointer(model).load_weights(str(path), strict=True)


def test_pickled_torch_objects_in_pth_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": _Evil()}}, path)
    with pytest.raises(pickle.UnpicklingError):
        M2FCheckpointer(Tiny()).load_weights(str(path))
