"""The conversion script: [DS 8] worked example round trip, synthetic twin, drops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instaformer.data import (
    InstaOrderPanopticMapper,
    load_instaorder_panoptic_json,
    make_synthetic_dataset,
)
from instaformer.data.relations import build_order_matrices
from mask2former.data.coco_categories import COCO_CATEGORIES
from mask2former.structures import id2rgb
from tests.support.scripts import load_script

prepare = load_script("datasets/prepare_instaorder_panoptic.py")

RECORD = {
    "image_id": 424242,
    "instance_ids": [9001, 9002, 9003],
    "occlusion": [{"order": "0<1 & 1<0", "count": 3}, {"order": "1<2", "count": 2}],
    "depth": [
        {"order": "1<0", "count": 3, "overlap": True},
        {"order": "2=0", "count": 2, "overlap": False},
        {"order": "1<2", "count": 2, "overlap": False},
    ],
}
SEGMENTS = [
    {"id": 3226956, "category_id": 3, "iscrowd": 0, "bbox": [372, 148, 250, 165], "area": 30512},
    {"id": 1184274, "category_id": 2, "iscrowd": 0, "bbox": [150, 221, 258, 198], "area": 14870},
    {"id": 6579300, "category_id": 1, "iscrowd": 0, "bbox": [201, 80, 118, 302], "area": 21044},
    {"id": 9868950, "category_id": 149, "iscrowd": 0, "bbox": [0, 300, 640, 180], "area": 80311},
]
EXPECTED_ANNOTATION = {  # [DS 8.4]
    "file_name": "000000424242.png",
    "image_id": 424242,
    "segments_info": SEGMENTS,
    "instaorder": {
        "instance_ids": [9001, 9002, 9003],
        "occlusion": RECORD["occlusion"],
        "depth": RECORD["depth"],
        "pan_instance_ids": [6579300, 1184274, -1],
    },
}


def _rect(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _write_worked_example(root: Path) -> None:
    """640x480 image: car behind a bicycle held by a person (rectangles), road below."""
    coco = root / "coco"
    for d in ("val2017", "panoptic_val2017", "annotations"):
        (coco / d).mkdir(parents=True)
    ids = np.zeros((480, 640), dtype=np.int64)
    ids[300:, :] = 9868950
    ids[148:313, 372:622] = 3226956  # car
    ids[220:420, 180:380] = 1184274  # bicycle, in front of the car
    ids[80:420, 200:320] = 6579300  # person, in front of the bicycle
    Image.fromarray(id2rgb(ids)).save(coco / "panoptic_val2017" / "000000424242.png")
    Image.new("RGB", (640, 480), (90, 90, 90)).save(coco / "val2017" / "000000424242.jpg")
    image = {"id": 424242, "file_name": "000000424242.jpg", "height": 480, "width": 640}
    polygons = {
        9001: _rect(200, 80, 320, 420),
        9002: _rect(180, 220, 380, 420),
        9003: _rect(500, 100, 640, 313),
    }
    instances = {
        "images": [image],
        "annotations": [
            {
                "id": i,
                "image_id": 424242,
                "category_id": c,
                "segmentation": polygons[i],
                "bbox": [0.0, 0.0, 1.0, 1.0],
                "area": 1.0,
                "iscrowd": 0,
            }
            for i, c in ((9001, 1), (9002, 2), (9003, 3))
        ],
        "categories": [{"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES[:80]],
    }
    panoptic = {
        "info": {"description": "worked example"},
        "licenses": [],
        "categories": COCO_CATEGORIES,
        "images": [image, {"id": 7, "file_name": "000000000007.jpg", "height": 4, "width": 4}],
        "annotations": [
            {"file_name": "000000424242.png", "image_id": 424242, "segments_info": SEGMENTS},
            {"file_name": "000000000007.png", "image_id": 7, "segments_info": []},
        ],
    }
    ann = coco / "annotations"
    (ann / "instances_val2017.json").write_text(json.dumps(instances))
    (ann / "panoptic_val2017.json").write_text(json.dumps(panoptic))
    (ann / "InstaOrder_val2017.json").write_text(json.dumps({"annotations": [RECORD]}))


def test_worked_example_matrices():  # [DS 8.2]
    m = build_order_matrices(RECORD)
    assert m["occlusion"].tolist() == [[0, 1, 0], [1, 0, 1], [0, 0, 0]]
    assert m["depth"].tolist() == [[-1, 0, 2], [1, -1, 1], [2, 0, -1]]
    assert m["overlap"].tolist() == [[-1, 1, 0], [1, -1, 0], [0, 0, -1]]
    assert m["count"].tolist() == [[-1, 3, 2], [3, -1, 2], [2, 2, -1]]
    without = dict(RECORD, depth=[RECORD["depth"][0], RECORD["depth"][2]])
    m = build_order_matrices(without)
    assert m["depth"][0, 2] == m["depth"][2, 0] == -1 and m["count"][0, 2] == -1
    assert build_order_matrices(RECORD, rm_bidirec=True)["occlusion"][0, 1] == -1
    assert build_order_matrices(RECORD, rm_overlap=True)["overlap"][0, 1] == -1


def test_worked_example_round_trips_through_script(tmp_path, caplog):
    _write_worked_example(tmp_path)
    prepare.main(["--val", "--root", str(tmp_path), "--no-progress"])
    out_file = tmp_path / "coco" / "annotations" / "InstaOrderPanoptic_val2017.json"
    out = json.loads(out_file.read_text())
    assert out["annotations"] == [EXPECTED_ANNOTATION]
    assert [img["id"] for img in out["images"]] == [424242]
    assert out["categories"] == COCO_CATEGORIES and out["info"] == {"description": "worked example"}
    assert out_file.read_text().startswith('{\n    "info"')  # 4-space indentation

    # Load time ([DS 8.4]): annotated segments bicycle (position 1) and person (position 2).
    coco = tmp_path / "coco"
    dicts = load_instaorder_panoptic_json(
        str(out_file), str(coco / "val2017"), str(coco / "panoptic_val2017")
    )
    sample = InstaOrderPanopticMapper(is_train=False, task="od")(dicts[0])
    assert sample["tgt_pan_idx"].tolist() == [1, 2]
    assert sample["occlusion_matrix"].tolist() == [[0, 1], [1, 0]]
    assert sample["depth_matrix"].tolist() == [[-1, 1], [0, -1]]
    assert sample["overlap_matrix"].tolist() == [[-1, 1], [1, -1]]
    assert sample["count_matrix"].tolist() == [[-1, 3], [3, -1]]
    assert sample["instances"].gt_classes.tolist() == [2, 1, 0, 100]
    assert sample["instances"].gt_masks.dtype == torch.bool


def test_train_and_val_write_separate_files_and_summary(tmp_path):
    make_synthetic_dataset(str(tmp_path), num_train=3, num_val=2, image_size=64, seed=1)
    ann = tmp_path / "coco" / "annotations"
    expected = {
        s: json.loads((ann / f"InstaOrderPanoptic_{s}2017.json").read_text())
        for s in ("train", "val")
    }
    dest = tmp_path / "out"
    prepare.main(
        ["--train", "--val", "--root", str(tmp_path), "--dest-dir", str(dest), "--no-progress"]
    )
    for split in ("train", "val"):
        got = json.loads((dest / f"InstaOrderPanoptic_{split}2017.json").read_text())
        assert got == expected[split]  # the generator's direct output equals the conversion


def test_summary_counts_drops():
    record = dict(RECORD, instance_ids=[9001, 9002, 424])  # 424 is not an instance
    instances = {
        "images": [],
        "annotations": [{"id": 9001, "image_id": 424242}, {"id": 9002, "image_id": 424242}],
    }
    panoptic = {
        "images": [],
        "categories": COCO_CATEGORIES,
        "annotations": [{"file_name": "x.png", "image_id": 424242, "segments_info": []}],
    }
    out, summary = prepare.convert_split(
        {"annotations": [record, dict(RECORD, image_id=5)]},
        instances,
        panoptic,
        "unused",
        progress=False,
    )
    assert out["annotations"] == []
    assert summary["records skipped: instance id not in the instances file"] == 1
    assert summary["records without a panoptic annotation"] == 1


def test_matching_is_greedy_with_pixel_removal():
    seg = np.zeros((2, 1, 10), dtype=bool)
    seg[0, 0, :4] = True
    seg[1, 0, 4:7] = True
    inst = np.zeros((3, 1, 10), dtype=bool)
    inst[0, 0, :4] = True  # exact match with segment 0
    inst[1, 0, 2:7] = True  # overlaps instance 0; IoU with seg 1 = 3/5 -> 3/3 after removal
    inst[2, 0, 7:] = True  # nothing left to match
    assert prepare.match_instances(seg, inst) == [0, 1, -1]
    with pytest.raises(FileNotFoundError, match="README"):
        prepare.load_json_object("/nonexistent/InstaOrder_val2017.json", "file", list_keys=())
