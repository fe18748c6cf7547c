"""The synthetic twin: deterministic, real formats, labels correct by construction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from scripts import load_script

from instaformer.data import load_instaorder_json, make_synthetic_dataset
from instaformer.data.io import read_panoptic_ids
from mask2former.utils.outputs import RECORD_NAME


def _files(root: Path) -> dict[str, bytes]:
    """The dataset's files (not the record of written files, which holds their times)."""
    files = (p for p in root.rglob("*") if p.is_file() and p.name != RECORD_NAME)
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_deterministic_and_seed_dependent(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_synthetic_dataset(str(a), num_train=4, num_val=2, image_size=(48, 64), seed=7)
    make_synthetic_dataset(str(b), num_train=4, num_val=2, image_size=(48, 64), seed=7)
    make_synthetic_dataset(str(c), num_train=4, num_val=2, image_size=(48, 64), seed=8)
    files = _files(a)
    assert files == _files(b) and files != _files(c)
    assert "coco/annotations/InstaOrderPanoptic_train2017.json" in files
    assert "coco/annotations/instances_val2017.json" in files
    with Image.open(next((a / "coco" / "train2017").iterdir())) as image:
        assert image.size == (64, 48)


def test_formats_and_labels_by_construction(tmp_path):
    truth = make_synthetic_dataset(str(tmp_path), num_train=30, num_val=0, image_size=64, seed=2)
    ann = tmp_path / "coco" / "annotations"
    panoptic = json.loads((ann / "panoptic_train2017.json").read_text())
    instances = json.loads((ann / "instances_train2017.json").read_text())
    masks = {
        a["id"]: mask_utils.decode(
            mask_utils.frPyObjects(a["segmentation"], 64, 64)
            if isinstance(a["segmentation"]["counts"], list)
            else a["segmentation"]
        ).astype(bool)
        for a in instances["annotations"]
    }
    assert any(isinstance(a["segmentation"]["counts"], list) for a in instances["annotations"])
    dicts = load_instaorder_json(
        str(ann / "InstaOrder_train2017.json"),
        str(ann / "instances_train2017.json"),
        str(tmp_path / "coco" / "train2017"),
    )
    equal_pairs = overlap_pairs = 0
    for pan, gt, record in zip(panoptic["annotations"], truth["train"], dicts, strict=True):
        ids = read_panoptic_ids(str(tmp_path / "coco" / "panoptic_train2017" / pan["file_name"]))
        assert sorted(np.unique(ids).tolist()) == sorted(s["id"] for s in pan["segments_info"])
        for seg in pan["segments_info"]:
            assert seg["area"] == int((ids == seg["id"]).sum())
        # The instance masks of the record equal the panoptic segments of the same things.
        things = {s["id"]: s for s in gt["segments"] if s["z"] is not None}
        assert len(record["annotations"]) == len(things) >= 2
        # An occluder is painted later, so it is never farther than what it hides.
        for s in things.values():
            for hidden in s["occludes"]:
                assert s["z"] <= things[hidden]["z"]
        for entry in record["instaorder"]["depth"]:
            equal_pairs += "=" in entry["order"]
            overlap_pairs += entry["overlap"]
        for a in record["annotations"]:
            assert masks[a["id"]].any()
    assert equal_pairs > 0 and overlap_pairs > 0


def test_cli_writes_the_layout(tmp_path, capsys):
    cli = load_script("tools/make_synthetic_dataset.py")
    cli.main(["--root", str(tmp_path), "--num-train", "2", "--num-val", "1", "--image-size", "48"])
    assert len(list((tmp_path / "coco" / "panoptic_val2017").iterdir())) == 1
    assert len(list((tmp_path / "coco" / "train2017").iterdir())) == 2
    assert "synthetic_instaorder_train: 2 images" in capsys.readouterr().out


def test_scene_labels_are_readable_at_quarter_resolution():
    from instaformer.data import synthetic

    rng = np.random.default_rng(0)
    h = w = 96
    min_hidden = round(synthetic._MIN_HIDDEN * h * w)
    gap = round(synthetic._MIN_GAP * h)
    scenes = [s for s in (synthetic._scene(rng, h, w, 5) for _ in range(60)) if s is not None]
    assert len(scenes) >= 50
    occlusions = 0
    for scene in scenes:
        labels, things = scene["labels"], scene["things"]
        assert 2 <= len(things) <= 5
        for a in things:
            for b in things:
                if a is b:
                    continue
                hidden = int((labels[b.mask] == a.label).sum())
                if b.label in a.occludes:
                    occlusions += 1
                    assert hidden >= min_hidden
                elif a.label not in b.occludes:
                    assert hidden == 0
                    pa = np.argwhere(labels == a.label)
                    pb = np.argwhere(labels == b.label)
                    distance = np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1)).min()
                    assert distance > gap
    assert occlusions >= 20
