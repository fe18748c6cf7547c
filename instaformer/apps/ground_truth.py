"""Pictures of a dataset's ground truth (``tools/check_dataset.py --pictures``).

Shape shorthand: H, W image size; n annotated thing segments of an image.

The mapper outputs that :func:`instaformer.data.check.check_dataset` keeps in its report
(``samples``) are drawn with the demo's drawing code (:func:`~instaformer.apps.demo_utils.render`)
as ``<stem>_{panoptic,occlusion,depth}.png``. Writing follows mask2former/utils/outputs.py: the
folder is locked while the pictures are written, and a picture never replaces a file this check
did not write (two images of one file stem get ``<stem>_1``, ...).
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from instaformer.apps.demo_utils import render
from instaformer.data.check import DatasetReport
from instaformer.structures import OrderResult, Segment, depth_ranking
from mask2former.data.catalog import MetadataCatalog
from mask2former.structures import mask_bbox
from mask2former.utils.outputs import OutputFolder

__all__ = ["ground_truth_result", "write_ground_truth_pictures"]


def ground_truth_result(
    out: dict[str, Any], class_names: list[str], thing_ids: set[int]
) -> OrderResult:
    """The ground truth of a mapper output as an :class:`~instaformer.structures.OrderResult`
    (score 1): rows are the n annotated things; other segments are drawn as background."""
    inst = out["instances"]
    masks = inst.gt_masks.numpy()
    classes = inst.gt_classes.tolist()
    panoptic = np.zeros(masks.shape[1:], dtype=np.int32)
    segments = []
    for k, (mask, c) in enumerate(zip(masks, classes, strict=True)):
        panoptic[mask] = k + 1
        box = mask_bbox(mask)
        segments.append(
            Segment(k + 1, c, class_names[c], c in thing_ids, 1.0, int(mask.sum()), box, mask)
        )
    rows = out["tgt_pan_idx"].tolist()
    occ = out["occlusion_matrix"].numpy().astype(np.int64)
    depth = out["depth_matrix"].numpy().astype(np.int64)
    np.fill_diagonal(occ, -1)
    prob = np.zeros((*depth.shape, 3), dtype=np.float32)
    for value in (0, 1, 2):
        prob[..., value] = depth == value
    return OrderResult(
        image_size=(int(panoptic.shape[0]), int(panoptic.shape[1])),
        panoptic_seg=panoptic,
        segments=[segments[r] for r in rows],
        stuff_segments=[s for k, s in enumerate(segments) if k not in set(rows)],
        occlusion=occ,
        occlusion_prob=(occ == 1).astype(np.float32),
        depth=depth,
        depth_prob=prob,
        depth_ranking=depth_ranking(prob),
    )


def write_ground_truth_pictures(report: DatasetReport, output_dir: str) -> list[str]:
    """Draw the ground truth of ``report.samples`` into ``output_dir`` (module docstring).

    Returns:
        the paths written, also appended to ``report.pictures``.
    Raises:
        OutputError, RunLockError: a picture would replace a file this check did not write, or
            another run writes into ``output_dir``.
    """
    if not report.samples:
        return []
    meta = MetadataCatalog.get(report.name)
    thing_ids = set(meta.thing_dataset_id_to_contiguous_id.values())
    written: list[str] = []
    with OutputFolder(output_dir, what="--output-dir", tool="check_dataset") as folder:
        stems: set[str] = set()
        for item, out in report.samples:
            result = ground_truth_result(out, report.classes, thing_ids)
            image = out["image"].permute(1, 2, 0).numpy()
            stem = _free_stem(item["file_name"], stems)
            for kind, picture in render(image, result).items():
                bgr = np.ascontiguousarray(picture[:, :, ::-1])

                def write(tmp: str, bgr: np.ndarray = bgr) -> None:
                    if not cv2.imwrite(tmp, bgr):
                        raise OSError(f"cannot write {tmp}")

                written.append(str(folder.write(f"{stem}_{kind}.png", write)))
    report.pictures += written
    return written


def _free_stem(file_name: str, stems: set[str]) -> str:
    """The file stem of ``file_name``, with ``_1``, ``_2``, ... when another image took it."""
    base = stem = os.path.splitext(os.path.basename(file_name))[0]
    n = 0
    while stem in stems:  # images of one name in different folders
        n += 1
        stem = f"{base}_{n}"
    stems.add(stem)
    return stem
