"""The evaluators' fast paths give exactly what straightforward implementations give.

Each piece is compared, bit for bit, with a plain reference written here (boolean masks per
segment, ``np.unique`` over 64-bit pair keys, ``argmax`` over the class axis, pycocotools over
the whole mask) on random inputs with the edge cases (empty maps and predictions, one segment,
void and unlisted ids, crowd regions, ties and NaN scores, sizes that differ) and on the
synthetic twin's ground truth. The evaluators' end-to-end equality with the previous
implementation (the same ``eval_results.json`` and prediction files) is what
``python tools/benchmark.py eval --before REV`` checks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import mask2former.evaluation.segment_maps as segment_maps
import mask2former.structures as structures
from mask2former.evaluation import COCOInstanceEvaluator, COCOPanopticEvaluator, SemSegEvaluator
from mask2former.evaluation.instance import AP_METRICS, coco_segm_ap, panoptic_gt_instances
from mask2former.evaluation.panoptic import accumulate, pq_results, pq_stats_single_image
from mask2former.evaluation.segment_maps import (
    read_panoptic_index,
    read_panoptic_png,
    segment_index,
)
from mask2former.evaluation.semantic import class_map, confusion_matrix
from mask2former.structures import Instances, encode_rle, id2rgb, rgb2id
from tests.support import REPO

# --------------------------------------------------------------------------------------------
# Straightforward references.


def _reference_rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _reference_pq(gt_ids, gt_segments, pred_ids, pred_segments) -> dict[int, np.ndarray]:
    """Per-category (sum of IoU, TP, FP, FN): pair counts from np.unique over 64-bit keys."""
    offset = 256**3
    joint = gt_ids.astype(np.int64) * offset + pred_ids.astype(np.int64)
    pairs, counts = np.unique(joint, return_counts=True)
    pairs_list = [
        (int(k // offset), int(k % offset), int(c)) for k, c in zip(pairs, counts, strict=True)
    ]
    gt_area: dict[int, int] = {}
    pred_area: dict[int, int] = {}
    for g, p, c in pairs_list:
        gt_area[g] = gt_area.get(g, 0) + c
        pred_area[p] = pred_area.get(p, 0) + c
    for g in gt_area:
        if g != 0 and g not in gt_segments:
            raise KeyError(f"GT segment id {g} is in the PNG but not in segments_info")
    for p in pred_area:
        if p != 0 and p not in pred_segments:
            raise KeyError(f"predicted segment id {p} is in the map but not in segments_info")
    stats: dict[int, np.ndarray] = {}

    def stat(category: int) -> np.ndarray:
        return stats.setdefault(category, np.zeros(4))

    void: dict[int, int] = {}
    crowd: dict[tuple[int, int], int] = {}
    crowd_of = {int(s["category_id"]): g for g, s in gt_segments.items() if s.get("iscrowd", 0)}
    matched_gt, matched_pred = set(), set()
    for g, p, c in pairs_list:
        if p in pred_segments and g == 0:
            void[p] = void.get(p, 0) + c
        elif p in pred_segments and gt_segments[g].get("iscrowd", 0):
            crowd[(p, g)] = c
    for g, p, c in pairs_list:
        if p not in pred_segments or g == 0 or gt_segments[g].get("iscrowd", 0):
            continue
        category = int(gt_segments[g]["category_id"])
        if category != int(pred_segments[p]["category_id"]):
            continue
        iou = c / (pred_area[p] + gt_area[g] - c - void.get(p, 0))
        if iou > 0.5:
            stat(category)[:2] += (iou, 1)
            matched_gt.add(g)
            matched_pred.add(p)
    for g, s in gt_segments.items():
        if g not in matched_gt and not s.get("iscrowd", 0):
            stat(int(s["category_id"]))[3] += 1
    for p, s in pred_segments.items():
        if p in matched_pred or p not in pred_area:
            continue
        category = int(s["category_id"])
        ignored = void.get(p, 0) + crowd.get((p, crowd_of.get(category, 0)), 0)
        if ignored / pred_area[p] <= 0.5:
            stat(category)[2] += 1
    return stats


def _reference_confusion(gt, pred, num_classes, ignore_label) -> np.ndarray:
    keep = gt != ignore_label
    g, p = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    if g.size and (g.min() < 0 or g.max() >= num_classes):
        raise ValueError(f"GT class ids must be in [0, {num_classes}) or {ignore_label}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted class ids must be in [0, {num_classes})")
    counts = np.bincount(g * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _reference_paint(ids, segments, ignore_label) -> np.ndarray:
    gt = np.full(ids.shape, ignore_label, dtype=np.int64)
    for s in segments:
        gt[ids == int(s["id"])] = int(s["category_id"])
    return gt


def _reference_gt_instances(ann, gt_ids, thing_categories) -> list[dict[str, Any]]:
    annotations = []
    for s in ann["segments_info"]:
        if int(s["category_id"]) not in thing_categories:
            continue
        mask = gt_ids == int(s["id"])
        if not mask.any():
            continue
        rle = _reference_rle(mask)
        annotations.append(
            {
                "image_id": ann["image_id"],
                "category_id": int(s["category_id"]),
                "segmentation": rle,
                "area": int(mask.sum()),
                "bbox": mask_util.toBbox(rle).tolist(),
                "iscrowd": int(s.get("iscrowd", 0)),
            }
        )
    return annotations


def _same_stats(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


# --------------------------------------------------------------------------------------------
# Mask and colour conversions.


def _random_masks(rng: np.random.Generator) -> list[np.ndarray]:
    masks = []
    for shape in [(0, 5), (5, 0), (1, 1), (3, 7), (240, 320), (256, 256), (300, 257)]:
        h, w = shape
        masks.append(np.zeros(shape, dtype=bool))
        masks.append(np.ones(shape, dtype=bool))
        masks.append(rng.random(shape) < 0.5)  # many runs
        if h and w:
            blob = np.zeros(shape, dtype=bool)
            blob[h // 4 : h // 2 + 1, w // 3 : w // 2 + 1] = True
            masks.append(blob)
            for y, x in ((0, 0), (h - 1, w - 1), (h - 1, 0), (0, w - 1)):
                corner = np.zeros(shape, dtype=bool)
                corner[y, x] = True
                masks.append(corner)
            edge = np.zeros(shape, dtype=bool)
            edge[:, -1] = True  # a run of ones that ends the image
            masks.append(edge)
            masks.append(rng.integers(0, 3, size=shape).astype(np.uint8))  # values other than 1
            masks.append(blob[:, ::-1])  # not contiguous
    return masks


def test_encode_rle_matches_pycocotools_on_the_whole_mask() -> None:
    rng = np.random.default_rng(0)
    masks = _random_masks(rng)
    assert any(m.size >= structures._RLE_STRIP_MIN_PIXELS for m in masks)
    for mask in masks:
        assert encode_rle(mask) == _reference_rle(mask), (mask.shape, mask.dtype)


def test_encode_rle_strip_path_on_small_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bounding-column path on every size, small ones included.
    monkeypatch.setattr(structures, "_RLE_STRIP_MIN_PIXELS", 0)
    rng = np.random.default_rng(1)
    for _ in range(2000):
        shape = tuple(rng.integers(1, 9, size=2))
        mask = rng.random(shape) < rng.random()
        assert encode_rle(mask) == _reference_rle(mask), mask
    for mask in _random_masks(rng):
        assert encode_rle(mask) == _reference_rle(mask), (mask.shape, mask.dtype)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint32, np.float32, np.float64])
def test_rgb2id_matches_the_arithmetic(dtype: type) -> None:
    rng = np.random.default_rng(2)
    for shape in [(7, 9, 3), (1, 1, 3), (0, 4, 3), (5, 3), (2, 3, 4, 3)]:
        rgb = rng.integers(0, 256, size=shape).astype(np.uint8)
        wide = rgb.astype(dtype)
        expected = wide[..., 0] + 256 * wide[..., 1] + 65536 * wide[..., 2]
        out = rgb2id(rgb, dtype)
        assert out.dtype == expected.dtype and np.array_equal(out, expected)
    rgb = rng.integers(0, 256, size=(6, 8, 3)).astype(np.uint8)[:, ::-1]
    assert np.array_equal(rgb2id(rgb), rgb2id(np.ascontiguousarray(rgb)))


def test_id2rgb_matches_the_arithmetic() -> None:
    rng = np.random.default_rng(3)
    cases = [
        rng.integers(-(2**40), 2**40, size=(5, 6)),
        rng.integers(0, 2**24, size=(5, 6)).astype(np.int32),
        rng.integers(-(2**31), 2**31 - 1, size=(4, 4), dtype=np.int32),
        rng.integers(0, 2**63, size=(3, 3), dtype=np.uint64),
        rng.integers(0, 2**24, size=(2, 3, 4)).astype(">i4"),
        rng.uniform(-1e6, 1e6, size=(3, 3)),
        np.arange(12).reshape(3, 4).T,
        np.zeros((0, 4), dtype=np.int64),
        np.array(7),
    ]
    for ids in cases:
        wide = ids.astype(np.int64)
        expected = np.stack([wide % 256, wide // 256 % 256, wide // 65536 % 256], axis=-1)
        out = id2rgb(ids)
        assert out.dtype == np.uint8 and np.array_equal(out, expected.astype(np.uint8)), ids.dtype


# --------------------------------------------------------------------------------------------
# Panoptic.


def _random_panoptic(rng: np.random.Generator, large_ids: bool):
    h, w = (int(v) for v in rng.integers(1, 14, size=2))
    pool = 2**24 - 1 if large_ids else 59  # ids 1 .. pool
    gt_listed = rng.choice(pool, size=int(rng.integers(0, 6)), replace=False) + 1
    pred_listed = rng.choice(np.arange(0, 40), size=int(rng.integers(0, 6)), replace=False)
    gt = rng.choice(np.concatenate([gt_listed, [0]]), size=(h, w))
    pred = rng.choice(np.concatenate([pred_listed, [0]]), size=(h, w)).astype(np.int32)
    gt_segments = {
        int(g): {"category_id": int(rng.integers(1, 4)), "iscrowd": int(rng.random() < 0.3)}
        for g in gt_listed
    }
    pred_segments = {int(p): {"category_id": int(rng.integers(1, 4))} for p in pred_listed}
    if gt_segments and rng.random() < 0.1:
        gt_segments.pop(next(iter(gt_segments)))  # an id in the PNG but not listed
    if pred_segments and rng.random() < 0.1:
        pred_segments.pop(next(iter(pred_segments)))
    if rng.random() < 0.2:
        gt_segments[int(rng.integers(60, 70))] = {"category_id": 2, "iscrowd": 0}  # no pixel
    if rng.random() < 0.2:
        pred_segments[int(rng.integers(50, 55))] = {"category_id": 1}  # no pixel
    if rng.random() < 0.2:
        pred_segments[0] = {"category_id": 3}  # id 0 listed: an ordinary segment
    return gt, gt_segments, pred, pred_segments


@pytest.mark.parametrize("large_ids", [False, True])
@pytest.mark.parametrize("lookup", [True, False])
def test_pq_stats_match_the_unique_based_reference(
    large_ids: bool, lookup: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not lookup:
        monkeypatch.setattr(segment_maps, "_LOOKUP_IDS", 0)  # binary search for every map
    rng = np.random.default_rng(4 + large_ids)
    errors = 0
    for _ in range(1500):
        gt, gt_segments, pred, pred_segments = _random_panoptic(rng, large_ids)
        try:
            expected = _reference_pq(gt, gt_segments, pred, pred_segments)
        except KeyError as err:
            errors += 1
            with pytest.raises(KeyError) as raised:
                pq_stats_single_image(gt, gt_segments, pred, pred_segments)
            assert str(raised.value) == str(err)
            continue
        out = pq_stats_single_image(gt, gt_segments, pred, pred_segments)
        assert _same_stats(out, expected), (gt, gt_segments, pred, pred_segments)
    assert 0 < errors < 1500


def test_pq_stats_of_empty_and_single_segment_maps() -> None:
    empty = np.zeros((0, 0), dtype=np.int64)
    assert pq_stats_single_image(empty, {}, empty, {}) == {}
    one = np.full((4, 5), 7, dtype=np.int64)
    stats = pq_stats_single_image(one, {7: {"category_id": 1}}, one, {7: {"category_id": 1}})
    assert _same_stats(stats, {1: np.array([1.0, 1, 0, 0])})
    with pytest.raises(ValueError, match="shape"):
        pq_stats_single_image(one, {7: {"category_id": 1}}, one[:, :4], {7: {"category_id": 1}})


@pytest.mark.parametrize("lookup", [True, False])
def test_segment_index_of_listed_unlisted_and_void_ids(
    lookup: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not lookup:
        monkeypatch.setattr(segment_maps, "_LOOKUP_IDS", 0)
    ids = np.array([[0, 5, 9], [70000, 5, -3]])
    keys, index = segment_index(ids, [9, 5, 70000])
    assert keys.tolist() == [0, 5, 9, 70000]
    assert index.tolist() == [[0, 1, 2], [3, 1, -1]]
    keys, index = segment_index(ids[:, :2] % 10, [])
    assert keys.tolist() == [0] and index.tolist() == [[0, -1], [0, -1]]


# --------------------------------------------------------------------------------------------
# Semantic.


@pytest.mark.parametrize("threads", [1, 2])
def test_class_map_matches_argmax_with_ties_and_nan(threads: int) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        for shape in [(133, 48, 64), (5, 7, 9), (1, 33, 65), (3, 1000, 3), (4, 0, 5), (6, 2000)]:
            scores = torch.rand(shape, generator=gen)
            if scores.numel():
                flat = scores.view(-1)
                flat[::97] = float("nan")
                flat[5::89] = 1.0  # ties at the maximum
                flat[7::53] = float("inf")
                flat[11::41] = -0.0
            expected = scores.argmax(dim=0).numpy()
            for given in (scores, scores.double(), scores.half(), scores.bfloat16()):
                out = class_map(given)
                if given.dtype in (torch.float32, torch.float64):
                    assert out.dtype == np.int64 and np.array_equal(out, expected), shape
                else:
                    assert np.array_equal(out, given.argmax(dim=0).numpy()), (shape, given.dtype)
            assert np.array_equal(class_map(scores.numpy()), np.argmax(scores.numpy(), axis=0))
        ints = torch.randint(0, 4, (6, 5, 7), generator=gen)
        assert np.array_equal(class_map(ints), ints.argmax(dim=0).numpy())
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: nothing on a device")
def test_outputs_on_the_gpu_give_the_cpu_results(tmp_path: Path) -> None:
    # The semantic argmax runs on the device; instance masks are thresholded there.
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand((133, 48, 64), generator=gen)
    scores.view(-1)[::41] = 1.0
    assert np.array_equal(class_map(scores.cuda()), class_map(scores))
    ids = np.zeros((48, 64), dtype=np.int64)
    ids[5:20, 8:30] = 7
    Image.fromarray(id2rgb(ids)).save(tmp_path / "a.png")
    ann = {"image_id": 1, "file_name": "a.png", "segments_info": [{"id": 7, "category_id": 1}]}
    gt_json = tmp_path / "gt.json"
    categories = [{"id": 1, "name": "a", "isthing": 1}]
    gt_json.write_text(json.dumps({"annotations": [ann], "categories": categories}))
    masks = torch.rand((3, 48, 64), generator=gen)
    instances = Instances(
        (48, 64),
        pred_masks=masks,
        scores=torch.rand(3, generator=gen),
        pred_classes=torch.ones(3, dtype=torch.int64),
    )
    results = []
    for device in ("cpu", "cuda"):
        evaluator = COCOInstanceEvaluator(
            output_dir=str(tmp_path / device),
            gt_json=str(gt_json),
            gt_folder=str(tmp_path),
            thing_dataset_id_to_contiguous_id={1: 1},
        )
        evaluator.process([{"image_id": 1}], [{"instances": instances.to(device)}])
        results.append(evaluator.evaluate())
    assert json.dumps(results[0]) == json.dumps(results[1])
    written = [(tmp_path / d / "instances_predictions.json").read_bytes() for d in ("cpu", "cuda")]
    assert written[0] == written[1]


def test_confusion_matrix_matches_the_boolean_index_reference() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        shape = tuple(int(v) for v in rng.integers(0, 9, size=2))
        gt = rng.choice([0, 1, 2, 3, 255], size=shape)
        pred = rng.integers(0, 4, size=shape)
        if rng.random() < 0.2 and gt.size:
            pred.flat[int(rng.integers(gt.size))] = 7  # out of range: an error only if kept
        if rng.random() < 0.1 and gt.size:
            gt.flat[int(rng.integers(gt.size))] = -1
        try:
            expected = _reference_confusion(gt, pred, 4, 255)
        except ValueError as err:
            with pytest.raises(ValueError, match=re.escape(str(err))):
                confusion_matrix(gt, pred, 4, 255)
            continue
        out = confusion_matrix(gt, pred, 4, 255)
        assert out.dtype == np.int64 and np.array_equal(out, expected), (gt, pred)
    uint8 = confusion_matrix(np.array([[0, 255]], np.uint8), np.array([[1, 9]], np.uint8), 2, 255)
    assert uint8.tolist() == [[0, 1], [0, 0]]


def test_semantic_gt_painted_from_panoptic_ids(tmp_path: Path) -> None:
    evaluator = SemSegEvaluator(num_classes=5, ignore_label=255)
    rng = np.random.default_rng(6)
    for large in (False, True):
        pool = [0, 3, 9, 2**20 + 1, 2**23] if large else [0, 3, 9, 12]
        ids = rng.choice(pool, size=(6, 7))
        path = tmp_path / f"{large}.png"
        Image.fromarray(id2rgb(ids)).save(path)
        segments = [
            {"id": 3, "category_id": 1},
            {"id": 9, "category_id": 2},
            {"id": 3, "category_id": 4},  # the same id again: the last one paints
            {"id": 40, "category_id": 0},  # no pixel
        ]
        if large:
            segments.append({"id": 2**23, "category_id": 3})
        for listed in (segments, []):
            gt = evaluator._ground_truth({"pan_seg_file_name": str(path), "segments_info": listed})
            assert np.array_equal(gt, _reference_paint(ids, listed, 255)), (large, listed)


# --------------------------------------------------------------------------------------------
# Reading PNGs.


def test_read_panoptic_png_decodes_like_pillow_and_rereads_changed_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, size=(9, 11, 3)).astype(np.uint8)
    path = tmp_path / "map.png"
    Image.fromarray(rgb).save(path)
    ids = read_panoptic_png(str(path))
    assert ids.dtype == np.int64 and not ids.flags.writeable
    assert np.array_equal(ids, rgb2id(rgb))
    # The same path rewritten (same size, at once): the new content is read.
    other = rgb[::-1].copy()
    Image.fromarray(other).save(path)
    assert np.array_equal(read_panoptic_png(str(path)), rgb2id(other))
    # Other PNG layouts read as Pillow's RGB conversion reads them.
    palette = Image.fromarray(rng.integers(0, 4, size=(5, 6)).astype(np.uint8), mode="P")
    palette.putpalette([10, 20, 30, 200, 100, 0, 1, 2, 3, 255, 255, 255])
    layouts = {
        "palette.png": palette,
        "rgba.png": Image.fromarray(rng.integers(0, 256, (5, 6, 4)).astype(np.uint8), "RGBA"),
        "gray.png": Image.fromarray(rng.integers(0, 256, (5, 6)).astype(np.uint8), "L"),
    }
    for name, image in layouts.items():
        image.save(tmp_path / name)
        expected = rgb2id(np.asarray(Image.open(tmp_path / name).convert("RGB")))
        assert np.array_equal(read_panoptic_png(str(tmp_path / name)), expected), name
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_panoptic_png(str(tmp_path / "missing.png"))
    (tmp_path / "broken.png").write_bytes(b"not a PNG")
    with pytest.raises(OSError, match="broken.png cannot be decoded"):
        read_panoptic_png(str(tmp_path / "broken.png"))


def test_read_panoptic_index_is_shared_by_the_same_listing(tmp_path: Path) -> None:
    ids = np.array([[0, 5, 9], [70000, 5, 9]])
    path = str(tmp_path / "map.png")
    Image.fromarray(id2rgb(ids)).save(path)
    first = read_panoptic_index(path, [9, 5, 70000])
    again = read_panoptic_index(path, {70000: {}, 5: {}, 9: {}})  # the same ids, another order
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert not first[2].flags.writeable
    keys, index = segment_index(ids, [9, 5, 70000])
    assert np.array_equal(first[1], keys) and np.array_equal(first[2], index)
    fewer = read_panoptic_index(path, [5])
    assert fewer[2] is not first[2] and fewer[2].tolist() == [[0, 1, -1], [-1, 1, -1]]


# --------------------------------------------------------------------------------------------
# Evaluators on the synthetic twin's ground truth.


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Six images of 256 x 320 (past the RLE strip threshold) and their panoptic GT."""
    from instaformer.data import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(str(root), num_train=0, num_val=6, image_size=(256, 320), seed=3)
    gt_json = root / "coco" / "annotations" / "panoptic_val2017.json"
    gt = json.loads(gt_json.read_text())
    return {
        "gt_json": str(gt_json),
        "gt_folder": str(root / "coco" / "panoptic_val2017"),
        "annotations": gt["annotations"],
        "things": {c["id"] for c in gt["categories"] if c["isthing"]},
        "thing_map": {c["id"]: c["id"] for c in gt["categories"] if c["isthing"]},
    }


def test_gt_instances_match_the_per_segment_reference(synthetic: dict[str, Any]) -> None:
    crowds = 0
    for ann in synthetic["annotations"]:
        gt_ids = read_panoptic_png(os.path.join(synthetic["gt_folder"], ann["file_name"]))
        expected = _reference_gt_instances(ann, gt_ids, synthetic["things"])
        assert expected
        assert panoptic_gt_instances(ann, gt_ids, synthetic["things"]) == expected
        crowds += sum(a["iscrowd"] for a in expected)
    assert crowds  # crowd segments are instances too (iscrowd 1)


def _instances_of(
    gt_ids: np.ndarray, ann: dict, things: set[int], rng: np.random.Generator
) -> Instances:
    """Float masks: the things moved by a few pixels, a soft mask, an empty one."""
    things = [s for s in ann["segments_info"] if not s["iscrowd"] and s["category_id"] in things]
    masks = [np.roll(gt_ids == s["id"], 3, axis=1).astype(np.float32) for s in things]
    soft = rng.random(gt_ids.shape).astype(np.float32)
    soft[0, :5] = 0.5  # exactly 0.5 is background
    masks += [soft, np.zeros(gt_ids.shape, np.float32)]
    classes = [s["category_id"] for s in things] + [1, 3]
    return Instances(
        gt_ids.shape,
        pred_masks=torch.tensor(np.stack(masks)),
        scores=torch.tensor(rng.random(len(masks)), dtype=torch.float32),
        pred_classes=torch.tensor(classes),
    )


def test_instance_evaluator_matches_the_dict_reference(
    synthetic: dict[str, Any], tmp_path: Path
) -> None:
    evaluator = COCOInstanceEvaluator(
        output_dir=str(tmp_path),
        gt_json=synthetic["gt_json"],
        gt_folder=synthetic["gt_folder"],
        thing_dataset_id_to_contiguous_id=synthetic["thing_map"],
    )
    rng = np.random.default_rng(8)
    images, gt, predictions = [], [], []
    for k, ann in enumerate(synthetic["annotations"]):
        gt_ids = read_panoptic_png(os.path.join(synthetic["gt_folder"], ann["file_name"]))
        instances = _instances_of(gt_ids, ann, synthetic["things"], rng)
        if k == 1:  # no prediction at all
            instances = instances[torch.zeros(len(instances), dtype=torch.bool)]
        if k == 2:  # one, as a bool mask
            instances = instances[:1]
            instances.pred_masks = instances.pred_masks > 0.5
        evaluator.process([{"image_id": ann["image_id"]}], [{"instances": instances}])
        images.append({"id": ann["image_id"], "height": gt_ids.shape[0], "width": gt_ids.shape[1]})
        gt += _reference_gt_instances(ann, gt_ids, synthetic["things"])
        masks = instances.pred_masks.numpy()
        for mask, score, cls in zip(
            masks, instances.scores.tolist(), instances.pred_classes, strict=True
        ):
            predictions.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": int(cls),
                    "segmentation": _reference_rle(mask > 0.5),
                    "score": float(score),
                }
            )
    results = evaluator.evaluate()["segm"]
    categories = [{"id": c, "name": str(c)} for c in sorted(synthetic["things"])]
    expected = coco_segm_ap(gt, predictions, images, categories)
    assert json.dumps(results) == json.dumps(expected)
    written = (tmp_path / "instances_predictions.json").read_text()
    assert written == json.dumps(predictions)


def _reference_coco_ap(gt, predictions, images, categories) -> dict[str, float]:
    """AP of one COCOeval over every category at once, per class included."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": images,
            "annotations": [dict(a, id=k + 1) for k, a in enumerate(gt)],
            "categories": categories,
        }
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes([dict(p) for p in predictions]), "segm")
        coco_eval.params.imgIds = [i["id"] for i in images]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    results = {
        name: float(coco_eval.stats[i] * 100) if coco_eval.stats[i] >= 0 else float("nan")
        for i, name in enumerate(AP_METRICS)
    }
    precision = coco_eval.eval["precision"]
    for k, category in enumerate(coco_eval.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        results[f"AP-{category}"] = float(values.mean() * 100) if values.size else float("nan")
    return results


def test_coco_ap_by_category_equals_one_evaluation_of_all() -> None:
    # Categories with GT and predictions, GT only, predictions only, neither; crowd GT; several
    # predictions of a category per image; sizes across the small / medium / large ranges.
    rng = np.random.default_rng(9)
    images = [{"id": i, "height": 64, "width": 96} for i in range(12)]
    categories = [{"id": c, "name": str(c)} for c in (1, 2, 3, 5, 8)]

    def rle() -> dict[str, Any]:
        mask = np.zeros((64, 96), dtype=bool)
        y, x = rng.integers(0, 48), rng.integers(0, 80)
        mask[y : y + rng.integers(2, 40), x : x + rng.integers(2, 60)] = True
        return encode_rle(mask)

    gt, predictions = [], []
    for image in images:
        for _ in range(int(rng.integers(0, 5))):
            segmentation = rle()
            gt.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.choice([1, 2, 3])),
                    "segmentation": segmentation,
                    "area": int(mask_util.area(segmentation)),
                    "bbox": mask_util.toBbox(segmentation).tolist(),
                    "iscrowd": int(rng.random() < 0.15),
                }
            )
        for _ in range(int(rng.integers(0, 8))):
            predictions.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.choice([1, 2, 5])),
                    "segmentation": rle(),
                    "score": float(rng.choice([0.3, 0.5, rng.random()])),  # ties too
                }
            )
    results = coco_segm_ap(gt, predictions, images, categories, per_class=True)
    expected = _reference_coco_ap(gt, predictions, images, categories)
    assert json.dumps(results) == json.dumps(expected)
    assert not any(np.isnan(results[k]) for k in ("AP", "AP-1", "AP-2"))


def test_panoptic_evaluator_matches_the_reference_sums(
    synthetic: dict[str, Any], tmp_path: Path
) -> None:
    evaluator = COCOPanopticEvaluator(
        output_dir=str(tmp_path), gt_json=synthetic["gt_json"], gt_folder=synthetic["gt_folder"]
    )
    total: dict[int, np.ndarray] = {}
    preds = {}
    for ann in synthetic["annotations"]:
        gt_ids = read_panoptic_png(os.path.join(synthetic["gt_folder"], ann["file_name"]))
        listed = [s["id"] for s in ann["segments_info"]]
        # Segments moved by 2 px and renumbered 1..n; the last one dropped (void).
        pred = np.zeros(gt_ids.shape, dtype=np.int32)
        moved = np.roll(gt_ids, 2, axis=0)
        for n, seg_id in enumerate(listed[:-1]):
            pred[moved == seg_id] = n + 1
        infos = [
            {"id": n + 1, "category_id": s["category_id"], "score": 0.5}
            for n, s in enumerate(ann["segments_info"][:-1])
        ]
        preds[ann["image_id"]] = pred
        evaluator.process(
            [{"image_id": ann["image_id"]}], [{"panoptic_seg": (torch.tensor(pred), infos)}]
        )
        gt_segments = {s["id"]: s for s in ann["segments_info"]}
        pred_segments = {i["id"]: {"category_id": i["category_id"]} for i in infos}
        accumulate(total, _reference_pq(gt_ids, gt_segments, pred, pred_segments))
    results = evaluator.evaluate()["panoptic_seg"]
    categories = {
        c["id"]: c for c in json.loads(Path(synthetic["gt_json"]).read_text())["categories"]
    }
    assert json.dumps(results) == json.dumps(pq_results(total, categories))
    written = json.loads((tmp_path / "panoptic_predictions.json").read_text())["annotations"]
    for entry in written:
        pixels = cv2.cvtColor(
            cv2.imread(str(tmp_path / "panoptic_predictions" / entry["file_name"])),
            cv2.COLOR_BGR2RGB,
        )
        assert np.array_equal(rgb2id(pixels), preds[entry["image_id"]])
        assert all(s.keys() == {"id", "category_id", "score"} for s in entry["segments_info"])
    assert sorted(os.listdir(tmp_path / "panoptic_predictions")) == sorted(
        e["file_name"] for e in written
    )  # no temporary file left


@pytest.mark.slow
def test_eval_benchmark_compares_with_a_git_revision(tmp_path: Path) -> None:
    """``tools/benchmark.py eval --before HEAD`` on one small image: both versions run and their
    outputs are checked identical (docs/benchmarks.md, "Evaluators", runs it at full size)."""
    repo = REPO
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout: --before extracts a revision with git archive")
    args = ["--images", "1", "--warmup", "1", "--size", "48", "64", "--masks", "3"]
    proc = subprocess.run(
        [sys.executable, "tools/benchmark.py", "eval", *args, "--rounds", "1", "--before", "HEAD"]
        + ["--work-dir", str(tmp_path)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "outputs identical: 5 JSON files" in proc.stdout
    assert "COCOInstanceEvaluator" in proc.stdout and "before/after" in proc.stdout
