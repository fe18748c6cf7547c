"""Test-time symmetrisation of InstaOrderNet over (A, B) and (B, A), and conversion to matrices.

Shape shorthand: P unordered pairs ``(i, j)``, n instances.

Each unordered pair runs through the network as ``(i, j)`` and ``(j, i)``; per direction (or
depth class) the two passes' probabilities are averaged. Standalone InstaOrderNet and
InstaFormer's pairwise head both use this, with one sigmoid (the reference's pairwise ``od``
applies it twice).

Project matrix convention: ``O[i, j] = 1`` means i occludes j;
``D[i, j]`` is 1 if i is closer than j, 0 if farther, 2 if same depth, -1 on the diagonal.
"""

from __future__ import annotations

import torch
from torch import Tensor

from instaformer.vocabulary import depth_classes_from_instaordernet, transpose_depth_classes

__all__ = [
    "all_pairs",
    "depth_matrix_from_pairs",
    "occlusion_matrix_from_pairs",
    "symmetrise_depth",
    "symmetrise_occlusion",
]


def all_pairs(n: int, device: torch.device | str | None = None) -> Tensor:
    """Tensor[n(n-1)/2, 2] int64: every unordered pair ``(i, j)`` with ``i < j``, row-major."""
    return torch.triu_indices(n, n, offset=1, device=device).t()


def symmetrise_occlusion(logits_ab: Tensor, logits_ba: Tensor) -> Tensor:
    """Occlusion probabilities of a pair from both input orders.

    Args:
        logits_ab: Tensor[P, 2] InstaOrderNet logits for input ``(A=i, B=j)``
            (``[0]`` = j over i, ``[1]`` = i over j).
        logits_ba: Tensor[P, 2] logits for ``(A=j, B=i)``.

    Returns:
        Tensor[P, 2]: ``[:, 0]`` = P(i occludes j), ``[:, 1]`` = P(j occludes i), each the mean
        of the two passes' sigmoids. Each is thresholded independently (> 0.5) by callers.
    """
    s_ab, s_ba = torch.sigmoid(logits_ab), torch.sigmoid(logits_ba)
    i_over_j = 0.5 * (s_ab[:, 1] + s_ba[:, 0])
    j_over_i = 0.5 * (s_ab[:, 0] + s_ba[:, 1])
    return torch.stack([i_over_j, j_over_i], dim=1)


def symmetrise_depth(logits_ab: Tensor, logits_ba: Tensor) -> Tensor:
    """Depth probabilities of a pair from both input orders, in the project's class order.

    Args:
        logits_ab: Tensor[P, 3] InstaOrderNet logits for ``(A=i, B=j)`` (0 = A closer,
            1 = A farther, 2 = same depth).
        logits_ba: Tensor[P, 3] logits for ``(A=j, B=i)``.

    Returns:
        Tensor[P, 3] probabilities for row i vs column j: ``[:, 0]`` i farther, ``[:, 1]`` i
        closer, ``[:, 2]`` same depth: the mean of the two passes' softmaxes, the second's
        classes 0 and 1 swapped.
    """
    d_ij = depth_classes_from_instaordernet(torch.softmax(logits_ab, dim=1))  # D[i, j]
    d_ji = depth_classes_from_instaordernet(torch.softmax(logits_ba, dim=1))  # D[j, i]
    return 0.5 * (d_ij + transpose_depth_classes(d_ji))


def occlusion_matrix_from_pairs(pairs: Tensor, probs: Tensor, n: int) -> Tensor:
    """Tensor[P, 2] pair probabilities (:func:`symmetrise_occlusion`) -> Tensor[n, n] with
    ``[i, j]`` = P(i occludes j); diagonal 0."""
    out = probs.new_zeros(n, n)
    out[pairs[:, 0], pairs[:, 1]] = probs[:, 0]
    out[pairs[:, 1], pairs[:, 0]] = probs[:, 1]
    return out


def depth_matrix_from_pairs(pairs: Tensor, probs: Tensor, n: int) -> Tensor:
    """Tensor[P, 3] pair probabilities (:func:`symmetrise_depth`) -> Tensor[n, n, 3] with
    ``[i, j]`` = (P(i farther), P(i closer), P(same)) w.r.t. j; the transposed cell swaps the
    first two classes. Diagonal cells are uniform."""
    out = probs.new_full((n, n, 3), 1.0 / 3.0)
    out[pairs[:, 0], pairs[:, 1]] = probs
    out[pairs[:, 1], pairs[:, 0]] = transpose_depth_classes(probs)
    return out
