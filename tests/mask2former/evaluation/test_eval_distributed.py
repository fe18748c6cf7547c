"""Results gathered over 2 gloo processes on CPU equal the single-process results; lists
gathered with ``comm.gather_lists`` arrive in rank order on rank 0 only."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from instaformer.evaluation import DepthEvaluator, OcclusionEvaluator
from mask2former.evaluation import COCOPanopticEvaluator, DatasetEvaluators, SemSegEvaluator
from mask2former.structures import id2rgb
from mask2former.utils import comm

NUM_IMAGES = 9


def _samples(gt_folder: str) -> list[tuple[dict, dict]]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(NUM_IMAGES):
        k = int(rng.integers(1, 7))
        occ = (rng.random((k, k)) < 0.3).astype(np.int64)
        np.fill_diagonal(occ, 0)
        depth = np.full((k, k), -1, dtype=np.int64)
        for a in range(k):
            for b in range(a + 1, k):
                d = int(rng.integers(-1, 3))  # -1 = unlabelled, 0 farther, 1 nearer, 2 equal
                depth[a, b] = d
                depth[b, a] = d if d in (-1, 2) else 1 - d
        overlap = np.triu(rng.integers(0, 2, size=(k, k)), 1)
        overlap = overlap + overlap.T
        np.fill_diagonal(overlap, -1)
        count = np.triu(rng.integers(1, 4, size=(k, k)), 1)
        count = count + count.T
        np.fill_diagonal(count, -1)
        sem_gt = rng.integers(0, 3, size=(6, 8))
        sem_scores = torch.tensor(rng.random((3, 6, 8)), dtype=torch.float32)
        pan_pred = np.where(np.arange(8)[None, :] < 3 + i % 3, 1, 2).repeat(6, axis=0)
        inp = {
            "image_id": i,
            "occlusion_matrix": torch.tensor(occ),
            "depth_matrix": torch.tensor(depth),
            "overlap_matrix": torch.tensor(overlap),
            "count_matrix": torch.tensor(count),
            "sem_seg": torch.tensor(sem_gt),
        }
        out = {
            "occlusion": torch.tensor((rng.random((k, k)) < 0.4).astype(np.int64)),
            "depth": torch.tensor(rng.integers(0, 3, size=(k, k))),
            "sem_seg": sem_scores,
            "panoptic_seg": (
                torch.tensor(pan_pred, dtype=torch.int32),
                [
                    {"id": 1, "category_id": 0, "isthing": True},
                    {"id": 2, "category_id": 1, "isthing": False},
                ],
            ),
        }
        samples.append((inp, out))
    return samples


def _write_panoptic_gt(root: Path) -> tuple[str, str]:
    folder = root / "pan"
    folder.mkdir()
    ids = np.where(np.arange(8)[None, :] < 4, 5, 6).repeat(6, axis=0)
    Image.fromarray(id2rgb(ids)).save(folder / "gt.png")
    annotations = [
        {
            "image_id": i,
            "file_name": "gt.png",
            "segments_info": [
                {"id": 5, "category_id": 1, "iscrowd": 0},
                {"id": 6, "category_id": 2, "iscrowd": 0},
            ],
        }
        for i in range(NUM_IMAGES)
    ]
    categories = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0}]
    path = root / "pan.json"
    path.write_text(json.dumps({"annotations": annotations, "categories": categories}))
    return str(path), str(folder)


def _evaluators(gt_json: str, gt_folder: str) -> DatasetEvaluators:
    return DatasetEvaluators(
        [
            OcclusionEvaluator(multi_scale_evaluation=True),
            DepthEvaluator(multi_scale_evaluation=True),
            SemSegEvaluator(num_classes=3),
            COCOPanopticEvaluator(
                gt_json=gt_json,
                gt_folder=gt_folder,
                thing_dataset_id_to_contiguous_id={1: 0},
                stuff_dataset_id_to_contiguous_id={2: 1},
            ),
        ]
    )


def _worker(rank: int, world_size: int, init_file: str, root: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        gt_json, gt_folder = str(Path(root) / "pan.json"), str(Path(root) / "pan")
        evaluator = _evaluators(gt_json, gt_folder)
        evaluator.reset()
        for inp, out in _samples(gt_folder)[rank::world_size]:
            evaluator.process([inp], [out])
        results = evaluator.evaluate()
        with open(Path(root) / f"rank{rank}.pkl", "wb") as f:
            pickle.dump(results, f)
        lists = comm.gather_lists([rank], [f"r{rank}"] * (rank + 1))
        with open(Path(root) / f"rank{rank}_lists.pkl", "wb") as f:
            pickle.dump(lists, f)
    finally:
        dist.destroy_process_group()


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for task in a:
        assert a[task].keys() == b[task].keys(), task
        for key in a[task]:
            assert a[task][key] == pytest.approx(b[task][key], rel=1e-9, abs=1e-9, nan_ok=True), (
                task,
                key,
            )


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    gt_json, gt_folder = _write_panoptic_gt(tmp_path)
    single = _evaluators(gt_json, gt_folder)
    for inp, out in _samples(gt_folder):
        single.process([inp], [out])
    expected = single.evaluate()
    assert {"occlusion_order", "depth_order", "sem_seg", "panoptic_seg"} <= expected.keys()

    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    with open(tmp_path / "rank0.pkl", "rb") as f:
        gathered = pickle.load(f)
    with open(tmp_path / "rank1.pkl", "rb") as f:
        assert pickle.load(f) == {}
    _assert_close(gathered, expected)
    with open(tmp_path / "rank0_lists.pkl", "rb") as f:
        assert pickle.load(f) == ([0, 1], ["r0", "r1", "r1"])  # concatenated in rank order
    with open(tmp_path / "rank1_lists.pkl", "rb") as f:
        assert pickle.load(f) is None
    assert (
        gathered["occlusion_order"]["num_images"] + gathered["occlusion_order"]["num_skipped"]
        == NUM_IMAGES
    )
