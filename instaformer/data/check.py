"""End-to-end check of a registered InstaOrder Panoptic dataset (``tools/check_dataset.py``).

Shape shorthand: H, W image size; n annotated thing segments of an image.

Every image goes through what training and evaluation read: the category list, the JSON (its
loader refuses repeated image ids, order records, segment ids and file names, see
:mod:`instaformer.data.duplicates`), each image and panoptic PNG (decoded; sizes compared), each
segment (present in its PNG, no PNG id without a segment), the order labels (parsed, no
contradiction, only segments that exist) and the ``instaorder_panoptic`` mapper. Faults name
the file, image and value at fault; a report also counts images, instances per image, segments
per category and labelled pairs per class. The mapper outputs of the first images can be kept
in the report (``samples``) for pictures of the ground truth, which the apps layer draws
(:mod:`instaformer.apps.ground_truth`, ``tools/check_dataset.py --pictures``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instaformer.data.io import DataError, read_panoptic_ids
from instaformer.data.mapper import InstaOrderPanopticMapper
from mask2former.data.catalog import DatasetCatalog, MetadataCatalog

__all__ = ["DatasetReport", "check_dataset"]

_ERRORS = (DataError, FileNotFoundError, KeyError, TypeError, ValueError)


@dataclass
class DatasetReport:
    """Outcome of :func:`check_dataset`.

    ``occlusion`` counts ordered cells ``(i, j)``, i != j, of the n x n ground truth:
    ``occludes`` (1), ``not`` (0); ``mutual`` counts unordered pairs occluding both ways.
    ``depth`` counts unordered pairs: ``closer`` (a strict order), ``equal``, ``unlabelled``,
    and among the labelled ones ``overlap`` / ``distinct`` depth extents. ``samples`` holds
    ``(dataset record, mapper output)`` of the first clean images when asked for; ``pictures``
    the paths of the pictures drawn from them.
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
    samples: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
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


def check_dataset(
    name: str,
    *,
    samples: int = 0,
    max_faults: int = 20,
    max_images: int | None = None,
) -> DatasetReport:
    """Check the registered dataset ``name`` (module docstring).

    Args:
        samples: keep the record and mapper output of the first ``samples`` clean images in
            ``report.samples`` (for pictures of the ground truth).
        max_faults: stop after this many faulty images.
        max_images: check only the first ``max_images`` images (None: all).
    Returns:
        the :class:`DatasetReport`; ``report.ok`` is False when a fault was found.
    """
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
        if len(report.samples) < samples:
            report.samples.append((item, out))
    return report
