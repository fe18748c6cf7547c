"""Training/inference samplers and loaders: determinism, resumability, sharding, grouping."""

from __future__ import annotations

import itertools

import pytest

from instaformer.config import get_cfg
from mask2former.data.build import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from mask2former.data.samplers import InferenceSampler, TrainingSampler


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_training_sampler_deterministic_and_seed_dependent():
    a = _take(TrainingSampler(10, seed=3, rank=0, world_size=1), 35)
    b = _take(TrainingSampler(10, seed=3, rank=0, world_size=1), 35)
    c = _take(TrainingSampler(10, seed=4, rank=0, world_size=1), 35)
    assert a == b and a != c
    for epoch in range(3):  # each epoch is a permutation
        assert sorted(a[epoch * 10 : epoch * 10 + 10]) == list(range(10))


def test_training_sampler_resumes_mid_epoch():
    full = _take(TrainingSampler(7, seed=1, rank=0, world_size=1), 40)
    for start in (0, 3, 7, 18):
        assert (
            _take(TrainingSampler(7, seed=1, start=start, rank=0, world_size=1), 10)
            == full[start : start + 10]
        )


def test_training_sampler_shards_ranks_disjointly():
    world = 3
    streams = [
        _take(TrainingSampler(12, seed=5, rank=r, world_size=world), 8) for r in range(world)
    ]
    merged = [streams[i % world][i // world] for i in range(24)]  # global order
    assert sorted(merged[:12]) == list(range(12)) and sorted(merged[12:]) == list(range(12))
    resumed = _take(TrainingSampler(12, seed=5, start=2, rank=1, world_size=world), 4)
    assert resumed == streams[1][2:6]


def test_inference_sampler_covers_each_index_once():
    shards = [list(InferenceSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 3, 3]
    assert sum(shards, []) == list(range(10))


def _toy_dicts():
    # ids 0-5 landscape, 6-9 portrait
    return [{"image_id": i, "height": 10, "width": 20 if i < 6 else 5} for i in range(10)]


def _cfg(grouping, workers=0):
    cfg = get_cfg()
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = grouping
    cfg.SEED = 11
    return cfg


def _ids(loader, n):
    return [[d["image_id"] for d in batch] for batch in itertools.islice(loader, n)]


@pytest.mark.parametrize("grouping", [False, True])
def test_train_loader_is_deterministic_and_resumable(grouping):
    cfg = _cfg(grouping)
    mapper = dict
    full = _ids(build_detection_train_loader(cfg, mapper=mapper, dataset=_toy_dicts()), 12)
    again = _ids(build_detection_train_loader(cfg, mapper=mapper, dataset=_toy_dicts()), 12)
    resumed = _ids(
        build_detection_train_loader(cfg, mapper=mapper, dataset=_toy_dicts(), start_iter=5), 7
    )
    assert full == again
    assert resumed == full[5:]
    assert all(len(b) == 2 for b in full)
    if grouping:
        assert all((b[0] < 6) == (b[1] < 6) for b in full)


def test_train_loader_with_a_worker_matches_in_process():
    in_process = _ids(
        build_detection_train_loader(_cfg(True), mapper=dict, dataset=_toy_dicts()), 5
    )
    worker = _ids(build_detection_train_loader(_cfg(True, 1), mapper=dict, dataset=_toy_dicts()), 5)
    assert worker == in_process


def test_grouping_needs_image_sizes():
    cfg = _cfg(True)
    with pytest.raises(KeyError, match="height"):
        build_detection_train_loader(cfg, mapper=dict, dataset=[{"image_id": 0}])


def test_test_loader_one_image_per_batch():
    loader = build_detection_test_loader(_cfg(False), "unused", mapper=dict, dataset=_toy_dicts())
    batches = list(loader)
    assert [len(b) for b in batches] == [1] * 10
    assert [b[0]["image_id"] for b in batches] == list(range(10))


def test_unknown_dataset_name_lists_registered():
    import instaformer.data  # noqa: F401  (registers the InstaOrder datasets)

    with pytest.raises(KeyError, match="instaorder_2017_val_panoptic"):
        get_detection_dataset_dicts(["not_registered"])
