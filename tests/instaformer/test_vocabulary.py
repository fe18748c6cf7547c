"""The order vocabulary: task codes, the depth class conversions and their inverses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instaformer import vocabulary as v


def test_task_codes_and_classes():
    assert v.tasks_from_code("od") == v.ORDER_TASKS == ("occlusion", "depth")
    assert set(v.TASK_CODES) == set(v.TASK_DIRS)
    assert all(set(tasks) <= set(v.TASK_CLASSES) for tasks in v.TASK_CODES.values())
    assert set(v.GT_MATRIX_KEYS) == set(v.TASK_CLASSES)
    with pytest.raises(ValueError, match=r"MODEL\.INSTAORDERNET\.TASK .*'do'"):
        v.tasks_from_code("do", "MODEL.INSTAORDERNET.TASK")


def test_depth_conversion_names_the_same_relation():
    # InstaOrderNet says "A closer" for the pair (A, B): the project's D[A, B] is "closer".
    scores = torch.zeros(3)
    scores[v.ION_A_CLOSER] = 1.0
    assert v.depth_classes_from_instaordernet(scores).argmax().item() == v.DEPTH_CLOSER
    labels = torch.tensor([v.ION_A_CLOSER, v.ION_A_FARTHER, v.ION_SAME, v.UNLABELLED])
    project = v.depth_labels_from_instaordernet(labels)
    assert project.tolist() == [v.DEPTH_CLOSER, v.DEPTH_FARTHER, v.DEPTH_SAME, v.UNLABELLED]
    assert torch.equal(v.depth_labels_to_instaordernet(project), labels)


@pytest.mark.parametrize("as_array", [False, True])
def test_conversions_are_involutions_on_any_axis(as_array):
    x = torch.randn(4, 3, 5)
    x = x.numpy() if as_array else x
    for fn in (v.transpose_depth_classes, v.depth_classes_from_instaordernet):
        y = fn(x, dim=1)
        assert (y[:, 2] == x[:, 2]).all() and (y[:, 0] == x[:, 1]).all()
        assert (fn(y, dim=1) == x).all()
    labels = np.array([[-1, 0], [1, 2]])
    labels = labels if as_array else torch.from_numpy(labels)
    swapped = v.transpose_depth_labels(labels)
    assert swapped.tolist() == [[-1, 1], [0, 2]] and swapped.dtype == labels.dtype
