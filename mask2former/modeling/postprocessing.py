"""Semantic, panoptic and instance inference from mask-classification outputs.

Shape shorthand: Q queries, K classes (index K = no object), H, W output size.
Inputs are one image's ``mask_cls`` Tensor[Q, K+1] (logits) and ``mask_pred`` Tensor[Q, H, W]
(mask logits, already resized to the output size).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from mask2former.structures import Instances, masks_to_boxes

__all__ = [
    "sem_seg_postprocess",
    "semantic_inference",
    "panoptic_inference",
    "instance_inference",
    "mask_scores",
]

_CHUNK_ELEMENTS = 1 << 20  # values per chunk of the chunked full-resolution computations


def sem_seg_postprocess(
    result: Tensor, img_size: tuple[int, int], output_height: int, output_width: int
) -> Tensor:
    """Crop the padding off and resize bilinearly.

    Args:
        result: Tensor[C, Hp, Wp] at padded input size.
        img_size: ``(h, w)`` of the image inside the padding.
        output_height, output_width: requested output size.

    Returns:
        Tensor[C, output_height, output_width]; a view of ``result`` when no resizing is needed
        (a bilinear resize to the same size is the identity).
    """
    result = result[:, : img_size[0], : img_size[1]]
    if tuple(result.shape[-2:]) == (output_height, output_width):
        return result
    return F.interpolate(
        result[None], size=(output_height, output_width), mode="bilinear", align_corners=False
    )[0]


def _chunks(length: int, values_per_item: int) -> Iterator[slice]:
    """Slices covering ``range(length)``, each holding about _CHUNK_ELEMENTS values."""
    step = max(1, _CHUNK_ELEMENTS // max(1, values_per_item))
    for start in range(0, length, step):
        yield slice(start, start + step)


def semantic_inference(mask_cls: Tensor, mask_pred: Tensor) -> Tensor:
    """Tensor[Q, K+1], Tensor[Q, H, W] -> Tensor[K, H, W]: sum_q p(class | q) * sigmoid(mask_q).

    Computed over row chunks, so that no full-size sigmoid of the masks is held.
    """
    probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    q, h, w = mask_pred.shape
    out = mask_pred.new_empty((probs.shape[-1], h, w), dtype=torch.result_type(probs, mask_pred))
    for rows in _chunks(h, q * w):
        out[:, rows] = torch.einsum("qc,qhw->chw", probs, mask_pred[:, rows].sigmoid())
    return out


def panoptic_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    *,
    num_classes: int,
    thing_ids: Collection[int],
    object_mask_threshold: float,
    overlap_threshold: float,
) -> tuple[Tensor, list[dict], Tensor]:
    """Non-overlapping segments from the confident queries.

    Queries are kept when their top class is not "no object" and its probability exceeds
    ``object_mask_threshold``; each pixel goes to the kept query maximising
    ``score * sigmoid(mask)``; a query's segment is dropped if less than
    ``overlap_threshold`` of its own mask (``sigmoid >= 0.5``) survives; stuff segments of
    the same class are merged.

    Returns:
        panoptic_seg int32 Tensor[H, W] (0 = void, k = segment id k); segments_info, one dict
        per segment ``{"id", "isthing", "category_id", "query_index", "score"}`` (for merged
        stuff, the first query), ``score`` being the query's class probability ``p(class | q)``
        in (0, 1], the value compared with ``object_mask_threshold`` (upstream Mask2Former
        computes it and drops it); keep bool Tensor[Q], the queries that passed the class test.
    """
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    query_ids = keep.nonzero().flatten().tolist()
    cur_scores = scores[keep]
    cur_classes = labels[keep]
    cur_masks = mask_pred[keep].sigmoid_()  # the kept queries only (a copy)
    h, w = cur_masks.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=cur_masks.device)
    segments_info: list[dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info, keep
    cur_mask_ids = torch.empty((h, w), dtype=torch.int64, device=cur_masks.device)
    for rows in _chunks(h, cur_masks.shape[0] * w):
        cur_mask_ids[rows] = (cur_scores.view(-1, 1, 1) * cur_masks[:, rows]).argmax(0)
    current_segment_id = 0
    stuff_memory: dict[int, int] = {}
    for k in range(cur_classes.shape[0]):
        pred_class = int(cur_classes[k].item())
        isthing = pred_class in thing_ids
        owned = cur_mask_ids == k
        mask_area = owned.sum().item()
        original_area = (cur_masks[k] >= 0.5).sum().item()
        mask = owned & (cur_masks[k] >= 0.5)
        if mask_area > 0 and original_area > 0 and mask.sum().item() > 0:
            if mask_area / original_area < overlap_threshold:
                continue
            if not isthing:
                if pred_class in stuff_memory:
                    panoptic_seg[mask] = stuff_memory[pred_class]
                    continue
                stuff_memory[pred_class] = current_segment_id + 1
            current_segment_id += 1
            panoptic_seg[mask] = current_segment_id
            segments_info.append(
                {
                    "id": current_segment_id,
                    "isthing": bool(isthing),
                    "category_id": pred_class,
                    "query_index": query_ids[k],
                    "score": float(cur_scores[k].item()),
                }
            )
    return panoptic_seg, segments_info, keep


def mask_scores(mask_pred: Tensor, positive: Tensor) -> Tensor:
    """Tensor[Q]: mean ``sigmoid(mask_pred)`` over each query's positive pixels (0 if none).

    ``mask_pred`` Tensor[Q, H, W] logits, ``positive`` bool Tensor[Q, H, W] (``mask_pred > 0``);
    computed a few queries at a time, so that no full-size sigmoid is held.
    """
    flat, pos = mask_pred.flatten(1), positive.flatten(1)
    sums, counts = flat.new_zeros(flat.shape[0]), flat.new_zeros(flat.shape[0])
    for queries in _chunks(flat.shape[0], flat.shape[1]):
        sums[queries] = (flat[queries].sigmoid() * pos[queries]).sum(1)
        counts[queries] = pos[queries].sum(1)
    return sums / (counts + 1e-6)


def instance_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    *,
    num_classes: int,
    test_topk_per_image: int,
    thing_ids: Collection[int] | None = None,
) -> Instances:
    """Top-scoring (query, class) pairs as instances.

    Args:
        thing_ids: if given (panoptic mode), only pairs whose class is a thing are kept.

    Returns:
        Instances of size ``(H, W)`` with ``pred_masks`` float Tensor[N, H, W] (logit > 0),
        ``pred_boxes`` Tensor[N, 4], ``scores`` Tensor[N] (class prob x mean mask prob inside
        the mask), ``pred_classes`` LongTensor[N], ``query_index`` LongTensor[N].
    """
    image_size = tuple(mask_pred.shape[-2:])
    num_queries = mask_cls.shape[0]
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    labels = (
        torch.arange(num_classes, device=mask_cls.device).unsqueeze(0).repeat(num_queries, 1)
    ).flatten(0, 1)
    k = min(test_topk_per_image, scores.numel())
    scores_per_image, topk_indices = scores.flatten(0, 1).topk(k, sorted=False)
    labels_per_image = labels[topk_indices]
    query_index = torch.div(topk_indices, num_classes, rounding_mode="floor")
    if thing_ids is not None:
        keep = torch.tensor(
            [int(lab) in thing_ids for lab in labels_per_image.tolist()],
            dtype=torch.bool,
            device=mask_cls.device,
        )
        scores_per_image = scores_per_image[keep]
        labels_per_image = labels_per_image[keep]
        query_index = query_index[keep]
    positive = mask_pred > 0
    pred_masks = positive[query_index]
    return Instances(
        image_size,
        pred_masks=pred_masks.float(),
        pred_boxes=masks_to_boxes(pred_masks),
        scores=scores_per_image * mask_scores(mask_pred, positive)[query_index],
        pred_classes=labels_per_image,
        query_index=query_index,
    )
