"""Reading the per-image order matrices given to the order evaluators.

Shape shorthand: K annotated instances of one image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any device), NumPy array or nested list as a NumPy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def image_name(record: dict[str, Any]) -> str:
    """A human-readable identifier of a dataset dict for error messages."""
    for key in ("image_id", "file_name"):
        if key in record:
            return f"{key}={record[key]!r}"
    return "<image without image_id/file_name>"


def get_matrix(record: dict[str, Any], key: str, where: str) -> np.ndarray:
    """``record[key]`` as a square NumPy array Tensor[K, K].

    Args:
        record: a dataset dict (``where="input"``) or a model output dict (``where="output"``).
        key: the matrix key, e.g. ``"occlusion_matrix"``.
        where: "input" or "output", used in error messages.

    Raises:
        KeyError: the key is missing.
        ValueError: the value is not a square 2-D matrix.
    """
    if key not in record:
        raise KeyError(f"{where} dict has no key '{key}' (keys: {sorted(record)})")
    matrix = to_numpy(record[key])
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{where}['{key}'] must be a square matrix, got shape {matrix.shape}")
    return matrix


def check_same_shape(
    gt: np.ndarray, pred: np.ndarray, gt_key: str, pred_key: str, name: str
) -> None:
    """Raise a ValueError naming both keys and the image when the shapes differ."""
    if gt.shape != pred.shape:
        raise ValueError(
            f"{name}: input['{gt_key}'] has shape {gt.shape} but output['{pred_key}'] has shape "
            f"{pred.shape}; the prediction rows/columns must be the annotated instances"
        )
