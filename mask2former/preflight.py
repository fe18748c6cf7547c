"""Pre-flight checks of a Mask2Former run: what the config, the datasets' metadata and the files'
existence can tell before any process starts, so that a run never trains for days and then
fails in its evaluation.

Each check returns fault lines (one per fault, naming the keys and values at fault); a project
collects them over its own checks and raises :class:`PreflightError` with all of them. The
checks here know Mask2Former only:

* :func:`registry_faults`: every ``MODEL.*NAME`` in its registry (the known names listed);
* :func:`dataset_name_faults`, :func:`load_datasets`: the datasets registered, non-empty and
  loadable (their loader's error becomes a fault);
* :func:`missing_file_faults`: every image / panoptic PNG / semantic PNG of every record
  present, one ``stat`` each, spread over threads (network file systems answer in parallel);
* :func:`largest_target_count`: the most non-crowd segments (or instances) of one image, for
  ``MODEL.MASK_FORMER.NUM_OBJECT_QUERIES``;
* :func:`batch_faults`: ``SOLVER.IMS_PER_BATCH`` against the number of processes;
* :func:`metadata_faults`, :func:`result_faults`, :func:`ground_truth_faults`: the datasets'
  metadata readable; ``MODEL.MASK_FORMER.TEST.*_ON`` against what the evaluators of a dataset
  need, and their ground-truth file present;
* :func:`weights_faults`: a local ``MODEL.WEIGHTS`` that does not exist.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fvcore.common.registry import Registry

from mask2former.config import CfgNode, ConfigError
from mask2former.data.catalog import DatasetCatalog, MetadataCatalog

__all__ = [
    "FILE_KEYS",
    "STAT_THREADS",
    "PreflightError",
    "batch_faults",
    "dataset_name_faults",
    "ground_truth_faults",
    "largest_target_count",
    "load_datasets",
    "mask2former_registry_faults",
    "metadata_faults",
    "missing_file_faults",
    "missing_files",
    "registry_faults",
    "result_faults",
    "weights_faults",
]

FILE_KEYS = {
    "file_name": "images",
    "pan_seg_file_name": "panoptic PNGs",
    "sem_seg_file_name": "semantic PNGs",
}
"""Keys of a dataset dict that name a file the mapper or an evaluator reads -> what they are."""

_SHOWN = 3  # missing files named per dataset and key
_STAT_CHUNK = 512  # paths per task of the stat pool
STAT_THREADS = 16
"""``stat`` calls in flight in :func:`missing_files`: local disks answer at once, network file
systems (NFS, Lustre) answer many in parallel."""


class PreflightError(ConfigError):
    """The pre-flight check found faults; ``faults`` holds one line per fault.

    The message is a header line, then each fault on its own indented line.
    """

    def __init__(self, faults: Sequence[str]) -> None:
        self.faults = list(faults)
        count = f"{len(self.faults)} fault" + ("s" if len(self.faults) != 1 else "")
        lines = [f"  {fault}" for fault in self.faults]
        super().__init__(
            "\n".join([f"the pre-flight check found {count}; nothing was started:", *lines])
        )


def _known(registry: Registry) -> str:
    return ", ".join(sorted(name for name, _ in registry))


def registry_faults(entries: Iterable[tuple[str, str, Registry]]) -> list[str]:
    """``(key, name, registry)`` -> a fault for each name its registry does not hold.

    Example fault: ``MODEL.BACKBONE.NAME 'resnet' is not registered; known: D2SwinTransformer,
    build_resnet_backbone``.
    """
    return [
        f"{key} {name!r} is not registered; known: {_known(registry)}"
        for key, name, registry in entries
        if name not in registry
    ]


def mask2former_registry_faults(cfg: CfgNode) -> list[str]:
    """:func:`registry_faults` of the Mask2Former modules: backbone, segmentation head, pixel
    decoder and transformer decoder."""
    import mask2former.modeling  # noqa: F401  (registers every built-in module)
    from mask2former.modeling.registry import (
        BACKBONE_REGISTRY,
        PIXEL_DECODER_REGISTRY,
        SEM_SEG_HEADS_REGISTRY,
        TRANSFORMER_DECODER_REGISTRY,
    )

    head = cfg.MODEL.SEM_SEG_HEAD
    return registry_faults(
        [
            ("MODEL.BACKBONE.NAME", cfg.MODEL.BACKBONE.NAME, BACKBONE_REGISTRY),
            ("MODEL.SEM_SEG_HEAD.NAME", head.NAME, SEM_SEG_HEADS_REGISTRY),
            (
                "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME",
                head.PIXEL_DECODER_NAME,
                PIXEL_DECODER_REGISTRY,
            ),
            (
                "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME",
                cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME,
                TRANSFORMER_DECODER_REGISTRY,
            ),
        ]
    )


def dataset_name_faults(key: str, names: Sequence[str], *, required: str = "") -> list[str]:
    """Faults of the dataset names of config key ``key`` (``DATASETS.TRAIN`` / ``TEST``): an
    unregistered name (the registered ones listed); with ``required`` (why the run needs one),
    an empty list."""
    if not names:
        return [f"{key} is empty but {required}"] if required else []
    known = ", ".join(DatasetCatalog.list()) or "(none)"
    return [
        f"{key} names dataset {name!r}, which is not registered; registered: {known}"
        for name in names
        if name not in DatasetCatalog
    ]


def load_datasets(names: Iterable[str]) -> tuple[dict[str, list[dict]], list[str]]:
    """The dataset dicts of each registered name, and a fault per dataset that cannot be loaded
    (its loader's error: a missing or malformed annotation file, duplicates, ...) or is empty.
    Unregistered names are skipped (see :func:`dataset_name_faults`)."""
    records: dict[str, list[dict]] = {}
    faults: list[str] = []
    for name in dict.fromkeys(names):
        if name not in DatasetCatalog:
            continue
        try:
            dicts = DatasetCatalog.get(name)
        except KeyError as err:
            faults.append(f"dataset {name!r}: {err.args[0] if err.args else err}")
            continue
        except (ValueError, OSError) as err:
            faults.append(f"dataset {name!r}: {err}")
            continue
        if not dicts:
            faults.append(f"dataset {name!r} has no images")
            continue
        records[name] = dicts
    return records, faults


def _missing(paths: Sequence[str]) -> list[str]:
    return [p for p in paths if not os.path.isfile(p)]


def missing_files(paths: Sequence[str], *, threads: int = STAT_THREADS) -> list[str]:
    """The entries of ``paths`` that are not files, in order: one ``stat`` each, in chunks
    spread over ``threads`` threads (the ``stat`` system call releases the GIL)."""
    if threads <= 1 or len(paths) <= _STAT_CHUNK:
        return _missing(paths)
    chunks = [paths[i : i + _STAT_CHUNK] for i in range(0, len(paths), _STAT_CHUNK)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [p for part in pool.map(_missing, chunks) for p in part]


def missing_file_faults(name: str, records: Sequence[dict]) -> tuple[list[str], int]:
    """A fault for each kind of file (:data:`FILE_KEYS`) of dataset ``name`` with missing files:
    how many of how many, and the first few paths. Returns ``(faults, files checked)``."""
    faults, checked = [], 0
    for key, what in FILE_KEYS.items():
        paths = [r[key] for r in records if isinstance(r.get(key), str)]
        if not paths:
            continue
        checked += len(paths)
        missing = missing_files(paths)
        if missing:
            shown = ", ".join(missing[:_SHOWN]) + (", ..." if len(missing) > _SHOWN else "")
            faults.append(
                f"dataset {name!r}: {len(missing)} of {len(paths)} {what} ({key}) missing, e.g. "
                f"{shown}"
            )
    return faults, checked


def _targets(record: dict) -> int:
    """Non-crowd segments (panoptic ``segments_info``) or instances (``annotations``)."""
    items = record.get("segments_info", record.get("annotations")) or []
    return sum(1 for s in items if isinstance(s, dict) and not s.get("iscrowd", 0))


def largest_target_count(records: Sequence[dict]) -> tuple[int, dict | None]:
    """The largest number of non-crowd segments (or instances) of one image, which Mask2Former's
    matcher pairs one-to-one with the queries, and that image's dict (None for no records)."""
    best, where = 0, None
    for record in records:
        count = _targets(record)
        if count > best:
            best, where = count, record
    return best, where


def batch_faults(cfg: CfgNode, processes: int) -> list[str]:
    """``SOLVER.IMS_PER_BATCH`` (over all processes) must split evenly into ``processes``."""
    total = cfg.SOLVER.IMS_PER_BATCH
    if isinstance(total, int) and processes > 0 and total % processes:
        return [
            f"SOLVER.IMS_PER_BATCH {total} is not divisible by the {processes} processes "
            f"(--num-gpus x --num-machines); use a multiple of {processes}"
        ]
    return []


def _meta(name: str) -> Any:
    return MetadataCatalog.get(name) if name in MetadataCatalog.list() else None


def result_faults(cfg: CfgNode, names: Sequence[str]) -> list[str]:
    """Faults of ``MODEL.MASK_FORMER.TEST.*_ON`` against the metadata of the test datasets
    ``names``, for the evaluators those flags enable (panoptic PQ, instance AP, semantic mIoU).

    * ``INSTANCE_ON`` without ``PANOPTIC_ON`` keeps instance predictions of every class (as
      Mask2Former does for instance-only datasets), so a dataset with stuff classes would hand
      the instance evaluator classes it cannot score;
    * PQ and AP read ``panoptic_json`` and ``panoptic_root`` of the metadata, mIoU the class
      list ``stuff_classes``.
    """
    test = cfg.MODEL.MASK_FORMER.TEST
    faults = []
    for name in names:
        meta = _meta(name)
        if meta is None:
            continue
        try:
            things = meta.get("thing_dataset_id_to_contiguous_id")
            classes = meta.get("stuff_classes")
        except (ValueError, OSError, KeyError):
            continue  # a category list read from a missing or bad file: load_datasets names it
        if test.INSTANCE_ON and not test.PANOPTIC_ON and things is not None and classes:
            stuff = len(classes) - len(things)
            if stuff > 0:
                faults.append(
                    "MODEL.MASK_FORMER.TEST.INSTANCE_ON True with PANOPTIC_ON False: instance "
                    f"predictions then include the {stuff} stuff classes of dataset {name!r}, "
                    "which mask AP cannot score; set PANOPTIC_ON True or INSTANCE_ON False"
                )
        if test.PANOPTIC_ON or test.INSTANCE_ON:
            flags = " / ".join(
                f"MODEL.MASK_FORMER.TEST.{k} True"
                for k, on in (("PANOPTIC_ON", test.PANOPTIC_ON), ("INSTANCE_ON", test.INSTANCE_ON))
                if on
            )
            absent = [k for k in ("panoptic_json", "panoptic_root") if meta.get(k) is None]
            if absent:
                faults.append(
                    f"{flags}, but dataset {name!r} has no panoptic ground truth (metadata "
                    f"{', '.join(absent)}); evaluate it without them"
                )
        if test.SEMANTIC_ON and classes is None:
            faults.append(
                f"MODEL.MASK_FORMER.TEST.SEMANTIC_ON True, but dataset {name!r} has no class "
                "list (metadata stuff_classes) to score mIoU against"
            )
    return faults


def ground_truth_faults(cfg: CfgNode, names: Sequence[str]) -> list[str]:
    """The panoptic ground-truth file (metadata ``panoptic_json``) of each test dataset in
    ``names`` exists, when PQ or AP is evaluated."""
    test = cfg.MODEL.MASK_FORMER.TEST
    if not (test.PANOPTIC_ON or test.INSTANCE_ON):
        return []
    faults = []
    for name in names:
        meta = _meta(name)
        path = meta.get("panoptic_json") if meta is not None else None
        if isinstance(path, str) and not os.path.isfile(path):
            faults.append(
                f"MODEL.MASK_FORMER.TEST.PANOPTIC_ON / INSTANCE_ON: the panoptic ground truth of "
                f"dataset {name!r} (metadata panoptic_json) is missing: {path}"
            )
    return faults


def metadata_faults(names: Iterable[str]) -> list[str]:
    """Datasets among ``names`` whose metadata cannot be read (a category list read from a
    missing or malformed file), one fault each."""
    faults = []
    for name in dict.fromkeys(names):
        meta = _meta(name)
        if meta is None:
            continue
        try:
            meta.as_dict()
        except (ValueError, OSError, KeyError) as err:
            faults.append(f"dataset {name!r}: {err.args[0] if isinstance(err, KeyError) else err}")
    return faults


def weights_faults(cfg: CfgNode) -> list[str]:
    """A local ``MODEL.WEIGHTS`` that is not a file (remote weights are fetched, and checked,
    by the download)."""
    weights = cfg.MODEL.WEIGHTS
    if weights and "://" not in weights and not os.path.isfile(weights):
        return [f"MODEL.WEIGHTS {weights!r}: no such file"]
    return []
