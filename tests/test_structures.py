"""``Instances``: field access, length checks, indexing, device moves and pickling."""

from __future__ import annotations

import pickle

import pytest
import torch

from mask2former.structures import Instances


def _make(n: int = 3) -> Instances:
    return Instances(
        (4, 5), gt_classes=torch.arange(n), gt_masks=torch.zeros(n, 4, 5, dtype=torch.bool)
    )


def test_fields_and_length():
    inst = _make()
    assert len(inst) == 3 and inst.image_size == (4, 5)
    assert inst.has("gt_classes") and not inst.has("scores")
    with pytest.raises(ValueError, match="length 2"):
        inst.scores = torch.zeros(2)
    with pytest.raises(AttributeError, match="no field 'scores'"):
        _ = inst.scores


def test_indexing_and_to():
    inst = _make()
    assert inst[1].gt_classes.tolist() == [1]
    assert inst[-1].gt_classes.tolist() == [2]
    assert inst[torch.tensor([True, False, True])].gt_classes.tolist() == [0, 2]
    assert inst.to("cpu").gt_masks.shape == (3, 4, 5)
    with pytest.raises(IndexError):
        _ = inst[3]


def test_pickle_round_trip():
    inst = pickle.loads(pickle.dumps(_make()))
    assert inst.gt_classes.tolist() == [0, 1, 2] and inst.image_size == (4, 5)
    assert len(Instances((1, 1))) == 0
