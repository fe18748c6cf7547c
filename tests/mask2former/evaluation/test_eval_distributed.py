"""Results gathered over 2 gloo processes on CPU equal the single-process results (bit for bit,
with the same prediction files, on a synthetic split); lists gathered with
``comm.gather_lists`` arrive in rank order on rank 0 only."""

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

from instaformer.evaluation import DepthEvaluator, OcclusionEvaluator, write_results
from mask2former.data.samplers import InferenceSampler
from mask2former.evaluation import (
    COCOInstanceEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)
from mask2former.structures import Instances, id2rgb, rgb2id
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


# A synthetic split evaluated by every evaluator, prediction files written: one process against
# two, each rank taking its contiguous block of images as the test loader's InferenceSampler.
SPLIT_IMAGES = 8  # split 4 + 4: with per-rank sums, PQ_th would differ in its last bit


def _split_samples(root: str) -> tuple[list[tuple[dict, dict]], dict]:
    """(input, model-like output) per image of the split under ``root``, and its GT files."""
    coco = Path(root) / "coco"
    gt_json = coco / "annotations" / "panoptic_val2017.json"
    gt = json.loads(gt_json.read_text())
    contiguous = {c["id"]: k for k, c in enumerate(gt["categories"])}  # for the semantic GT
    things = {c["id"] for c in gt["categories"] if c["isthing"]}
    samples = []
    for ann in gt["annotations"]:
        rng = np.random.default_rng(ann["image_id"])
        png = coco / "panoptic_val2017" / ann["file_name"]
        ids = rgb2id(np.asarray(Image.open(png).convert("RGB")))
        segments = ann["segments_info"]
        pred = np.zeros(ids.shape, dtype=np.int32)
        for n, seg in enumerate(segments[:-1]):  # moved by up to 3 px; the last one left out
            shift = tuple(int(v) for v in rng.integers(-3, 4, size=2))
            pred[np.roll(ids, shift, axis=(0, 1)) == seg["id"]] = n + 1
        thing_masks = [ids == seg["id"] for seg in segments if seg["category_id"] in things]
        masks = np.stack([np.roll(m, 1, axis=0) for m in thing_masks]).astype(np.float32)
        k = int(rng.integers(1, 5))
        occlusion = (rng.random((k, k)) < 0.3).astype(np.int64)
        np.fill_diagonal(occlusion, 0)
        overlap = np.triu(rng.integers(0, 2, size=(k, k)), 1)
        count = np.triu(rng.integers(1, 4, size=(k, k)), 1)
        depth = np.triu(rng.integers(0, 3, size=(k, k)), 1)
        inp = {
            "image_id": ann["image_id"],
            "pan_seg_file_name": str(png),
            "segments_info": [
                {"id": seg["id"], "category_id": contiguous[seg["category_id"]]} for seg in segments
            ],
            "occlusion_matrix": torch.tensor(occlusion),
            "depth_matrix": torch.tensor(depth + depth.T - np.eye(k, dtype=np.int64)),
            "overlap_matrix": torch.tensor(overlap + overlap.T - np.eye(k, dtype=np.int64)),
            "count_matrix": torch.tensor(count + count.T - np.eye(k, dtype=np.int64)),
        }
        out = {
            "panoptic_seg": (
                torch.tensor(pred),
                [
                    {"id": n + 1, "category_id": seg["category_id"], "score": float(n)}
                    for n, seg in enumerate(segments[:-1])
                ],
            ),
            "instances": Instances(
                ids.shape,
                pred_masks=torch.tensor(masks),
                scores=torch.tensor(rng.random(len(masks)), dtype=torch.float32),
                pred_classes=torch.tensor(
                    [seg["category_id"] for seg in segments if seg["category_id"] in things]
                ),
            ),
            "sem_seg": torch.rand((len(contiguous), *ids.shape), generator=torch.Generator()),
            "occlusion": torch.tensor((rng.random((k, k)) < 0.4).astype(np.int64)),
            "depth": torch.tensor(rng.integers(0, 3, size=(k, k))),
        }
        samples.append((inp, out))
    files = {
        "gt_json": str(gt_json),
        "gt_folder": str(coco / "panoptic_val2017"),
        "things": sorted(things),
        "num_classes": len(contiguous),
    }
    return samples, files


def _evaluate_split(root: str, out_dir: str, rank: int, world_size: int) -> None:
    """Evaluate this rank's block of the split; rank 0 writes eval_results.json."""
    torch.manual_seed(0)  # the semantic scores
    samples, files = _split_samples(root)
    thing_map = {c: c for c in files["things"]}
    gt = {"gt_json": files["gt_json"], "gt_folder": files["gt_folder"]}
    evaluator = DatasetEvaluators(
        [
            COCOPanopticEvaluator(output_dir=out_dir, **gt),
            COCOInstanceEvaluator(
                output_dir=out_dir, thing_dataset_id_to_contiguous_id=thing_map, **gt
            ),
            SemSegEvaluator(num_classes=files["num_classes"]),
            OcclusionEvaluator(multi_scale_evaluation=True, output_dir=out_dir),
            DepthEvaluator(multi_scale_evaluation=True, output_dir=out_dir),
        ]
    )
    evaluator.reset()
    for index in InferenceSampler(len(samples), rank=rank, world_size=world_size):
        evaluator.process([samples[index][0]], [samples[index][1]])
    results = evaluator.evaluate()
    if rank == 0:
        write_results(results, out_dir)


def _split_worker(rank: int, world_size: int, init_file: str, root: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        _evaluate_split(root, out_dir, rank, world_size)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_give_the_same_results_and_files(tmp_path: Path) -> None:
    from instaformer.data import make_synthetic_dataset

    root = tmp_path / "data"
    make_synthetic_dataset(str(root), num_train=0, num_val=SPLIT_IMAGES, image_size=(48, 64))
    _evaluate_split(str(root), str(tmp_path / "one"), rank=0, world_size=1)
    mp.spawn(
        _split_worker,
        args=(2, str(tmp_path / "init"), str(root), str(tmp_path / "two")),
        nprocs=2,
        join=True,
    )
    one = {p.relative_to(tmp_path / "one"): p for p in (tmp_path / "one").rglob("*.*")}
    two = {p.relative_to(tmp_path / "two"): p for p in (tmp_path / "two").rglob("*.*")}
    assert one.keys() == two.keys()
    names = {str(p) for p in one}
    assert {
        "eval_results.json",
        "panoptic_predictions.json",
        "instances_predictions.json",
        "occlusion_per_image.json",
        "depth_per_image.json",
    } <= names
    assert sum(name.endswith(".png") for name in names) == SPLIT_IMAGES
    for name, path in one.items():
        assert path.read_bytes() == two[name].read_bytes(), name
    results = json.loads((tmp_path / "one" / "eval_results.json").read_text())
    assert {"panoptic_seg", "segm", "sem_seg", "occlusion_order", "depth_order"} <= set(results)
    assert results["panoptic_seg"]["PQ"] > 0 and results["segm"]["AP"] > 0
