"""The ``instaorder_panoptic`` dataset mapper: an InstaOrder Panoptic dataset dict -> model input.

Shape shorthand: H, W image size (after augmentation); N non-crowd segments (things and stuff)
that are visible after augmentation; n of them annotated with InstaOrder labels.

Output keys, as the reference's mapper without its defects (no crowd offset in ``tgt_pan_idx``,
unlabelled depth pairs -1, no ``low_image``, ``instances`` always present; docs/reference.md
[IF 7.1, 7.4, 7.25, 7.26]):
    ``file_name``, ``image_id``, ``height``, ``width`` (original image size), ``segments_info``;
    ``image``: uint8 Tensor[3, H, W] in ``image_format`` channel order;
    ``instances``: :class:`Instances` of the N non-crowd segments in ``segments_info`` order:
        ``gt_classes`` int64[N] (contiguous ids), ``gt_masks`` bool[N, H, W],
        ``gt_boxes`` float32[N, 4] (x0, y0, x1, y1 from the masks); present even when N = 0;
    ``tgt_pan_idx``: int64[n], ascending positions *in the instances list* of the annotated
        segments (things, not crowd, matched by ``pan_instance_ids``, visible);
    ``occlusion_matrix``: int32[n, n], 1 = row occludes column, 0 = not, -1 = ignored; diag 0;
    ``depth_matrix``: int32[n, n], 1 = row closer, 0 = row farther, 2 = same, -1 = no label/diag;
    ``overlap_matrix``: int32[n, n], 1 = depth extents overlap, 0 = distinct, -1 = no label/diag;
    ``count_matrix``: int32[n, n], annotation count (WHDR weight 2 / count), -1 = no label/diag;
Row/column k of every matrix is instance ``tgt_pan_idx[k]``. The occlusion matrix is emitted for
task "o", the three depth matrices for "d", all four for "od" and for "" (no order head).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors

from instaformer.data.augment import build_lsj_augmentation, build_test_resize
from instaformer.data.datasets import check_instaorder_panoptic_record
from instaformer.data.io import DataError, read_image, read_panoptic_ids
from instaformer.data.relations import build_order_matrices, reindex_matrices
from instaformer.vocabulary import ORDER_TASKS, TASK_CODES
from mask2former.structures import Instances, masks_to_boxes

__all__ = ["InstaOrderPanopticMapper"]

# Task code ("" = no order head: all tasks) -> the matrices emitted; depth brings its WHDR weights.
_TASK_MATRICES = {
    code: (*tasks, "overlap", "count") if "depth" in tasks else tasks
    for code, tasks in {**TASK_CODES, "": ORDER_TASKS}.items()
}


class InstaOrderPanopticMapper:
    """Decode image + panoptic PNG, build instance targets and the order matrices.

    Args:
        is_train: training mode (only changes which augmentation ``from_config`` builds).
        image_format: "RGB" or "BGR", channel order of ``image``.
        augmentation: joint transform of ``(tv_tensors.Image, tv_tensors.Mask)`` or None (the
            released behaviour: native resolution, no flip).
        task: "o", "d", "od" or "" (which matrices are emitted; "" emits all).
        rm_bidirec: bidirectional occlusion pairs become -1 (ignored).
        rm_overlap: overlap-matrix entries of overlapping depth pairs become -1.
    """

    def __init__(
        self,
        *,
        is_train: bool,
        image_format: str = "RGB",
        augmentation: Callable[..., Any] | None = None,
        task: str = "od",
        rm_bidirec: bool = False,
        rm_overlap: bool = False,
    ) -> None:
        if task not in _TASK_MATRICES:
            raise ValueError(f"task must be one of {sorted(_TASK_MATRICES)}, got {task!r}")
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        self.is_train = is_train
        self.image_format = image_format
        self.augmentation = augmentation
        self.matrices = _TASK_MATRICES[task]
        self.rm_bidirec = bool(rm_bidirec)
        self.rm_overlap = bool(rm_overlap)

    @classmethod
    def from_config(cls, cfg: Any, is_train: bool = True) -> dict[str, Any]:
        """Keyword arguments from ``INPUT.*`` and ``MODEL.GEOMETRIC_PREDICTOR.*``."""
        augmentation = None
        if cfg.INPUT.AUGMENT:
            if is_train:
                augmentation = build_lsj_augmentation(
                    image_size=cfg.INPUT.IMAGE_SIZE,
                    min_scale=cfg.INPUT.MIN_SCALE,
                    max_scale=cfg.INPUT.MAX_SCALE,
                    random_flip=cfg.INPUT.RANDOM_FLIP,
                )
            else:
                augmentation = build_test_resize(
                    min_size=cfg.INPUT.MIN_SIZE_TEST, max_size=cfg.INPUT.MAX_SIZE_TEST
                )
        gp = cfg.MODEL.GEOMETRIC_PREDICTOR
        return {
            "is_train": is_train,
            "image_format": cfg.INPUT.FORMAT,
            "augmentation": augmentation,
            "task": gp.TASK,
            "rm_bidirec": bool(cfg.INPUT.RM_BIDIREC),
            "rm_overlap": bool(cfg.INPUT.RM_OVERLAP),
        }

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        """Map one dataset dict (see the module docstring for the output)."""
        out = dict(dataset_dict)
        file_name = out["file_name"]
        where = f"{file_name} (image_id {out.get('image_id')})"
        image = read_image(file_name, self.image_format)
        ids = read_panoptic_ids(out["pan_seg_file_name"])
        h, w = image.shape[:2]
        if ids.shape != (h, w):
            raise DataError(
                f"{where}: panoptic PNG {out['pan_seg_file_name']} is {ids.shape[1]}x"
                f"{ids.shape[0]} but the image is {w}x{h}"
            )
        if (out.get("height", h), out.get("width", w)) != (h, w):
            raise DataError(
                f"{where}: the annotation says {out['width']}x{out['height']}, the file is {w}x{h}"
            )
        out["height"], out["width"] = h, w

        all_ids = torch.tensor([s["id"] for s in out["segments_info"]], dtype=torch.int32)
        ids_t = torch.from_numpy(ids)[None]
        masks = ids_t[0][None] == all_ids[:, None, None]  # all segments x H x W
        present = masks.flatten(1).any(1) if len(all_ids) else torch.zeros(0, dtype=torch.bool)
        if not present.all():
            missing = all_ids[~present].tolist()
            raise DataError(
                f"{where}: segments {missing} of segments_info do not occur in "
                f"{out['pan_seg_file_name']}"
            )
        non_crowd = [not s.get("iscrowd", 0) for s in out["segments_info"]]
        segments = [s for s, keep in zip(out["segments_info"], non_crowd, strict=True) if keep]

        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.augmentation is None:
            masks = masks[torch.tensor(non_crowd, dtype=torch.bool)]
        else:
            image_t, ids_t = self.augmentation(tv_tensors.Image(image_t), tv_tensors.Mask(ids_t))
            image_t, ids_t = image_t.as_subclass(torch.Tensor), ids_t.as_subclass(torch.Tensor)
            seg_ids = torch.tensor([s["id"] for s in segments], dtype=ids_t.dtype)
            masks = ids_t[0][None] == seg_ids[:, None, None]  # N' x H x W
            visible = masks.flatten(1).any(1)
            segments = [s for s, v in zip(segments, visible.tolist(), strict=True) if v]
            masks = masks[visible]
        out["image"] = image_t.contiguous()
        out["instances"] = _instances(segments, masks, tuple(ids_t.shape[-2:]))

        # pan_seg_file_name stays: the semantic evaluator reads the ground truth from it.
        record = out.pop("instaorder")
        check_instaorder_panoptic_record(record, {s["id"] for s in out["segments_info"]}, where)
        instance_of_segment = {p: k for k, p in enumerate(record["pan_instance_ids"]) if p != -1}
        tgt_pan_idx, rows = [], []
        for position, seg in enumerate(segments):
            if seg.get("isthing") and seg["id"] in instance_of_segment:
                tgt_pan_idx.append(position)
                rows.append(instance_of_segment[seg["id"]])
        matrices = build_order_matrices(
            record, rm_bidirec=self.rm_bidirec, rm_overlap=self.rm_overlap, where=where
        )
        matrices = reindex_matrices(matrices, rows)
        out["tgt_pan_idx"] = torch.tensor(tgt_pan_idx, dtype=torch.int64)
        for key in self.matrices:
            out[f"{key}_matrix"] = torch.from_numpy(matrices[key])
        return out


def _instances(segments: list[dict], masks: torch.Tensor, size: tuple[int, int]) -> Instances:
    """Instances of N segments from their bool masks Tensor[N, H, W] (none empty)."""
    classes = torch.tensor([s["category_id"] for s in segments], dtype=torch.int64)
    masks = masks.reshape(-1, *size)
    return Instances(size, gt_classes=classes, gt_masks=masks, gt_boxes=masks_to_boxes(masks))
