"""Which queries feed the order head, in which row order.

Shape shorthand: Q queries, G ground-truth (non-crowd) instances, n annotated instances,
k thing segments of a panoptic prediction.

* GT-associated mode (training, evaluation): row r of the head's output is the query matched to
  the r-th annotated instance, so it lines up with row r of the GT relation matrices. The
  annotated instances are given by ``tgt_pan_idx``, indices into the non-crowd GT list (the
  list the matcher sees). The reference indexed ``segments_info`` including crowd segments,
  which shifts rows whenever a crowd segment comes first (docs/reference.md [IF 7.1]); here the
  indices must already point into the non-crowd list.
* Blind mode (no GT): row r is the r-th *thing* segment of the panoptic prediction's
  ``segments_info``, whose ``query_index`` names the query it came from. The reference's rows
  were all kept queries, stuff included, with no link to the segments (docs/reference.md
  [IF 7.10]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["select_matched_queries", "select_segment_queries"]


def select_matched_queries(query_idx: Tensor, gt_idx: Tensor, tgt_pan_idx: Tensor) -> Tensor:
    """Queries matched to the annotated GT instances, in the order of ``tgt_pan_idx``.

    Args:
        query_idx: Tensor[M] int, matched query of each matching pair.
        gt_idx: Tensor[M] int, matched GT instance (index into the non-crowd GT list).
        tgt_pan_idx: Tensor[n] int, annotated GT instances (indices into the same list).

    Returns:
        Tensor[n] int64: ``out[r]`` = the query matched to GT instance ``tgt_pan_idx[r]``.

    Raises:
        ValueError: an annotated instance has no matched query (the matcher must match every
            GT instance, which holds whenever Q >= G).
    """
    query_idx = torch.as_tensor(query_idx, dtype=torch.long)
    gt_idx = torch.as_tensor(gt_idx, dtype=torch.long).to(query_idx.device)
    tgt_pan_idx = torch.as_tensor(tgt_pan_idx, dtype=torch.long).to(query_idx.device)
    if query_idx.shape != gt_idx.shape:
        raise ValueError(f"matcher indices differ in length: {query_idx.shape} vs {gt_idx.shape}")
    if tgt_pan_idx.numel() == 0:
        return query_idx.new_zeros(0)
    size = int(max(gt_idx.max().item() if gt_idx.numel() else -1, tgt_pan_idx.max().item())) + 1
    query_of_gt = query_idx.new_full((size,), -1)
    query_of_gt[gt_idx] = query_idx
    selected = query_of_gt[tgt_pan_idx]
    if bool((selected < 0).any()):
        missing = tgt_pan_idx[selected < 0].tolist()
        raise ValueError(f"annotated GT instances {missing} have no matched query")
    return selected


def select_segment_queries(segments_info: Sequence[dict]) -> tuple[Tensor, list[int]]:
    """Rows of the blind-mode order matrices: the thing segments of a panoptic prediction.

    Args:
        segments_info: panoptic segments, each with ``id``, ``isthing`` and ``query_index``
            (the query whose mask made the segment).

    Returns:
        ``(queries, segment_ids)``: Tensor[k] int64 query of each thing segment and the
        segment ids, both in ``segments_info`` order; row r of the order matrices is segment
        ``segment_ids[r]``.
    """
    queries, ids = [], []
    for seg in segments_info:
        if not seg.get("isthing", False):
            continue
        if "query_index" not in seg:
            raise ValueError(f"thing segment {seg.get('id')} has no 'query_index'")
        queries.append(int(seg["query_index"]))
        ids.append(int(seg["id"]))
    return torch.tensor(queries, dtype=torch.long), ids
