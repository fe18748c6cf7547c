"""Data loaders for training (infinite, batched, distributed) and inference (one image per step).

A loader maps registered dataset dicts through a dataset mapper (``mapper(dict) -> dict``) and
collates a batch as a plain ``list[dict]``; images of different sizes are padded by the model.
The dataset dicts are a ``list``, or, from a cached loader, a sequence that decodes one record
per access from a memory-mapped record file (:mod:`mask2former.data.cache`): what the loaders
need over the whole dataset (sizes, empty images) is read from the file's stored columns, so no
process holds the records as Python objects.
"""

from __future__ import annotations

import copy
import ctypes
import itertools
import logging
import multiprocessing
import os
import random
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mask2former.data.cache import (
    Column,
    RecordSequence,
    concat_records,
    record_column,
    subset,
)
from mask2former.data.catalog import DatasetCatalog
from mask2former.data.samplers import (
    AspectRatioGroupedBatchSampler,
    InferenceSampler,
    TrainingSampler,
)
from mask2former.utils import comm
from mask2former.utils.threads import available_cpus

__all__ = [
    "DATASET_COLUMNS",
    "HEIGHT",
    "NO_INSTANCE",
    "WIDTH",
    "MapDataset",
    "build_batch_data_loader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "die_with_parent",
    "get_detection_dataset_dicts",
    "has_no_instance",
    "shared_seed",
    "trivial_batch_collator",
    "without_empty",
    "worker_count",
    "worker_init_fn",
]

logger = logging.getLogger(__name__)


def get_detection_dataset_dicts(
    names: str | Sequence[str], *, filter_empty: bool = False, cache: bool = True
) -> Sequence[dict]:
    """The dataset dicts of the registered datasets ``names``, one dataset after the other.

    With ``filter_empty``, dicts without a non-crowd instance are dropped: an ``annotations``
    list (COCO instances) or, for panoptic dicts without one, a ``segments_info`` list with no
    non-crowd segment. Dicts with neither key are kept.

    Args:
        cache: cached loaders serve their record files (``DATALOADER.RECORD_CACHE``); False
            parses the annotation files into lists.
    """
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("no dataset names given (DATASETS.TRAIN / DATASETS.TEST is empty)")
    parts = []
    for name in names:
        part = DatasetCatalog.get(name, cache=cache)
        if not part:
            raise ValueError(f"dataset '{name}' is empty")
        parts.append(part)
    dicts = concat_records(parts)
    if filter_empty:
        dicts, dropped = without_empty(dicts)
        if dropped:
            logger.info("Removed %d images without non-crowd annotations", dropped)
    return dicts


def has_no_instance(record: dict) -> bool:
    """True when the dataset dict lists instances (``annotations``, or panoptic
    ``segments_info``) and none of them is a non-crowd one."""
    anns = record.get("annotations", record.get("segments_info"))
    return anns is not None and not any(a.get("iscrowd", 0) == 0 for a in anns)


HEIGHT = Column("height", lambda d: d.get("height", -1))  # image height, -1 when absent
WIDTH = Column("width", lambda d: d.get("width", -1))  # image width, -1 when absent
NO_INSTANCE = Column("no_instance", lambda d: int(has_no_instance(d)))  # 1: has_no_instance
DATASET_COLUMNS = (HEIGHT, WIDTH, NO_INSTANCE)
"""The columns these loaders read over a whole dataset; cached loaders store them."""


def without_empty(dicts: Sequence[dict]) -> tuple[Sequence[dict], int]:
    """``dicts`` without those that :func:`has_no_instance` (same order), and how many those
    were."""
    empty = record_column(dicts, NO_INSTANCE).astype(bool)
    if not empty.any():
        return dicts, 0
    return subset(dicts, np.flatnonzero(~empty).tolist()), int(empty.sum())


class MapDataset(Dataset):
    """``dataset[i] = mapper(dicts[i])``, on a deep copy unless ``dicts`` decodes a new dict at
    every access (a :class:`~mask2former.data.cache.RecordSequence`), so the mapper may change
    what it is given."""

    def __init__(self, dicts: Sequence[dict], mapper: Callable[[dict], Any]) -> None:
        self._dicts = dicts
        self._mapper = mapper
        self._copy = not isinstance(dicts, RecordSequence)

    def __len__(self) -> int:
        return len(self._dicts)

    def __getitem__(self, index: int) -> Any:
        record = self._dicts[index]
        return self._mapper(copy.deepcopy(record) if self._copy else record)


def trivial_batch_collator(batch: list[Any]) -> list[Any]:
    """Keep a batch as the list of mapped dicts."""
    return batch


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Linux: ask the kernel to kill this process (SIGKILL) when its parent dies.

    A data-loading worker of a killed training process would otherwise live on, holding its
    memory, until it next looks at its queues. Elsewhere (or without a C library) nothing is
    done.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        failed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0
    except (OSError, AttributeError):
        return
    if failed:
        logger.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent died before prctl
        os._exit(1)


def worker_init_fn(worker_id: int) -> None:
    """Seed ``random`` and ``numpy`` of a worker from torch's per-worker seed, and make the
    worker die with its parent (:func:`die_with_parent`).

    The DataLoader seeds torch in each worker with ``base_seed + worker_id``, and ``base_seed``
    comes from the loader's seeded generator, so every worker's augmentations are reproducible
    and differ between workers and ranks.
    """
    die_with_parent()
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def shared_seed(seed: int) -> int:
    """``seed`` when >= 0, else one random seed drawn on rank 0 and shared by every rank."""
    if seed >= 0:
        return seed
    drawn = int(np.random.SeedSequence().generate_state(1)[0] % 2**31)
    return comm.all_gather(drawn)[0]


def _group_ids(dicts: Sequence[dict]) -> np.ndarray:
    """int8[N]: 0 for landscape (width >= height), 1 for portrait; needs ``height``/``width``
    in dicts."""
    heights, widths = record_column(dicts, HEIGHT), record_column(dicts, WIDTH)
    missing = np.flatnonzero((heights < 0) | (widths < 0))
    if len(missing):
        d = dicts[int(missing[0])]
        raise KeyError(
            f"aspect-ratio grouping needs 'height' and 'width' in every dataset dict; "
            f"{d.get('file_name', d.get('image_id'))} has neither. "
            "Set DATALOADER.ASPECT_RATIO_GROUPING False or add them in the loader."
        )
    return (widths < heights).astype(np.int8)


def worker_count(requested: int) -> int:
    """``DATALOADER.NUM_WORKERS`` capped at the cores available to this process (more workers
    than cores only compete for them, and PyTorch warns about it); the cap is logged."""
    count = min(requested, available_cpus())
    if count < requested:
        logger.info(
            "DATALOADER.NUM_WORKERS %d capped at %d (the cores available)", requested, count
        )
    return count


def build_batch_data_loader(
    dataset: Dataset,
    sampler: TrainingSampler,
    *,
    batch_size: int,
    group_ids: Sequence[int] | np.ndarray | None,
    num_workers: int,
    seed: int,
    start_iter: int = 0,
) -> Iterator[list[Any]]:
    """An infinite iterator of batches (``list`` of mapped dicts) for one rank.

    Args:
        batch_size: images per batch on this rank.
        group_ids: per-index orientation group for aspect-ratio grouping, or None.
        seed: seeds the workers' random generators (shared seed + rank).
        start_iter: number of batches already consumed (resuming); they are skipped without
            loading any image.
    """
    if group_ids is not None:
        batch_sampler = AspectRatioGroupedBatchSampler(sampler, group_ids, batch_size)
        batches: Any = itertools.islice(iter(batch_sampler), start_iter, None)
    else:
        batches = _chunks(iter(sampler), batch_size)
    generator = torch.Generator()
    generator.manual_seed(seed + comm.get_rank() * 7919 + start_iter)
    loader = DataLoader(
        dataset,
        batch_sampler=_IterBatches(batches),
        num_workers=worker_count(num_workers),
        collate_fn=trivial_batch_collator,
        worker_init_fn=worker_init_fn,
        generator=generator,
        persistent_workers=False,
    )
    return iter(loader)


def _chunks(indices: Iterator[int], size: int) -> Iterator[list[int]]:
    while True:
        yield list(itertools.islice(indices, size))


class _IterBatches:
    """Wrap an (infinite) iterator of index lists as a ``batch_sampler``."""

    def __init__(self, batches: Iterator[list[int]]) -> None:
        self._batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return self._batches


def build_detection_train_loader(
    cfg: Any,
    *,
    mapper: Callable[[dict], Any],
    dataset: Sequence[dict] | None = None,
    start_iter: int = 0,
) -> Iterator[list[Any]]:
    """Infinite training batches for this rank.

    Reads ``DATASETS.TRAIN``, ``DATALOADER.{NUM_WORKERS, ASPECT_RATIO_GROUPING,
    FILTER_EMPTY_ANNOTATIONS, RECORD_CACHE}``, ``SOLVER.IMS_PER_BATCH`` (total over ranks) and
    ``SEED``.

    Args:
        mapper: dataset dict -> model input dict (e.g. the ``instaorder_panoptic`` mapper).
        dataset: dataset dicts to use instead of ``DATASETS.TRAIN``.
        start_iter: iteration to resume from; the batches of iterations ``< start_iter`` are
            skipped, so a resumed run with the same ``SEED`` sees the same data order (a negative
            ``SEED`` draws a fresh one and cannot be resumed identically).
    Returns:
        iterator of ``list[dict]`` batches of ``SOLVER.IMS_PER_BATCH / world_size`` mapped dicts.
    """
    world_size = comm.get_world_size()
    total = cfg.SOLVER.IMS_PER_BATCH
    if total % world_size != 0:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({total}) must be divisible by the number of processes "
            f"({world_size})"
        )
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            cache=cfg.DATALOADER.RECORD_CACHE,
        )
    seed = shared_seed(cfg.SEED)
    batch_size = total // world_size
    grouping = cfg.DATALOADER.ASPECT_RATIO_GROUPING
    group_ids = _group_ids(dataset) if grouping else None
    # Without grouping the sampler skips the consumed indices itself (O(1)); with grouping the
    # batch sampler replays the index stream, which is cheap (no image is loaded).
    start = 0 if grouping else start_iter * batch_size
    sampler = TrainingSampler(len(dataset), shuffle=True, seed=seed, start=start)
    return build_batch_data_loader(
        MapDataset(dataset, mapper),
        sampler,
        batch_size=batch_size,
        group_ids=group_ids,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        seed=seed,
        start_iter=start_iter,
    )


def build_detection_test_loader(
    cfg: Any,
    dataset_name: str | Sequence[str],
    *,
    mapper: Callable[[dict], Any],
    dataset: Sequence[dict] | None = None,
) -> DataLoader:
    """Loader over one pass of ``dataset_name`` sharded over ranks, one image per batch.

    Returns:
        DataLoader yielding ``list`` of one mapped dict; rank ``r`` sees a contiguous block of
        the dataset (see :class:`InferenceSampler`), all ranks together see each image once.
    """
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            dataset_name, filter_empty=False, cache=cfg.DATALOADER.RECORD_CACHE
        )
    return DataLoader(
        MapDataset(dataset, mapper),
        batch_size=1,
        sampler=InferenceSampler(len(dataset)),
        num_workers=worker_count(cfg.DATALOADER.NUM_WORKERS),
        collate_fn=trivial_batch_collator,
        worker_init_fn=worker_init_fn,
    )
