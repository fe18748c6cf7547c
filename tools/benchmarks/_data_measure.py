"""One measurement of ``python tools/benchmark.py data`` in a fresh process.

``python -P _data_measure.py REQUEST``: REQUEST is a JSON object (``task`` "load" or "run",
``root`` of a scale set, ``set`` "panoptic" or "instances", ``cache``, and for "run" ``ranks``,
``workers``, ``mapper_images``); the result is printed as one JSON line. See
``tools/benchmarks/data.py`` for what is measured.
"""

from __future__ import annotations

import glob
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from instaformer.data.augment import build_lsj_augmentation
from instaformer.data.datasets import register_instaorder, register_instaorder_panoptic
from instaformer.data.mapper import InstaOrderPanopticMapper
from instaformer.instaordernet.data import training_items
from mask2former.config import get_base_cfg
from mask2former.data.build import (
    MapDataset,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    trivial_batch_collator,
    worker_init_fn,
)
from mask2former.engine import launch
from mask2former.utils import comm
from mask2former.utils.memory import process_memory

NAMES = {"panoptic": "scale_instaorder_panoptic", "instances": "scale_instaorder"}
EPOCH_BATCH = 64  # records per worker task in the epoch (a small result per record)
MAPPER_BATCH = 2  # images per rank and iteration (16 over 8 GPUs)
_baseline: int | None = None  # this worker's USS before it held the dataset


def _register(root: str) -> None:
    register_instaorder_panoptic(NAMES["panoptic"], split="train", root=root, replace=True)
    register_instaorder(NAMES["instances"], split="train", root=root, replace=True)


def _start(request: dict[str, Any]) -> tuple[Sequence[dict], float]:
    """The records as training starts from them, and the seconds that took."""
    start = time.perf_counter()
    cache = request["cache"]
    if request["set"] == "panoptic":
        records = get_detection_dataset_dicts(NAMES["panoptic"], filter_empty=True, cache=cache)
        cfg = get_base_cfg()
        cfg.DATALOADER.NUM_WORKERS = 0
        cfg.SEED = 0
        loader = build_detection_train_loader(cfg, mapper=lambda d: d, dataset=records)
        next(loader)
    else:
        records = get_detection_dataset_dicts(NAMES["instances"], cache=cache)
        for task in ("od", "o"):
            items = training_items(records, task)
            items[0]
    return records, time.perf_counter() - start


def _record_files(root: str) -> list[str]:
    return glob.glob(os.path.join(root, "coco", "annotations", "*.records"))


def load(request: dict[str, Any]) -> dict[str, Any]:
    _register(request["root"])
    before = process_memory()
    records, seconds = _start(request)
    after = process_memory()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    dataset = MapDataset(records, lambda d: d)
    picks = np.random.default_rng(0).integers(len(records), size=2000).tolist()
    start = time.perf_counter()
    for i in picks:
        dataset[i]
    item_us = 1e6 * (time.perf_counter() - start) / len(picks)
    files = _record_files(request["root"])
    return {
        "records": len(records),
        "startup_s": seconds,
        "peak_rss": peak,
        "uss": after["uss"] - before["uss"],
        "pss": after["pss"] - before["pss"],
        "file_bytes": sum(os.path.getsize(f) for f in files) if request["cache"] else 0,
        "item_us": item_us,
    }


def _discard(record: dict) -> None:
    pass


class Probe(Dataset):
    """The epoch's dataset: item i reads record i (as ``MapDataset`` does) and returns this
    worker's pid and its USS before it held the dataset: when the worker is spawned, before the
    dataset was unpickled in it (pickle calls :func:`_empty_probe` first); when it is forked, at
    its first item."""

    def __init__(self, records: Sequence[dict]) -> None:
        self.dataset = MapDataset(records, _discard)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, int]:
        global _baseline
        if _baseline is None:
            _baseline = process_memory()["uss"]
        self.dataset[index]
        return os.getpid(), _baseline

    def __reduce__(self) -> tuple[Any, ...]:
        return (_empty_probe, (), {"dataset": self.dataset})


def _empty_probe() -> Probe:
    global _baseline
    _baseline = process_memory()["uss"]
    return Probe.__new__(Probe)


def _batches(indices: Sequence[int], size: int) -> list[list[int]]:
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]


def _loader(dataset: Any, batches: list[list[int]], workers: int, persistent: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=trivial_batch_collator,
        worker_init_fn=worker_init_fn,
        persistent_workers=persistent,
    )


def _throughput(records: Sequence[dict], order: Sequence[int], request: dict, lsj: bool) -> float:
    augmentation = (
        build_lsj_augmentation(
            image_size=1024, min_scale=0.1, max_scale=2.0, random_flip="horizontal"
        )
        if lsj
        else None
    )
    mapper = InstaOrderPanopticMapper(is_train=True, augmentation=augmentation, task="od")
    picks = list(order[: request["mapper_images"] + MAPPER_BATCH * request["workers"]])
    loader = _loader(
        MapDataset(records, mapper), _batches(picks, MAPPER_BATCH), request["workers"], False
    )
    comm.synchronize()
    images, start = 0, 0.0
    for n, batch in enumerate(loader):
        if n < request["workers"]:  # batch n comes from worker n: start-up excluded
            start = time.perf_counter()
        else:
            images += len(batch)
    return images / (time.perf_counter() - start)


def _rank(request: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    _register(request["root"])
    rank, world = comm.get_rank(), comm.get_world_size()
    before = process_memory()
    records, startup = _start(request)
    loaded = process_memory()
    comm.synchronize()
    order = np.random.default_rng(0).permutation(len(records))[rank::world].tolist()
    loader = _loader(Probe(records), _batches(order, EPOCH_BATCH), request["workers"], True)
    baseline: dict[int, int] = {}
    for batch in loader:
        baseline.update(batch)
    comm.synchronize()  # every rank's epoch is over; the workers wait for the next one
    growth = [process_memory(pid)["uss"] - uss for pid, uss in baseline.items()]
    comm.synchronize()
    del loader
    result = {
        "startup_s": startup,
        "rank_uss": loaded["uss"] - before["uss"],
        "rank_pss": loaded["pss"] - before["pss"],
        "worker_growth": growth,
    }
    if request["set"] == "panoptic" and request["mapper_images"]:
        result["rate_480x640"] = _throughput(records, order, request, lsj=False)
        result["rate_lsj1024"] = _throughput(records, order, request, lsj=True)
    with open(os.path.join(request["out"], f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def run(request: dict[str, Any]) -> dict[str, Any]:
    ranks = request["ranks"]
    with tempfile.TemporaryDirectory() as out:
        launch(_rank, ranks, backend="gloo", args=({**request, "out": out},))
        per_rank = []
        for r in range(ranks):
            with open(os.path.join(out, f"rank{r}.json")) as f:
                per_rank.append(json.load(f))
    held = sum(r["rank_pss"] + sum(r["worker_growth"]) for r in per_rank)
    merged: dict[str, Any] = {
        "ranks": ranks,
        "workers": request["workers"],
        "workers_total": ranks * request["workers"],
        "startup_s": [r["startup_s"] for r in per_rank],
        "rank_uss": [r["rank_uss"] for r in per_rank],
        "worker_growth": [g for r in per_rank for g in r["worker_growth"]],
        "held": held,
    }
    for key in ("rate_480x640", "rate_lsj1024"):
        if key in per_rank[0]:
            merged[key] = sum(r[key] for r in per_rank)
    return merged


def main() -> None:
    request = json.loads(sys.argv[1])
    result = load(request) if request["task"] == "load" else run(request)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
