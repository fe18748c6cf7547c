"""PQ, mask AP and mIoU on hand-made images with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mask2former.evaluation import (
    COCOInstanceEvaluator,
    COCOPanopticEvaluator,
    SemSegEvaluator,
    pq_compute_from_files,
)
from mask2former.evaluation.panoptic import pq_results, pq_stats_single_image
from mask2former.evaluation.semantic import confusion_matrix, semantic_metrics
from mask2former.structures import Instances, id2rgb

# Dataset category ids: 1 and 3 are things, 7 is stuff; contiguous ids 0, 1 (things), 2 (stuff).
CATEGORIES = {
    1: {"id": 1, "name": "person", "isthing": 1},
    3: {"id": 3, "name": "car", "isthing": 1},
    7: {"id": 7, "name": "sky", "isthing": 0},
}
THING_MAP = {1: 0, 3: 1}
STUFF_MAP = {7: 2}


def _pq(gt_ids, gt_segments, pred_ids, pred_segments):
    stats = pq_stats_single_image(
        np.asarray(gt_ids), gt_segments, np.asarray(pred_ids), pred_segments
    )
    return pq_results(stats, CATEGORIES)


def _halves():
    """10 x 10 GT: person (id 1) in columns 0-4, sky (id 2) in columns 5-9."""
    gt = np.zeros((10, 10), dtype=np.int64)
    gt[:, :5] = 1
    gt[:, 5:] = 2
    return gt, {1: {"category_id": 1, "iscrowd": 0}, 2: {"category_id": 7, "iscrowd": 0}}


def test_pq_perfect() -> None:
    gt, segments = _halves()
    result = _pq(gt, segments, gt, {1: {"category_id": 1}, 2: {"category_id": 7}})
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert result[key] == pytest.approx(100.0)


def test_pq_partial_overlap() -> None:
    gt, segments = _halves()
    pred = np.zeros_like(gt)
    pred[:, :6] = 5  # person: 60 px, 50 in common -> IoU 5/6
    pred[:, 6:] = 9  # sky: 40 px inside the 50 GT px -> IoU 0.8
    result = _pq(gt, segments, pred, {5: {"category_id": 1}, 9: {"category_id": 7}})
    assert result["PQ_th"] == pytest.approx(100 * 5 / 6)
    assert result["PQ_st"] == pytest.approx(80.0)
    assert result["PQ"] == pytest.approx(100 * (5 / 6 + 0.8) / 2)
    assert result["RQ"] == pytest.approx(100.0)
    assert result["SQ"] == pytest.approx(result["PQ"])


def test_pq_false_positive_and_false_negative() -> None:
    gt, segments = _halves()
    pred = np.zeros_like(gt)
    pred[:, :5] = 1  # exact person
    pred[:, 5:] = 2  # a "person" on the sky: FP for person, and sky is FN
    result = _pq(gt, segments, pred, {1: {"category_id": 1}, 2: {"category_id": 1}})
    # person: IoU 1, TP 1, FP 1 -> PQ 2/3, SQ 1, RQ 2/3; sky: FN 1 -> 0, 0, 0.
    assert result["PQ_th"] == pytest.approx(100 * 2 / 3)
    assert result["SQ_th"] == pytest.approx(100.0)
    assert result["PQ_st"] == pytest.approx(0.0)
    assert result["PQ"] == pytest.approx(100 / 3)
    assert result["SQ"] == pytest.approx(50.0)
    assert result["RQ"] == pytest.approx(100 / 3)


def test_pq_iou_of_one_half_is_not_a_match() -> None:
    gt, segments = _halves()
    pred = np.zeros_like(gt)
    pred[:, :5] = 2
    pred[:5, :5] = 1  # 25 of the 50 person pixels, nothing else: IoU exactly 0.5
    result = _pq(gt, segments, pred, {1: {"category_id": 1}, 2: {"category_id": 7}})
    # person: FP 1 + FN 1 -> 0; sky: pred 2 covers 25 person px + 0 sky px -> FP, sky FN.
    assert result["PQ"] == pytest.approx(0.0)


def test_pq_void_and_crowd() -> None:
    gt = np.zeros((10, 10), dtype=np.int64)  # void everywhere but:
    gt[:2, :] = 1  # person, 20 px
    gt[8:, :] = 4  # crowd of cars, 20 px
    segments = {1: {"category_id": 1, "iscrowd": 0}, 4: {"category_id": 3, "iscrowd": 1}}
    pred = np.zeros_like(gt)
    pred[:4, :] = 1  # person over 20 GT px + 20 void px: void left out of the union -> IoU 1
    pred[4:6, :] = 2  # car entirely on void -> ignored, not an FP
    pred[8:, :] = 3  # car on the car crowd -> ignored
    pred[6:8, :] = 5  # person on void -> ignored
    result = _pq(
        gt,
        segments,
        pred,
        {
            1: {"category_id": 1},
            2: {"category_id": 3},
            3: {"category_id": 3},
            5: {"category_id": 1},
        },
    )
    assert result["PQ"] == pytest.approx(100.0)  # only "person" counts; the crowd makes no FN
    pred[8:, :] = 6  # a person on the car crowd is an FP
    result = _pq(
        gt,
        segments,
        pred,
        {
            1: {"category_id": 1},
            2: {"category_id": 3},
            5: {"category_id": 1},
            6: {"category_id": 1},
        },
    )
    assert result["PQ"] == pytest.approx(100 / 1.5)


def test_pq_unknown_segment_raises() -> None:
    gt, segments = _halves()
    with pytest.raises(KeyError, match="predicted segment id 2"):
        _pq(gt, segments, gt, {1: {"category_id": 1}})


def _write_dataset(root: Path) -> tuple[str, str, list[np.ndarray]]:
    """Two 12 x 16 images; image 1: person + car + sky, image 2: person + sky + void."""
    folder = root / "panoptic"
    folder.mkdir()
    gts = []
    a = np.full((12, 16), 30, dtype=np.int64)  # sky
    a[:6, :8] = 10  # person
    a[6:, 8:] = 20  # car
    b = np.full((12, 16), 31, dtype=np.int64)
    b[:, :4] = 11
    b[:, 12:] = 0  # void
    annotations = [
        {
            "image_id": 1,
            "file_name": "a.png",
            "segments_info": [
                {"id": 10, "category_id": 1, "iscrowd": 0},
                {"id": 20, "category_id": 3, "iscrowd": 0},
                {"id": 30, "category_id": 7, "iscrowd": 0},
            ],
        },
        {
            "image_id": 2,
            "file_name": "b.png",
            "segments_info": [
                {"id": 11, "category_id": 1, "iscrowd": 0},
                {"id": 31, "category_id": 7, "iscrowd": 0},
            ],
        },
    ]
    for ann, ids in zip(annotations, (a, b), strict=True):
        Image.fromarray(id2rgb(ids)).save(folder / ann["file_name"])
        gts.append(ids)
    gt_json = root / "panoptic.json"
    gt_json.write_text(
        json.dumps(
            {
                "images": [{"id": 1}, {"id": 2}],
                "annotations": annotations,
                "categories": list(CATEGORIES.values()),
            }
        )
    )
    return str(gt_json), str(folder), gts


def test_panoptic_evaluator_matches_file_based_pq(tmp_path: Path) -> None:
    gt_json, gt_folder, gts = _write_dataset(tmp_path)
    out_dir = tmp_path / "out"
    evaluator = COCOPanopticEvaluator(
        output_dir=str(out_dir),
        gt_json=gt_json,
        gt_folder=gt_folder,
        thing_dataset_id_to_contiguous_id=THING_MAP,
        stuff_dataset_id_to_contiguous_id=STUFF_MAP,
    )
    seg_a = torch.full((12, 16), 3, dtype=torch.int32)
    seg_a[:6, :8] = 1
    seg_a[6:, 12:] = 2  # car: 24 of its 48 GT px, IoU exactly 0.5 -> not matched
    seg_b = torch.tensor(np.where(gts[1] == 11, 1, 2), dtype=torch.int32)
    infos_a = [
        {"id": 1, "category_id": 0, "isthing": True},
        {"id": 2, "category_id": 1, "isthing": True},
        {"id": 3, "category_id": 2, "isthing": False},
    ]
    infos_b = [
        {"id": 1, "category_id": 0, "isthing": True},
        {"id": 2, "category_id": 2, "isthing": False},
    ]
    evaluator.reset()
    evaluator.process(
        [{"image_id": 1}, {"image_id": 2}],
        [{"panoptic_seg": (seg_a, infos_a)}, {"panoptic_seg": (seg_b, infos_b)}],
    )
    result = evaluator.evaluate()["panoptic_seg"]
    # person: 2 TP with IoU 1. car: FP + FN -> 0. sky image 1: pred 120 px (96 sky + 24 car)
    # vs 96 GT -> IoU 0.8; image 2: pred covers the 96 sky px + 48 void px -> IoU 1.
    assert result["PQ_th"] == pytest.approx(50.0)
    assert result["PQ_st"] == pytest.approx(100 * 1.8 / 2)
    assert result["PQ"] == pytest.approx(100 * (1 + 0 + 0.9) / 3)
    from_files = pq_compute_from_files(
        gt_json,
        gt_folder,
        str(out_dir / "panoptic_predictions.json"),
        str(out_dir / "panoptic_predictions"),
    )
    assert from_files == pytest.approx(result)


def test_pq_listed_segment_id_0_is_an_ordinary_segment() -> None:
    # panopticapi treats an id listed in segments_info as a segment, 0 included: both halves
    # match (PQ 100). Unlisted, 0 is void: the person is a FN and the sky still matches (PQ 50).
    gt, segments = _halves()
    pred = np.where(gt == 1, 0, 1)
    listed = _pq(gt, segments, pred, {0: {"category_id": 1}, 1: {"category_id": 7}})
    assert listed["PQ"] == pytest.approx(100.0)
    assert listed["PQ_th"] == pytest.approx(100.0)
    unlisted = _pq(gt, segments, pred, {1: {"category_id": 7}})
    assert unlisted["PQ"] == pytest.approx(50.0)
    assert unlisted["PQ_th"] == pytest.approx(0.0)


def test_pq_crowd_region_is_the_last_crowd_segment_of_its_category() -> None:
    # Two person crowd segments (ids 3, 4). A person prediction lies half on each: panopticapi
    # only counts the last one listed, 50% is not > 50%, so the prediction is a FP.
    gt = np.zeros((10, 10), dtype=np.int64)
    gt[:3] = 3
    gt[3:6] = 4
    gt[6:] = 5
    segments = {
        3: {"category_id": 1, "iscrowd": 1},
        4: {"category_id": 1, "iscrowd": 1},
        5: {"category_id": 7, "iscrowd": 0},
    }
    pred = np.zeros((10, 10), dtype=np.int64)
    pred[:6, :5] = 1  # person: 15 px on each crowd segment
    pred[6:] = 2  # sky: exact
    stats = pq_stats_single_image(
        gt, segments, pred, {1: {"category_id": 1}, 2: {"category_id": 7}}
    )
    assert stats[1].tolist() == [0.0, 0.0, 1.0, 0.0]  # person: one FP; crowds are never FN
    assert stats[7].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_panoptic_segment_without_isthing_has_a_dataset_category(tmp_path: Path) -> None:
    # detectron2's COCOPanopticEvaluator converts contiguous ids only for segments that say
    # "isthing"; without it the category_id is already the dataset's.
    gt_json, gt_folder, gts = _write_dataset(tmp_path)
    evaluator = COCOPanopticEvaluator(
        gt_json=gt_json,
        gt_folder=gt_folder,
        thing_dataset_id_to_contiguous_id=THING_MAP,
        stuff_dataset_id_to_contiguous_id=STUFF_MAP,
    )
    seg = torch.tensor(np.where(gts[1] == 11, 1, 2), dtype=torch.int32)
    infos = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 7}]  # dataset ids
    evaluator.process([{"image_id": 2}], [{"panoptic_seg": (seg, infos)}])
    result = evaluator.evaluate()["panoptic_seg"]
    assert result["PQ_th"] == pytest.approx(100.0)
    assert result["PQ_st"] == pytest.approx(100.0)


def _instances(masks: list[np.ndarray], scores: list[float], classes: list[int]) -> Instances:
    return Instances(
        (12, 16),
        pred_masks=torch.tensor(np.stack(masks)),
        scores=torch.tensor(scores),
        pred_classes=torch.tensor(classes),
    )


def test_instance_ap_known_values(tmp_path: Path) -> None:
    gt_json, gt_folder, gts = _write_dataset(tmp_path)
    evaluator = COCOInstanceEvaluator(
        gt_json=gt_json, gt_folder=gt_folder, thing_dataset_id_to_contiguous_id=THING_MAP
    )
    perfect = [
        _instances([gts[0] == 10, gts[0] == 20], [0.9, 0.8], [0, 1]),
        _instances([gts[1] == 11], [0.9], [0]),
    ]
    evaluator.process([{"image_id": 1}, {"image_id": 2}], [{"instances": i} for i in perfect])
    assert evaluator.evaluate()["segm"]["AP"] == pytest.approx(100.0)

    # A higher-scored car false positive: precision 1/2 at the only recall level of "car".
    evaluator.reset()
    fp = np.zeros((12, 16), dtype=bool)
    fp[:6, 8:] = True  # on the sky, no overlap with any car
    noisy = [
        _instances([gts[0] == 10, gts[0] == 20, fp], [0.9, 0.8, 0.95], [0, 1, 1]),
        _instances([gts[1] == 11], [0.9], [0]),
    ]
    evaluator.process([{"image_id": 1}, {"image_id": 2}], [{"instances": i} for i in noisy])
    result = evaluator.evaluate()["segm"]
    assert result["AP"] == pytest.approx((100 + 50) / 2, abs=1e-6)
    assert result["AP50"] == pytest.approx(75.0, abs=1e-6)


def test_instance_ap_without_predictions_is_nan(tmp_path: Path) -> None:
    # detectron2's COCOEvaluator reports NaN ("no predictions"), not 0.
    gt_json, gt_folder, _ = _write_dataset(tmp_path)
    evaluator = COCOInstanceEvaluator(
        gt_json=gt_json, gt_folder=gt_folder, thing_dataset_id_to_contiguous_id=THING_MAP
    )
    empty = Instances(
        (12, 16),
        pred_masks=torch.zeros((0, 12, 16), dtype=torch.bool),
        scores=torch.zeros(0),
        pred_classes=torch.zeros(0, dtype=torch.int64),
    )
    evaluator.process([{"image_id": 1}], [{"instances": empty}])
    result = evaluator.evaluate()["segm"]
    assert set(result) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert all(math.isnan(v) for v in result.values())


def test_semantic_metrics_known_values() -> None:
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 2]])
    conf = confusion_matrix(gt, pred, num_classes=3, ignore_label=255)
    assert conf.tolist() == [[3, 1, 0], [0, 2, 1], [0, 0, 0]]
    result = semantic_metrics(conf, ["a", "b", "c"])
    # IoU: a 3/4, b 2/4; c has no GT pixel, so it is undefined and not averaged (detectron2's
    # rule) -> mIoU 5/8; ACC: a 3/4, b 2/3.
    assert result["mIoU"] == pytest.approx(100 * 5 / 8)
    assert result["mACC"] == pytest.approx(100 * (3 / 4 + 2 / 3) / 2)
    assert result["pACC"] == pytest.approx(100 * 5 / 7)
    assert result["fwIoU"] == pytest.approx(100 * (4 / 7 * 3 / 4 + 3 / 7 * 2 / 4))
    assert math.isnan(result["IoU-c"]) and math.isnan(result["ACC-c"])
    assert result["ACC-b"] == pytest.approx(100 * 2 / 3)


def test_semantic_mean_over_gt_classes_only() -> None:
    # Class 1 is predicted but absent from the GT: detectron2 leaves it out of mIoU and mACC.
    gt = np.array([[0, 0, 0, 0], [2, 2, 2, 2]])
    pred = np.array([[0, 0, 1, 1], [2, 2, 2, 2]])
    result = semantic_metrics(confusion_matrix(gt, pred, num_classes=3, ignore_label=255))
    assert result["mIoU"] == pytest.approx(100 * (1 / 2 + 1) / 2)  # not (1/2 + 0 + 1) / 3
    assert result["mACC"] == pytest.approx(100 * (1 / 2 + 1) / 2)
    assert result["pACC"] == pytest.approx(100 * 6 / 8)


def test_semantic_metrics_without_labelled_pixels_are_nan() -> None:
    gt = np.full((2, 3), 255)
    conf = confusion_matrix(gt, np.zeros((2, 3), dtype=np.int64), 2, ignore_label=255)
    result = semantic_metrics(conf, ["a", "b"])
    for key in ("mIoU", "fwIoU", "mACC", "pACC", "IoU-a", "ACC-b"):
        assert math.isnan(result[key]), key


def test_semseg_evaluator_from_panoptic_gt(tmp_path: Path) -> None:
    _, gt_folder, gts = _write_dataset(tmp_path)
    segments = [
        {"id": 10, "category_id": 0},
        {"id": 20, "category_id": 1},
        {"id": 30, "category_id": 2},
    ]
    scores = torch.zeros(3, 12, 16)
    scores[0][torch.tensor(gts[0] == 10)] = 1
    scores[1][torch.tensor(gts[0] == 20)] = 1
    scores[2][torch.tensor(gts[0] == 30)] = 1
    evaluator = SemSegEvaluator(num_classes=3)
    evaluator.process(
        [
            {
                "image_id": 1,
                "pan_seg_file_name": str(Path(gt_folder) / "a.png"),
                "segments_info": segments,
            }
        ],
        [{"sem_seg": scores}],
    )
    result = evaluator.evaluate()["sem_seg"]
    assert result["mIoU"] == pytest.approx(100.0)
    assert result["pACC"] == pytest.approx(100.0)
    with pytest.raises(KeyError, match="sem_seg_file_name"):
        evaluator.process([{"image_id": 3}], [{"sem_seg": scores}])


def test_evaluators_from_catalog_metadata(tmp_path: Path) -> None:
    from mask2former.data.catalog import MetadataCatalog

    gt_json, gt_folder, gts = _write_dataset(tmp_path)
    name = "test_eval_segmentation_catalog"
    MetadataCatalog.get(name).set(
        panoptic_json=gt_json,
        panoptic_root=gt_folder,
        thing_dataset_id_to_contiguous_id=THING_MAP,
        stuff_dataset_id_to_contiguous_id=STUFF_MAP,
        stuff_classes=["person", "car", "sky"],
        ignore_label=255,
    )
    try:
        panoptic = COCOPanopticEvaluator(name)
        seg = torch.tensor(np.select([gts[1] == 11, gts[1] == 31], [1, 2], 0), dtype=torch.int32)
        infos = [
            {"id": 1, "category_id": 0, "isthing": True},
            {"id": 2, "category_id": 2, "isthing": False},
        ]
        panoptic.process([{"image_id": 2}], [{"panoptic_seg": (seg, infos)}])
        assert panoptic.evaluate()["panoptic_seg"]["PQ"] == pytest.approx(100.0)
        assert SemSegEvaluator(name)._num_classes == 3
        COCOInstanceEvaluator(name)
    finally:
        MetadataCatalog.remove(name)
