"""The order vocabulary: tasks, their classes, the two depth class orders, image statistics.

Shape shorthand: n instances of an image, P instance pairs, K classes of an order task.

Every part of the project that names an order task, a class index of an order matrix, the
ground-truth matrix of a task, InstaOrderNet's depth classes or the ImageNet statistics imports
them from here (docs/orders.md).

The project's matrix convention, for instances i (row) and j (column):

* occlusion ``O[i, j]``: :data:`OCCLUDING` (1) i occludes j, :data:`NOT_OCCLUDING` (0) it does
  not, :data:`UNLABELLED` (-1) no label (ground truth only);
* depth ``D[i, j]``: :data:`DEPTH_FARTHER` (0) i is farther than j, :data:`DEPTH_CLOSER` (1) i is
  closer, :data:`DEPTH_SAME` (2) same depth, :data:`UNLABELLED` (-1) no label or the diagonal.
  ``D[j, i]`` is ``D[i, j]`` with farther and closer swapped (:data:`DEPTH_TRANSPOSED`).

InstaOrderNet classifies an ordered pair (A, B) with its own depth class order, the one its
released weights were trained with (docs/reference.md [ION 4]):
:data:`ION_A_CLOSER` (0), :data:`ION_A_FARTHER` (1), :data:`ION_SAME` (2).
:func:`depth_classes_from_instaordernet` converts its labels, logits or probabilities to the
project's order, :func:`depth_classes_to_instaordernet` back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "DEPTH_CLOSER",
    "DEPTH_FARTHER",
    "DEPTH_SAME",
    "DEPTH_TRANSPOSED",
    "GT_MATRIX_KEYS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ION_A_CLOSER",
    "ION_A_FARTHER",
    "ION_SAME",
    "ION_TO_PROJECT_DEPTH",
    "NOT_OCCLUDING",
    "OCCLUDING",
    "ORDER_TASKS",
    "TASK_CLASSES",
    "TASK_CODES",
    "TASK_DIRS",
    "UNLABELLED",
    "depth_classes_from_instaordernet",
    "depth_classes_to_instaordernet",
    "depth_labels_from_instaordernet",
    "depth_labels_to_instaordernet",
    "tasks_from_code",
    "transpose_depth_classes",
    "transpose_depth_labels",
]

# -- tasks ----------------------------------------------------------------------------------------
ORDER_TASKS: tuple[str, ...] = ("occlusion", "depth")  # every order task, in the released order
TASK_CLASSES: dict[str, int] = {"occlusion": 2, "depth": 3}  # K, classes per task
# Task code of the configs (GEOMETRIC_PREDICTOR.TASK, INSTAORDERNET.TASK, model-zoo names) ->
# its tasks, in the released order.
TASK_CODES: dict[str, tuple[str, ...]] = {
    "o": ("occlusion",),
    "d": ("depth",),
    "od": ("occlusion", "depth"),
}
# Task code -> folder of its released configs and checkpoints (configs/instaorder/<dir>/...).
TASK_DIRS: dict[str, str] = {"o": "occlusion", "d": "depth", "od": "occlusion_depth"}
# Order task -> key of its ground-truth matrix (int Tensor[n, n]) in a mapped dataset dict.
GT_MATRIX_KEYS: dict[str, str] = {"occlusion": "occlusion_matrix", "depth": "depth_matrix"}

# -- class indices of the project's matrices ----------------------------------------------------
UNLABELLED = -1  # no label (ground truth), or the diagonal of a depth matrix
NOT_OCCLUDING = 0  # O[i, j]: i does not occlude j
OCCLUDING = 1  # O[i, j]: i occludes j
DEPTH_FARTHER = 0  # D[i, j]: i is farther than j
DEPTH_CLOSER = 1  # D[i, j]: i is closer than j
DEPTH_SAME = 2  # D[i, j]: i and j are at the same depth
# Project depth class of D[j, i] given that of D[i, j], as an index permutation: the class axis
# of D indexed by it gives D's transpose (farther <-> closer, same stays).
DEPTH_TRANSPOSED: tuple[int, ...] = (DEPTH_CLOSER, DEPTH_FARTHER, DEPTH_SAME)

# -- InstaOrderNet's depth classes of an ordered pair (A, B) --------------------------------------
ION_A_CLOSER = 0  # A is closer than B
ION_A_FARTHER = 1  # A is farther than B
ION_SAME = 2  # same depth
# Index permutation: project class c is InstaOrderNet class ION_TO_PROJECT_DEPTH[c] of the pair
# (A = row, B = column). It is its own inverse.
ION_TO_PROJECT_DEPTH: tuple[int, ...] = (ION_A_FARTHER, ION_A_CLOSER, ION_SAME)

# -- image statistics ----------------------------------------------------------------------------
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB mean, [0, 1] scale
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)  # RGB std, [0, 1] scale

# Tensor or array of class scores / labels (this module imports no torch: cheap to import).
Classes = TypeVar("Classes", "Tensor", np.ndarray)


def tasks_from_code(code: str, key: str = "task code") -> tuple[str, ...]:
    """The order tasks of a task code (``"o"``, ``"d"``, ``"od"``; :data:`TASK_CODES`).

    Args:
        code: the task code.
        key: what holds the code (a config key such as ``"MODEL.INSTAORDERNET.TASK"``), named in
            the error.

    Raises:
        ValueError: ``code`` is not a task code; the message names ``key`` and the value.
    """
    if code not in TASK_CODES:
        raise ValueError(f"{key} must be one of {sorted(TASK_CODES)}, got {code!r}")
    return TASK_CODES[code]


def _permute_classes(x: Classes, permutation: tuple[int, ...], dim: int) -> Classes:
    """``x`` with its ``dim`` axis indexed by ``permutation`` (works on tensors and arrays)."""
    dim = dim % x.ndim
    return x[(slice(None),) * dim + (list(permutation),)]


def _map_labels(labels: Classes, permutation: tuple[int, ...]) -> Classes:
    """Integer class labels through ``permutation``; :data:`UNLABELLED` stays."""
    if isinstance(labels, np.ndarray):
        table = np.asarray(permutation, dtype=labels.dtype)
        return np.where(labels == UNLABELLED, labels, table[np.maximum(labels, 0)])
    table = labels.new_tensor(permutation)
    return labels.where(labels == UNLABELLED, table[labels.clamp(min=0)])


def depth_classes_from_instaordernet(x: Classes, *, dim: int = -1) -> Classes:
    """InstaOrderNet depth scores of the pair (A, B) -> the project's class order for D[A, B].

    Args:
        x: Tensor[..., 3, ...] (or array) of logits or probabilities, classes on ``dim``
            (A closer, A farther, same).
        dim: the class axis.

    Returns:
        The same values with classes (A farther, A closer, same) on ``dim``.
    """
    return _permute_classes(x, ION_TO_PROJECT_DEPTH, dim)


def depth_classes_to_instaordernet(x: Classes, *, dim: int = -1) -> Classes:
    """Project-order depth scores of D[A, B] -> InstaOrderNet's class order of the pair (A, B);
    the inverse of :func:`depth_classes_from_instaordernet` (same arguments)."""
    return _permute_classes(x, ION_TO_PROJECT_DEPTH, dim)


def depth_labels_from_instaordernet(labels: Classes) -> Classes:
    """Integer Tensor[...] (or array) of InstaOrderNet depth labels of (A, B) -> project labels
    of D[A, B]; :data:`UNLABELLED` stays."""
    return _map_labels(labels, ION_TO_PROJECT_DEPTH)


def depth_labels_to_instaordernet(labels: Classes) -> Classes:
    """Integer Tensor[...] (or array) of project depth labels of D[A, B] -> InstaOrderNet labels
    of the pair (A, B); :data:`UNLABELLED` stays."""
    return _map_labels(labels, ION_TO_PROJECT_DEPTH)


def transpose_depth_classes(x: Classes, *, dim: int = -1) -> Classes:
    """Depth scores of D[i, j] -> those of D[j, i] (farther and closer swapped on ``dim``).

    The same permutation swaps A and B in InstaOrderNet's order (A closer <-> A farther).
    """
    return _permute_classes(x, DEPTH_TRANSPOSED, dim)


def transpose_depth_labels(labels: Classes) -> Classes:
    """Integer depth labels of D[i, j] -> those of D[j, i]; :data:`UNLABELLED` stays. Also swaps
    A and B of InstaOrderNet labels."""
    return _map_labels(labels, DEPTH_TRANSPOSED)
