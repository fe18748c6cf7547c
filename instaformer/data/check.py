"""End-to-end check of a registered InstaOrder Panoptic dataset (``tools/check_dataset.py``).

Shape shorthand: H, W image size; n annotated thing segments of an image.

Every image goes through what training and evaluation read: the category list, the JSON (its
loader refuses repeated image ids, order records, segment ids and file names, see
:mod:`instaformer.data.duplicates`), each image and panoptic PNG (decoded; sizes compared), each
segment (present in its PNG, no PNG id without a segment), the order labels (parsed, no
contradiction, only segments that exist) and the ``instaorder_panoptic`` mapper. Faults name
the file, image and value at fault; a report also counts images, instances per image, segments
per category and labelled pairs per class.
Pictures of the ground truth use the demo's drawing code (:func:`instaformer.demo_utils.render`);
they follow mask2former/utils/outputs.py: they are written once the check is done, with the
folder locked, and a picture never replaces a file this check did not write (two images of
one file stem get ``<stem>_1``, ...).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from instaformer.data.io import DataError, read_panoptic_ids
from instaformer.data.mapper import InstaOrderPanopticMapper
from mask2former.data.catalog import DatasetCatalog, MetadataCatalog
from mask2former.structures import mask_bbox
from mask2former.utils.outputs import OutputFolder

__all__ = ["DatasetReport", "check_dataset", "ground_truth_result"]

_ERRORS = (DataError, FileNotFoundError, KeyError, TypeError, ValueError)


@dataclass
class DatasetReport:
    """Outcome of :func:`check_dataset`.

    ``occlusion`` counts ordered cells ``(i, j)``, i != j, of the n x n ground truth:
    ``occludes`` (1), ``not`` (0); ``mutual`` counts unordered pairs occluding both ways.
    ``depth`` counts unordered pairs: ``closer`` (a strict order), ``equal``, ``unlabelled``,
    and among the labelled ones ``overlap`` / ``distinct`` depth extents.
    """

    name: str
    classes: list[str] = field(default_factory=list)
    images: int = 0
    faults: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    instances_per_image: list[int] = field(default_factory=list)
    segments_per_class: Counter = field(default_factory=Counter)
    occlusion: Counter = field(default_factory=Counter)
    depth: Counter = field(default_factory=Counter)
    pictures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults

    def summary(self) -> str:
        """A few lines for people: counts, then every fault and warning."""
        per_image = np.asarray(self.instances_per_image or [0])
        lines = [
            f"dataset {self.name}: {self.images} images, {len(self.classes)} classes",
            f"  instances (annotated things) per image: mean {per_image.mean():.2f}, "
            f"min {per_image.min()}, max {per_image.max()}",
            "  segments per class: "
            + ", ".join(f"{c} {self.segments_per_class[c]}" for c in self.classes),
            f"  occlusion cells: occludes {self.occlusion['occludes']}, not "
            f"{self.occlusion['not']} (mutual pairs {self.occlusion['mutual']})",
            f"  depth pairs: closer/farther {self.depth['closer']}, equal {self.depth['equal']}, "
            f"unlabelled {self.depth['unlabelled']} (overlap {self.depth['overlap']}, distinct "
            f"{self.depth['distinct']})",
        ]
        occ = [self.occlusion["not"], self.occlusion["occludes"]]
        strict = self.depth["closer"]
        lines.append(
            f"  class counts: INPUT.OCC_SAMPLES_PER_CLASS {occ} "
            f"INPUT.DEPTH_SAMPLES_PER_CLASS {[strict, strict, 2 * self.depth['equal']]}"
        )
        lines += [f"  picture: {p}" for p in self.pictures]
        lines += [f"WARNING {w}" for w in self.warnings]
        lines += [f"FAULT {f}" for f in self.faults]
        lines.append(f"{self.name}: " + ("OK" if self.ok else f"{len(self.faults)} fault(s)"))
        return "\n".join(lines)


def _image_checks(item: dict[str, Any], report: DatasetReport, where: str) -> None:
    """What the mapper does not check: PNG ids without a segment; labels on stuff or crowd."""
    ids = read_panoptic_ids(item["pan_seg_file_name"])
    listed = {s["id"] for s in item["segments_info"]}
    extra = sorted(set(np.unique(ids).tolist()) - listed - {0})
    if extra:
        raise DataError(
            f"{where}: panoptic PNG {item['pan_seg_file_name']} holds segment ids {extra[:5]} "
            "that are not in segments_info"
        )
    by_id = {s["id"]: s for s in item["segments_info"]}
    for p in item["instaorder"].get("pan_instance_ids", []):
        seg = by_id.get(p)
        if seg is not None and (not seg.get("isthing") or seg.get("iscrowd")):
            report.warnings.append(
                f"{where}: pan_instance_ids names segment {p}, a stuff or crowd segment; its "
                "order labels are dropped"
            )


def _count_orders(out: dict[str, Any], report: DatasetReport) -> None:
    occ, depth, overlap = (out[f"{k}_matrix"].numpy() for k in ("occlusion", "depth", "overlap"))
    n = occ.shape[0]
    off = ~np.eye(n, dtype=bool)
    report.occlusion["occludes"] += int(((occ == 1) & off).sum())
    report.occlusion["not"] += int(((occ == 0) & off).sum())
    report.occlusion["mutual"] += int(np.triu((occ == 1) & (occ.T == 1), 1).sum())
    upper = np.triu(off)
    report.depth["closer"] += int((upper & ((depth == 0) | (depth == 1))).sum())
    report.depth["equal"] += int((upper & (depth == 2)).sum())
    report.depth["unlabelled"] += int((upper & (depth == -1)).sum())
    report.depth["overlap"] += int((upper & (depth != -1) & (overlap == 1)).sum())
    report.depth["distinct"] += int((upper & (depth != -1) & (overlap == 0)).sum())


def ground_truth_result(out: dict[str, Any], class_names: list[str], thing_ids: set[int]) -> Any:
    """The ground truth of a mapper output as an :class:`~instaformer.predictor.OrderResult`
    (score 1): rows are the n annotated things; other segments are drawn as background."""
    from instaformer.predictor import OrderResult, Segment, depth_ranking

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
        image_size=tuple(panoptic.shape),
        panoptic_seg=panoptic,
        segments=[segments[r] for r in rows],
        stuff_segments=[s for k, s in enumerate(segments) if k not in set(rows)],
        occlusion=occ,
        occlusion_prob=(occ == 1).astype(np.float32),
        depth=depth,
        depth_prob=prob,
        depth_ranking=depth_ranking(prob),
    )


def _write_pictures(
    item: dict[str, Any],
    out: dict[str, Any],
    report: DatasetReport,
    meta: Any,
    folder: OutputFolder,
    stems: set[str],
) -> None:
    from instaformer.demo_utils import render

    image = out["image"].permute(1, 2, 0).numpy()
    thing_ids = set(meta.thing_dataset_id_to_contiguous_id.values())
    result = ground_truth_result(out, report.classes, thing_ids)
    base = stem = os.path.splitext(os.path.basename(item["file_name"]))[0]
    n = 0
    while stem in stems:  # images of one name in different folders
        n += 1
        stem = f"{base}_{n}"
    stems.add(stem)
    for kind, picture in render(image, result).items():
        bgr = np.ascontiguousarray(picture[:, :, ::-1])

        def write(tmp: str, bgr: np.ndarray = bgr) -> None:
            if not cv2.imwrite(tmp, bgr):
                raise OSError(f"cannot write {tmp}")

        report.pictures.append(str(folder.write(f"{stem}_{kind}.png", write)))


def check_dataset(
    name: str,
    *,
    pictures: int = 0,
    output_dir: str | None = None,
    max_faults: int = 20,
    max_images: int | None = None,
) -> DatasetReport:
    """Check the registered dataset ``name`` (module docstring).

    Args:
        max_images: check only the first ``max_images`` images (None: all).
        pictures: draw the ground truth of the first ``pictures`` images into ``output_dir``
            (``<stem>_{panoptic,occlusion,depth}.png``, see the module docstring).
        max_faults: stop after this many faulty images.
    Returns:
        the :class:`DatasetReport`; ``report.ok`` is False when a fault was found.
    Raises:
        OutputError, RunLockError: (``pictures``) a picture would replace a file this check did
            not write, or another run writes into ``output_dir``.
    """
    if pictures and not output_dir:
        raise ValueError("pictures need an output_dir")
    report = DatasetReport(name)
    if name not in DatasetCatalog:
        known = ", ".join(DatasetCatalog.list())
        report.faults.append(f"dataset '{name}' is not registered (registered: {known})")
        return report
    try:
        meta = MetadataCatalog.get(name)
        if meta.get("stuff_classes") is None:
            report.faults.append(f"dataset '{name}' has no category list: not a panoptic dataset")
            return report
        report.classes = list(meta.stuff_classes)
        items = DatasetCatalog.get(name)
    except _ERRORS as err:
        report.faults.append(f"{name}: cannot load the dataset: {err}")
        return report
    if not items:
        report.faults.append(f"{name}: the dataset has no images")
    mapper = InstaOrderPanopticMapper(is_train=False, task="od")
    drawn: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for item in items[:max_images]:
        where = f"{item.get('file_name')} (image_id {item.get('image_id')})"
        report.images += 1
        try:
            _image_checks(item, report, where)
            out = mapper(item)
        except _ERRORS as err:
            message = str(err)
            named = any(item.get(k, "\0") in message for k in ("file_name", "pan_seg_file_name"))
            report.faults.append(message if named else f"{where}: {message}")
            if len(report.faults) >= max_faults:
                report.faults.append(f"stopped after {max_faults} faulty images")
                break
            continue
        report.instances_per_image.append(len(out["tgt_pan_idx"]))
        for c in out["instances"].gt_classes.tolist():
            report.segments_per_class[report.classes[c]] += 1
        _count_orders(out, report)
        if len(drawn) < pictures:
            drawn.append((item, out))
    if drawn:
        with OutputFolder(output_dir, what="--output-dir", tool="check_dataset") as folder:
            stems: set[str] = set()
            for item, out in drawn:
                _write_pictures(item, out, report, meta, folder, stems)
    return report
