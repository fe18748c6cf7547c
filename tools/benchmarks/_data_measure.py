"""One measurement of ``python tools/benchmark.py data`` in a fresh process.

``python -P _data_measure.py REQUEST``: REQUEST is a JSON object: ``task`` ("load", "run" or
"mapper"), ``root`` of the scale sets, ``set`` ("panoptic" or "instances"), ``cache``, and for
"run" and "mapper" ``ranks`` and ``workers``, for "mapper" ``mapper_images`` and ``rounds``. The
result is printed as one JSON line. See ``tools/benchmarks/data.py`` for what is measured.
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

# before torch: importing mask2former chooses the OpenMP wait policy, read when torch loads
import mask2former  # noqa: F401

# isort: split
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
from mask2former.data.cache import subset
from mask2former.engine import launch
from mask2former.utils import comm
from mask2former.utils.memory import process_memory

NAMES = {"panoptic": "scale_instaorder_panoptic", "instances": "scale_instaorder"}
EPOCH_BATCH = 64  # records per worker task in the epoch (a small result per record)
CONTROL_ITEMS = 100 * EPOCH_BATCH  # items of the control epoch over one record
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


def _epoch_growth(records: Sequence[dict], order: list[int], workers: int) -> list[int]:
    """Each worker's USS growth (bytes) while it reads ``records[order]`` (module ``Probe``),
    measured when every rank's epoch is over, before the workers end."""
    loader = _loader(Probe(records), _batches(order, EPOCH_BATCH), workers, True)
    baseline: dict[int, int] = {}
    for batch in loader:
        baseline.update(batch)
    comm.synchronize()
    growth = [process_memory(pid)["uss"] - uss for pid, uss in baseline.items()]
    comm.synchronize()
    return growth


def _rank(request: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    _register(request["root"])
    rank, world = comm.get_rank(), comm.get_world_size()
    before = process_memory()
    records, startup = _start(request)
    comm.synchronize()  # every rank has mapped the records: pages they share count as shared
    loaded = process_memory()
    order = np.random.default_rng(0).permutation(len(records))[rank::world].tolist()
    growth = _epoch_growth(records, order, request["workers"])
    # The loader's own growth: the same machinery over one record, read CONTROL_ITEMS times.
    control = _epoch_growth([records[0]], [0] * CONTROL_ITEMS, request["workers"])
    result = {
        "startup_s": startup,
        "rank_uss": loaded["uss"] - before["uss"],
        "rank_pss": loaded["pss"] - before["pss"],
        "worker_growth": growth,
        "control_growth": control,
    }
    with open(os.path.join(request["out"], f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def _gather(request: dict[str, Any], rank_main: Any) -> list[dict[str, Any]]:
    """Run ``rank_main(request)`` in ``request["ranks"]`` processes; their JSON results."""
    with tempfile.TemporaryDirectory() as out:
        launch(rank_main, request["ranks"], backend="gloo", args=({**request, "out": out},))
        results = []
        for r in range(request["ranks"]):
            with open(os.path.join(out, f"rank{r}.json")) as f:
                results.append(json.load(f))
    return results


def run(request: dict[str, Any]) -> dict[str, Any]:
    per_rank = _gather(request, _rank)
    control = float(np.mean([g for r in per_rank for g in r["control_growth"]]))
    growth = [g for r in per_rank for g in r["worker_growth"]]
    return {
        "ranks": request["ranks"],
        "workers": request["workers"],
        "startup_s": [r["startup_s"] for r in per_rank],
        "rank_uss": [r["rank_uss"] for r in per_rank],
        "worker_growth": growth,
        "control_growth": control,
        "held": sum(r["rank_pss"] for r in per_rank) + sum(max(0.0, g - control) for g in growth),
    }


def _rate(dataset: Sequence[dict], picks: list[int], workers: int, lsj: bool) -> float:
    """Images per second of the ``instaorder_panoptic`` training mapper over ``picks``, once
    every worker has delivered its first batch."""
    augmentation = (
        build_lsj_augmentation(
            image_size=1024, min_scale=0.1, max_scale=2.0, random_flip="horizontal"
        )
        if lsj
        else None
    )
    mapper = InstaOrderPanopticMapper(is_train=True, augmentation=augmentation, task="od")
    loader = _loader(MapDataset(dataset, mapper), _batches(picks, MAPPER_BATCH), workers, False)
    comm.synchronize()
    images, start = 0, 0.0
    for n, batch in enumerate(loader):
        if n < workers:  # batch n comes from worker n: their start-up is not timed
            start = time.perf_counter()
        else:
            images += len(batch)
    return images / (time.perf_counter() - start)


def _mapper_rank(request: dict[str, Any]) -> None:
    """Today's path (``MapDataset`` over a list: a deep copy per item) against the cache's (a
    record decoded per item), alternating, ``rounds`` times, on the same images."""
    torch.set_num_threads(1)
    _register(request["root"])
    rank, world = comm.get_rank(), comm.get_world_size()
    records = get_detection_dataset_dicts(NAMES["panoptic"])
    count = (request["mapper_images"] + MAPPER_BATCH * request["workers"]) * world
    paths = {"off": records[:count], "on": subset(records, range(count))}
    picks = list(range(rank, count, world))
    rates: dict[str, list[float]] = {}
    for _ in range(request["rounds"]):
        for recipe in ("480x640", "lsj1024"):
            for path, dataset in paths.items():
                rate = _rate(dataset, picks, request["workers"], lsj=recipe == "lsj1024")
                rates.setdefault(f"{path} {recipe}", []).append(rate)
    with open(os.path.join(request["out"], f"rank{rank}.json"), "w") as f:
        json.dump(rates, f)


def mapper(request: dict[str, Any]) -> dict[str, Any]:
    per_rank = _gather(request, _mapper_rank)
    totals = {key: np.sum([r[key] for r in per_rank], axis=0).tolist() for key in per_rank[0]}
    return {"ranks": request["ranks"], "workers": request["workers"], "rates": totals}


def main() -> None:
    request = json.loads(sys.argv[1])
    result = {"load": load, "run": run, "mapper": mapper}[request["task"]](request)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
