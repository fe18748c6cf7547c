"""The result types of order prediction: :class:`OrderResult` and its :class:`Segment` s.

Shape shorthand: H x W the original image, k the number of *thing* segments of the panoptic
output (the rows of the order matrices), s the number of stuff segments.

Conventions ([IF 0]): ``occlusion[i, j] = 1`` means segment i occludes segment j (i is over j),
0 that it does not; ``depth[i, j]`` is 1 when i is closer to the camera than j, 0 when i is
farther, 2 for the same depth. Diagonals are -1 (probability diagonals 0). Row/column ``i`` is
``segments[i]``: the thing segments of the panoptic output, in the model's ``segments_info`` order.

Plain data (NumPy arrays): the predictor returns them, the demo and the viewer draw and save
them, the dataset check builds them from ground truth (:func:`result_from_output` turns one
model output dict into one).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from instaformer.vocabulary import DEPTH_CLOSER, DEPTH_FARTHER, DEPTH_SAME
from mask2former.structures import encode_rle, mask_bbox

__all__ = ["OrderResult", "Segment", "depth_ranking", "result_from_output"]


@dataclass
class Segment:
    """One panoptic segment.

    ``bbox`` is ``(x, y, width, height)`` in pixels of the original image (COCO convention),
    covering the mask; ``mask`` is ``bool[H, W]``; ``category_id`` is contiguous
    (``0 .. NUM_CLASSES - 1``); ``score`` is the class probability of that query, in (0, 1]
    (the value ``MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD`` / ``--confidence-threshold``
    is compared with); ``query_index`` is the model query that produced the segment. Both are
    ``None`` when the model does not report them.
    """

    id: int
    category_id: int
    class_name: str
    isthing: bool
    score: float | None
    area: int
    bbox: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)
    query_index: int | None = None

    def to_dict(self, include_mask: bool = False) -> dict[str, Any]:
        """JSON-ready fields; ``include_mask`` adds ``"mask"`` as COCO RLE (``counts`` a str)."""
        out: dict[str, Any] = {
            "id": self.id,
            "category_id": self.category_id,
            "class_name": self.class_name,
            "isthing": self.isthing,
            "score": self.score,
            "area": self.area,
            "bbox": list(self.bbox),
            "query_index": self.query_index,
        }
        if include_mask:
            out["mask"] = encode_rle(self.mask)
        return out


@dataclass
class OrderResult:
    """Panoptic segments and the pairwise orders between the thing segments of one image.

    Attributes:
        image_size: ``(H, W)`` of the input image.
        panoptic_seg: ``int32[H, W]`` segment id per pixel, 0 = no segment.
        segments: the k thing segments; ``segments[i]`` is row/column i of every matrix.
        stuff_segments: the s stuff segments (no orders).
        occlusion: ``int64[k, k]``, 1 = row occludes column, 0 = not, diagonal -1; ``None``
            when the model has no occlusion task.
        occlusion_prob: ``float32[k, k]`` probability that row occludes column, diagonal 0.
        depth: ``int64[k, k]``, 1 = row closer than column, 0 = farther, 2 = equal, diagonal -1;
            ``None`` when the model has no depth task.
        depth_prob: ``float32[k, k, 3]`` probabilities of (farther, closer, equal), diagonal 0.
        depth_ranking: indices into ``segments`` from front (closest) to back, a permutation of
            ``range(k)``; see :func:`depth_ranking`. ``None`` without the depth task.
    """

    image_size: tuple[int, int]
    panoptic_seg: np.ndarray = field(repr=False)
    segments: list[Segment]
    stuff_segments: list[Segment]
    occlusion: np.ndarray | None = None
    occlusion_prob: np.ndarray | None = None
    depth: np.ndarray | None = None
    depth_prob: np.ndarray | None = None
    depth_ranking: list[int] | None = None

    @property
    def depth_rank(self) -> list[int] | None:
        """Per segment, its position in :attr:`depth_ranking` (0 = closest)."""
        if self.depth_ranking is None:
            return None
        rank = [0] * len(self.depth_ranking)
        for position, index in enumerate(self.depth_ranking):
            rank[index] = position
        return rank

    def to_dict(self, include_masks: bool = False) -> dict[str, Any]:
        """JSON-ready dict: segments (without masks unless ``include_masks``: COCO RLE), the
        matrices as nested lists (``None`` for an absent task) and the depth ranking."""
        rank = self.depth_rank
        segments = []
        for i, seg in enumerate(self.segments):
            entry = seg.to_dict(include_masks)
            entry["index"] = i
            if rank is not None:
                entry["depth_rank"] = rank[i]
            segments.append(entry)

        def listed(a: np.ndarray | None) -> list | None:
            return None if a is None else a.tolist()

        return {
            "image_size": list(self.image_size),
            "conventions": {
                "occlusion": "occlusion[i][j] = 1: segments[i] occludes segments[j]; diagonal -1",
                "depth": "depth[i][j] = 1: i closer than j, 0: i farther, 2: equal; diagonal -1",
                "depth_prob": "depth_prob[i][j] = P(farther), P(closer), P(equal)",
                "depth_ranking": "indices into segments, closest first",
            },
            "segments": segments,
            "stuff_segments": [s.to_dict(include_masks) for s in self.stuff_segments],
            "occlusion": listed(self.occlusion),
            "occlusion_prob": listed(self.occlusion_prob),
            "depth": listed(self.depth),
            "depth_prob": listed(self.depth_prob),
            "depth_ranking": self.depth_ranking,
        }

    def to_json(self, include_masks: bool = False, indent: int | None = None) -> str:
        """:meth:`to_dict` serialised with :mod:`json`."""
        return json.dumps(self.to_dict(include_masks), indent=indent)


def depth_ranking(depth_prob: np.ndarray) -> list[int]:
    """Front-to-back order of k instances from pairwise depth probabilities.

    Each instance i scores its expected number of wins (a Borda count) over both predictions of
    every pair, which the head makes independently: ``win_i = sum_{j != i} 1/2 (P_ij(closer) +
    P_ji(farther)) + 1/4 (P_ij(equal) + P_ji(equal))``. Instances are sorted by decreasing score;
    ties keep index order.

    Args:
        depth_prob: ``float[k, k, 3]`` probabilities of (farther, closer, equal), row vs column.

    Returns:
        A permutation of ``range(k)``, closest instance first.
    """
    p = np.asarray(depth_prob, dtype=np.float64)
    k = p.shape[0]
    if p.shape != (k, k, 3):
        raise ValueError(f"depth_prob must have shape [k, k, 3]; got {p.shape}")
    off = 1.0 - np.eye(k)
    closer = p[..., DEPTH_CLOSER] + p[..., DEPTH_FARTHER].T
    equal = p[..., DEPTH_SAME] + p[..., DEPTH_SAME].T
    wins = ((0.5 * closer + 0.25 * equal) * off).sum(axis=1)
    return [int(i) for i in np.argsort(-wins, kind="stable")]


def _segment(info: dict[str, Any], panoptic: np.ndarray, class_names: Sequence[str]) -> Segment:
    mask = panoptic == int(info["id"])
    bbox = mask_bbox(mask)
    category = int(info["category_id"])
    name = class_names[category] if 0 <= category < len(class_names) else f"class {category}"
    query, score = info.get("query_index"), info.get("score")
    return Segment(
        id=int(info["id"]),
        category_id=category,
        class_name=name,
        isthing=bool(info["isthing"]),
        score=None if score is None else float(score),
        area=int(mask.sum()),
        bbox=bbox,
        mask=mask,
        query_index=None if query is None else int(query),
    )


def result_from_output(
    output: dict[str, Any], class_names: Sequence[str], tasks: Sequence[str]
) -> OrderResult:
    """Convert one model output dict (blind-inference contract) to an :class:`OrderResult`.

    Rows of the matrices are matched to segments through ``output["order_segment_ids"]`` when
    given, else they are the thing entries of ``segments_info`` in order.

    Raises:
        KeyError: a configured task's matrix is missing from the output.
        ValueError: matrix sizes disagree with the number of thing segments.
    """
    seg_map, infos = output["panoptic_seg"]
    panoptic = seg_map.detach().to("cpu", torch.int32).numpy()
    by_id = {int(info["id"]): info for info in infos}
    if "order_segment_ids" in output:
        row_ids = [int(i) for i in output["order_segment_ids"].tolist()]
        missing = [i for i in row_ids if i not in by_id]
        if missing:
            raise ValueError(f"order_segment_ids {missing} are not in panoptic segments_info")
    else:
        row_ids = [int(info["id"]) for info in infos if info["isthing"]]
    rows = set(row_ids)
    segments = [_segment(by_id[i], panoptic, class_names) for i in row_ids]
    stuff = [_segment(info, panoptic, class_names) for info in infos if int(info["id"]) not in rows]
    k = len(segments)
    result = OrderResult(
        image_size=(int(panoptic.shape[0]), int(panoptic.shape[1])),
        panoptic_seg=panoptic,
        segments=segments,
        stuff_segments=stuff,
    )
    for task, classes in (("occlusion", None), ("depth", 3)):
        if task not in tasks:
            continue
        if task not in output:
            raise KeyError(f"the model output has no '{task}' although the config enables it")
        labels = output[task].detach().to("cpu", torch.int64).numpy()
        prob = output.get(f"{task}_prob")
        prob = None if prob is None else prob.detach().to("cpu", torch.float32).numpy()
        expected = (k, k) if classes is None else (k, k, classes)
        if labels.shape != (k, k) or (prob is not None and prob.shape != expected):
            raise ValueError(
                f"'{task}' has shape {labels.shape} (prob {None if prob is None else prob.shape}) "
                f"but the panoptic output has {k} thing segments"
            )
        setattr(result, task, labels)
        setattr(result, f"{task}_prob", prob)
    if result.depth is not None:
        prob = result.depth_prob
        if prob is None:  # rank from the hard labels when the model gives no probabilities
            prob = np.eye(3, dtype=np.float32)[np.clip(result.depth, 0, 2)]
        result.depth_ranking = depth_ranking(prob)
    return result
