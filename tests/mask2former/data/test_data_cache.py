"""The record cache (mask2former.data.cache) on an InstaOrder-like set of 5,000 records.

The set is written by ``python tools/benchmark.py data``'s writer: the session's synthetic twin
(12 images) repeated under new image ids, as InstaOrder Panoptic and as InstaOrder + COCO
instances (polygons).
"""

from __future__ import annotations

import glob
import json
import logging
import multiprocessing
import os
import sys

import numpy as np
import pytest
from torch.utils.data import DataLoader

from instaformer.data.custom import register_panoptic_order_dataset
from instaformer.data.datasets import (
    DEPTH_ENTRIES,
    OCCLUSION,
    SYNTHETIC_SUBDIR,
    register_instaorder,
    register_instaorder_panoptic,
)
from instaformer.data.synthetic import register_synthetic_instaorder
from instaformer.instaordernet.data import training_items
from mask2former.config import get_base_cfg
from mask2former.data import cache
from mask2former.data.build import (
    DATASET_COLUMNS,
    MapDataset,
    build_detection_train_loader,
    trivial_batch_collator,
)
from mask2former.data.catalog import DatasetCatalog, MetadataCatalog
from mask2former.utils.memory import process_memory
from tests.support.scripts import load_script

RECORDS = 5000
PANOPTIC = "test_cache_panoptic"
INSTANCES = "test_cache_instances"


@pytest.fixture(scope="module")
def scale_root(synthetic_datasets, tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("scale"))
    writer = load_script("tools/benchmarks/data.py")
    writer.write_scale_sets(str(synthetic_datasets / SYNTHETIC_SUBDIR), root, RECORDS)
    return root


@pytest.fixture
def registered(scale_root):
    """The two scale datasets, registered; no record file left from an earlier test."""
    for path in _record_files(scale_root):
        os.remove(path)
    register_instaorder_panoptic(PANOPTIC, split="train", root=scale_root, replace=True)
    register_instaorder(INSTANCES, split="train", root=scale_root, replace=True)
    yield scale_root
    for name in (PANOPTIC, INSTANCES):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _record_files(root: str) -> list[str]:
    return sorted(glob.glob(os.path.join(root, "coco", "annotations", "*.records")))


def _same(a: list[dict], b) -> None:
    """Equal record by record and field by field, key order and JSON types included (1 is not
    1.0 or True)."""
    assert len(a) == len(b)
    for i, record in enumerate(a):
        assert json.dumps(record) == json.dumps(b[i]), i


def test_items_equal_the_json_path_field_by_field(registered):
    parsed = {name: DatasetCatalog.get(name, cache=False) for name in (PANOPTIC, INSTANCES)}
    for name, columns in ((PANOPTIC, ()), (INSTANCES, (DEPTH_ENTRIES, OCCLUSION))):
        cached = DatasetCatalog.get(name)
        assert isinstance(parsed[name], list) and isinstance(cached, cache.RecordFile)
        _same(parsed[name], cached)
        for column in (*DATASET_COLUMNS, *columns):
            stored = cached.stored_column(column.name)
            assert stored is not None
            np.testing.assert_array_equal(stored, [column.fn(r) for r in parsed[name]])
    records = DatasetCatalog.get(INSTANCES)
    for rm_bidirec in (False, True):
        occluded = training_items(records, "o", rm_bidirec=rm_bidirec)
        assert isinstance(occluded, cache.RecordView)
        expected = training_items(parsed[INSTANCES], "o", rm_bidirec=rm_bidirec)
        assert [r["image_id"] for r in occluded] == [r["image_id"] for r in expected]
    depth = sum(len(r["instaorder"]["depth"]) for r in parsed[INSTANCES])
    assert len(training_items(records, "od")) == depth


def test_custom_and_synthetic_datasets_are_cached(registered, synthetic_datasets):
    root = registered
    register_panoptic_order_dataset(
        "test_cache_custom",
        image_root=os.path.join(root, "coco", "train2017"),
        panoptic_root=os.path.join(root, "coco", "panoptic_train2017"),
        json_file=os.path.join(root, "coco", "annotations", "InstaOrderPanoptic_train2017.json"),
        replace=True,
    )
    try:
        _same(
            DatasetCatalog.get("test_cache_custom", cache=False),
            DatasetCatalog.get("test_cache_custom"),
        )
    finally:
        DatasetCatalog.remove("test_cache_custom")
    twin = str(synthetic_datasets / SYNTHETIC_SUBDIR)
    register_synthetic_instaorder(twin)
    for name in ("synthetic_instaorder_train", "synthetic_instaorder_train_instances"):
        cached = DatasetCatalog.get(name)
        assert isinstance(cached, cache.RecordFile)
        _same(DatasetCatalog.get(name, cache=False), cached)


def test_one_record_file_per_node_and_key(registered):
    root = registered
    DatasetCatalog.get(PANOPTIC)
    DatasetCatalog.get(PANOPTIC)
    assert len(_record_files(root)) == 1
    # Another registration argument is another key: a second file, built once.
    images = os.path.join(root, "coco", "train2017")
    DatasetCatalog.register(
        "test_cache_other", cache.CachedLoader(lambda: _source(root, images + "/"))
    )
    try:
        DatasetCatalog.get("test_cache_other")
        DatasetCatalog.get("test_cache_other")
    finally:
        DatasetCatalog.remove("test_cache_other")
    assert len(_record_files(root)) == 2
    # With the cache off nothing is written.
    before = _record_files(root)
    DatasetCatalog.get(INSTANCES, cache=False)
    assert _record_files(root) == before


def _source(root: str, image_dir: str) -> cache.RecordSource:
    from instaformer.data.datasets import instaorder_panoptic_source

    coco = os.path.join(root, "coco")
    json_file = os.path.join(coco, "annotations", "InstaOrderPanoptic_train2017.json")
    return instaorder_panoptic_source(
        json_file, image_dir, os.path.join(coco, "panoptic_train2017")
    )


def test_read_only_folder_uses_the_cache_folder(registered, tmp_path, monkeypatch):
    monkeypatch.setenv("INSTAFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_writable", lambda folder: False)
    records = DatasetCatalog.get(PANOPTIC)
    assert os.path.dirname(records.path) == str(tmp_path / "cache" / "records")
    assert _record_files(registered) == []


def _load_in_child(root: str, barrier, queue) -> None:
    logging.basicConfig(level=logging.INFO, force=True)
    register_instaorder_panoptic(PANOPTIC, split="train", root=root, replace=True)
    barrier.wait()
    records = DatasetCatalog.get(PANOPTIC)
    queue.put((len(records), records.footer["crc32"], records[RECORDS - 1]["image_id"]))


@pytest.mark.skipif(sys.platform != "linux", reason="forks the racing processes (Linux)")
def test_two_processes_racing_build_one_valid_file(registered, capfd):
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(2), context.Queue()
    children = [
        context.Process(target=_load_in_child, args=(registered, barrier, queue)) for _ in range(2)
    ]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert results[0] == results[1] and results[0][0] == RECORDS
    assert len(_record_files(registered)) == 1
    assert capfd.readouterr().err.count("Built record cache") == 1
    folder = os.path.join(registered, "coco", "annotations")
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]


def test_corrupt_truncated_and_stale_files_are_rebuilt(registered, caplog):
    caplog.set_level(logging.INFO, logger="mask2former.data.cache")
    good = DatasetCatalog.get(PANOPTIC)
    path, crc = good.path, good.footer["crc32"]
    expected = good[RECORDS // 2]
    del good
    size = os.path.getsize(path)
    damage = {
        "truncated": lambda f: f.truncate(size // 2),
        "a flipped byte": lambda f: (f.seek(size // 3), f.write(b"\xff\x00\xff")),
    }
    for what, change in damage.items():
        caplog.clear()
        with open(path, "r+b") as f:
            change(f)
        records = DatasetCatalog.get(PANOPTIC)
        assert "is corrupt" in caplog.text and "rebuilding" in caplog.text, what
        assert records.footer["crc32"] == crc and records[RECORDS // 2] == expected, what
    json_file = os.path.join(registered, "coco", "annotations", "InstaOrderPanoptic_train2017.json")
    caplog.clear()
    os.utime(json_file)  # touched, same content: kept
    assert DatasetCatalog.get(PANOPTIC).footer["crc32"] == crc
    assert "Built record cache" not in caplog.text
    with open(json_file, "a") as f:
        f.write("\n")  # another content (the same records)
    caplog.clear()
    assert DatasetCatalog.get(PANOPTIC)[RECORDS // 2] == expected
    assert "is stale" in caplog.text and "has changed" in caplog.text
    assert len(_record_files(registered)) == 1


def _deep_size(value) -> int:
    """Bytes of ``value`` and everything it holds (JSON values)."""
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(_deep_size(k) + _deep_size(v) for k, v in value.items())
    elif isinstance(value, list):
        size += sum(_deep_size(v) for v in value)
    return size


def _first_uss(record: dict) -> tuple[int, int]:
    global _WORKER_USS
    if _WORKER_USS is None:
        _WORKER_USS = process_memory()["uss"]
    return os.getpid(), _WORKER_USS


_WORKER_USS: int | None = None


@pytest.mark.skipif(process_memory() is None, reason="needs /proc/PID/smaps_rollup (Linux 4.14+)")
def test_worker_memory_does_not_grow_with_the_records(registered):
    records = DatasetCatalog.get(PANOPTIC)
    record_bytes = sum(_deep_size(records[i]) for i in range(0, RECORDS, 50)) * 50
    # A forked worker that held the records as Python objects would copy about the half it
    # reads (~record_bytes / 2); the cached ones decode each record anew and keep nothing.
    bound = 4 * 2**20 + record_bytes // 50
    order = np.random.default_rng(0).permutation(RECORDS).tolist()
    loader = DataLoader(
        MapDataset(records, _first_uss),
        batch_sampler=[order[i : i + 50] for i in range(0, RECORDS, 50)],
        num_workers=2,
        collate_fn=trivial_batch_collator,
        persistent_workers=True,
        multiprocessing_context="fork",
    )
    first: dict[int, int] = {}
    for batch in loader:
        first.update(batch)
    growth = {pid: process_memory(pid)["uss"] - uss for pid, uss in first.items()}
    del loader
    assert len(growth) == 2
    assert max(growth.values()) < bound, (growth, bound, record_bytes)


def test_data_order_and_resume_are_the_same_with_the_cache(registered):
    for grouping in (True, False):
        cfg = get_base_cfg()
        cfg.DATASETS.TRAIN = (PANOPTIC,)
        cfg.DATALOADER.NUM_WORKERS = 0
        cfg.DATALOADER.ASPECT_RATIO_GROUPING = grouping
        cfg.SOLVER.IMS_PER_BATCH = 4
        cfg.SEED = 7
        batches = {}
        for on in (False, True):
            cfg.DATALOADER.RECORD_CACHE = on
            loader = build_detection_train_loader(cfg, mapper=lambda d: d["image_id"])
            batches[on] = [next(loader) for _ in range(12)]
        assert batches[True] == batches[False]
        resumed = build_detection_train_loader(cfg, mapper=lambda d: d["image_id"], start_iter=5)
        assert [next(resumed) for _ in range(7)] == batches[False][5:]
