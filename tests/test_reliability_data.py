"""Annotation files and records: wrong inputs name file and record; equivalent labels agree."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from instaformer.data import (
    DataError,
    load_instaorder_json,
    load_instaorder_panoptic_json,
    make_synthetic_dataset,
)
from instaformer.data.relations import build_order_matrices


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reliable")
    make_synthetic_dataset(str(path), num_train=0, num_val=2, image_size=64, seed=0)
    return path


def _panoptic(root: Path, path: Path):
    coco = root / "coco"
    return load_instaorder_panoptic_json(
        str(path), str(coco / "val2017"), str(coco / "panoptic_val2017")
    )


def _instaorder(root: Path, orders: Path, instances: Path | None = None):
    ann = root / "coco" / "annotations"
    instances = instances or ann / "instances_val2017.json"
    return load_instaorder_json(str(orders), str(instances), str(root / "coco" / "val2017"))


def _edited(root: Path, tmp_path: Path, name: str, edit) -> Path:
    data = json.loads((root / "coco" / "annotations" / name).read_text())
    edit(data)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"annotations": [', "is not valid JSON"),
        (b'{"annotations": [], "info": "caf\xe9"}', "is not UTF-8 text"),
        (b"[1, 2]", "must hold a JSON object, got a list"),
        (b'{"images": []}', "has no top-level 'annotations'"),
        (b'{"annotations": {"0": 1}}', "has a dict as top-level 'annotations'"),
    ],
)
def test_unreadable_annotation_files_are_named(root, tmp_path, content, message) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"broken\.json.*{message}|{message}.*"):
        _panoptic(root, path)
    with pytest.raises(DataError, match="broken.json"):
        _instaorder(root, path)


def _first_panoptic_record(edit):
    return lambda data: edit(data["annotations"][0])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda a: a["instaorder"].update(occlusion={"0<1": 1}),
            "'occlusion' must be a list, got dict",
        ),
        (lambda a: a["instaorder"].update(depth=[["0<1"]]), "each 'depth' entry must be an object"),
        (
            lambda a: a["instaorder"].update(instance_ids=["a", "b"]),
            "'instance_ids' must hold integers",
        ),
        (lambda a: a.update(segments_info="garbage"), "'segments_info' must be a list of objects"),
        (lambda a: a["segments_info"][0].pop("category_id"), "malformed record .*category_id"),
        (lambda a: a.update(instaorder=[1]), "InstaOrder record must be an object"),
    ],
)
def test_wrong_types_in_a_panoptic_record_name_file_and_record(root, tmp_path, edit, message):
    path = _edited(root, tmp_path, "InstaOrderPanoptic_val2017.json", _first_panoptic_record(edit))
    with pytest.raises(
        DataError, match=rf"InstaOrderPanoptic_val2017\.json, image_id 900001: {message}"
    ):
        _panoptic(root, path)


def test_wrong_types_in_instaorder_and_instances_name_file_and_record(root, tmp_path) -> None:
    def occlusion_dict(data):
        data["annotations"][1]["occlusion"] = {"order": "0<1"}

    path = _edited(root, tmp_path, "InstaOrder_val2017.json", occlusion_dict)
    with pytest.raises(DataError, match=r"InstaOrder_val2017\.json, image_id 900002: 'occlusion'"):
        _instaorder(root, path)

    orders = json.loads((root / "coco/annotations/InstaOrder_val2017.json").read_text())
    target = orders["annotations"][0]["instance_ids"][0]

    def garbage(data):
        next(a for a in data["annotations"] if a["id"] == target)["segmentation"] = "garbage"

    instances = _edited(root, tmp_path, "instances_val2017.json", garbage)
    with pytest.raises(
        DataError,
        match=rf"image_id 900001: instance {target} of .*instances_val2017"
        r"\.json has a 'segmentation' of type str \('garbage'\)",
    ):
        _instaorder(root, root / "coco/annotations/InstaOrder_val2017.json", instances)


def _record(*orders: str) -> dict:
    return {"instance_ids": [10, 11, 12], "occlusion": [{"order": o} for o in orders], "depth": []}


@pytest.mark.parametrize("rm_bidirec", [False, True])
def test_contradictory_occlusion_entries_equal_the_combined_form(rm_bidirec: bool) -> None:
    combined = build_order_matrices(_record("0<1 & 1<0", "2<0"), rm_bidirec=rm_bidirec)
    expected = combined["occlusion"]
    assert expected[0, 1] == expected[1, 0] == (-1 if rm_bidirec else 1) and expected[2, 0] == 1
    entries = ["0<1", "1<0", "2<0", "0<1 & 1<0"]
    for subset in (entries[:3], entries[1:], entries):
        for order in itertools.permutations(subset):
            got = build_order_matrices(_record(*order), rm_bidirec=rm_bidirec)["occlusion"]
            np.testing.assert_array_equal(got, expected, err_msg=str(order))


def test_training_set_without_annotations_is_refused_and_filter_drops_empty_images(root) -> None:
    from instaformer.config import setup_cfg
    from instaformer.train import _panoptic_train_loader
    from mask2former.data.build import get_detection_dataset_dicts
    from mask2former.data.catalog import DatasetCatalog

    dicts = _panoptic(root, root / "coco/annotations/InstaOrderPanoptic_val2017.json")
    crowd_only = [
        dict(d, segments_info=[dict(s, iscrowd=1) for s in d["segments_info"]]) for d in dicts
    ]
    empty = [dict(d, segments_info=[]) for d in dicts]
    for name, records in {
        "all_empty": [crowd_only[0], empty[1]],
        "one_empty": [dicts[0], empty[1]],
    }.items():
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        DatasetCatalog.register(name, lambda records=records: records)
    cfg = setup_cfg("synthetic/maskformer2_R50_tiny.yaml", ["DATASETS.TRAIN", "('all_empty',)"])
    with pytest.raises(
        DataError, match=r"training set \['all_empty'\]: none of its 2 images has an annotated"
    ):
        _panoptic_train_loader(cfg, 0)
    kept = get_detection_dataset_dicts("one_empty", filter_empty=True)
    assert [d["image_id"] for d in kept] == [dicts[0]["image_id"]]
    assert len(get_detection_dataset_dicts("one_empty", filter_empty=False)) == 2


def _second_image_shares_the_first_id(data):
    data["images"][1]["id"] = data["images"][0]["id"]


def _segment_listed_twice(data):
    data["annotations"][1]["segments_info"].append(data["annotations"][1]["segments_info"][0])


def _two_order_records_for_one_image(data):
    data["annotations"].append(dict(data["annotations"][0], file_name="copy.png"))


def _two_images_share_a_file(data):
    data["images"][1]["file_name"] = data["images"][0]["file_name"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_second_image_shares_the_first_id, "image ids used by more than one entry of 'images': "),
        (
            _segment_listed_twice,
            r"segments listed twice in one segments_info: image_id 900002 \(segment ids ",
        ),
        (_two_order_records_for_one_image, "image ids with more than one annotation .*: 900001"),
        (
            _two_images_share_a_file,
            "image file names used by more than one image: '000000900001.jpg'",
        ),
    ],
)
def test_duplicates_in_a_panoptic_file_are_refused_naming_file_and_ids(
    root, tmp_path, edit, message
):
    path = _edited(root, tmp_path, "InstaOrderPanoptic_val2017.json", edit)
    with pytest.raises(
        DataError,
        match=r"InstaOrderPanoptic_val2017\.json: duplicates would be counted twice or silently "
        rf"replace each other: {message}",
    ):
        _panoptic(root, path)


def test_duplicates_in_instaorder_and_instances_files_are_refused(root, tmp_path) -> None:
    def two_records(data):
        data["annotations"].append(data["annotations"][0])

    orders = _edited(root, tmp_path, "InstaOrder_val2017.json", two_records)
    with pytest.raises(
        DataError,
        match=r"InstaOrder_val2017\.json: duplicates .*: image ids with more than one order "
        r"record: 900001$",
    ):
        _instaorder(root, orders)

    def repeated_instance_id(data):
        data["annotations"][1]["id"] = data["annotations"][0]["id"]

    instances = _edited(root, tmp_path, "instances_val2017.json", repeated_instance_id)
    with pytest.raises(
        DataError,
        match=r"instances_val2017\.json: duplicates .*: annotation ids used by more than one "
        r"instance: 90000100$",
    ):
        _instaorder(root, root / "coco/annotations/InstaOrder_val2017.json", instances)


def test_check_dataset_names_duplicate_ids(root, tmp_path) -> None:
    from instaformer.data.check import check_dataset
    from instaformer.data.custom import register_panoptic_order_dataset

    path = _edited(root, tmp_path, "InstaOrderPanoptic_val2017.json", _segment_listed_twice)
    coco = root / "coco"
    register_panoptic_order_dataset(
        "duplicates_check",
        image_root=str(coco / "val2017"),
        panoptic_root=str(coco / "panoptic_val2017"),
        json_file=str(path),
        replace=True,
    )
    report = check_dataset("duplicates_check")
    assert not report.ok and len(report.faults) == 1
    assert report.faults[0].startswith(
        f"duplicates_check: cannot load the dataset: {path}: duplicates would be counted twice "
        "or silently replace each other: segments listed twice in one segments_info: image_id "
        "900002 (segment ids "
    )
