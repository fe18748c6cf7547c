"""Bad input gives a clear error naming the file and record (or a documented conversion)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from instaformer.data import (
    DataError,
    InstaOrderPanopticMapper,
    load_instaorder_json,
    load_instaorder_panoptic_json,
    make_synthetic_dataset,
)
from instaformer.data.io import read_image, read_panoptic_ids
from instaformer.data.relations import build_order_matrices
from mask2former.data.catalog import DatasetCatalog


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad")
    make_synthetic_dataset(str(path), num_train=0, num_val=2, image_size=64, seed=0)
    return path


def _val(root):
    coco = root / "coco"
    return load_instaorder_panoptic_json(
        str(coco / "annotations" / "InstaOrderPanoptic_val2017.json"),
        str(coco / "val2017"),
        str(coco / "panoptic_val2017"),
    )


def test_corrupt_and_truncated_images(tmp_path, root):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"definitely not a jpeg")
    with pytest.raises(DataError, match="garbage.jpg"):
        read_image(str(garbage))
    good = next((root / "coco" / "val2017").iterdir()).read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="truncated.jpg.*truncated"):
        read_image(str(truncated))
    with pytest.raises(DataError, match="not found: .*missing.jpg"):
        read_image(str(tmp_path / "missing.jpg"))


def test_pixel_modes(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    out = read_image(str(tmp_path / "gray.png"))
    assert out.shape == (8, 8, 3) and (out[..., 0] == gray).all() and (out[..., 2] == gray).all()
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert read_image(str(tmp_path / "rgba.png"), "BGR")[0, 0].tolist() == [0, 0, 200]
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert (read_image(str(tmp_path / "deep.png")) == round(40000 / 257)).all()  # 16-bit scaled
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(DataError, match="float.tif.*'F'.*range is undefined"):
        read_image(str(tmp_path / "float.tif"))
    with pytest.raises(DataError, match="gray.png.*8-bit RGB"):
        read_panoptic_ids(str(tmp_path / "gray.png"))


def test_missing_dataset_file_names_path_and_readme(tmp_path, monkeypatch):
    import instaformer.data  # noqa: F401  (registered at import, root read now)

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "nowhere"))
    expected = str(tmp_path / "nowhere" / "coco" / "annotations" / "InstaOrderPanoptic_val2017")
    with pytest.raises(FileNotFoundError, match="datasets/README.md") as err:
        DatasetCatalog.get("instaorder_2017_val_panoptic")
    assert expected in str(err.value)
    with pytest.raises(FileNotFoundError, match="InstaOrder_train2017.json"):
        DatasetCatalog.get("instaorder_2017_train")


def _rewrite(root, tmp_path, edit):
    data = json.loads((root / "coco/annotations/InstaOrderPanoptic_val2017.json").read_text())
    edit(data["annotations"][0])
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    coco = root / "coco"
    return lambda: load_instaorder_panoptic_json(
        str(path), str(coco / "val2017"), str(coco / "panoptic_val2017")
    )


def test_annotation_referencing_missing_segment(root, tmp_path):
    def edit(ann):
        ann["instaorder"]["pan_instance_ids"][0] = 12345

    with pytest.raises(DataError, match=r"edited.json, image_id 900001.*\[12345\]"):
        _rewrite(root, tmp_path, edit)()


def test_pan_instance_ids_inconsistent_with_instance_list(root, tmp_path):
    def edit(ann):
        ann["instaorder"]["pan_instance_ids"].append(-1)

    with pytest.raises(DataError, match="image_id 900001: pan_instance_ids has"):
        _rewrite(root, tmp_path, edit)()


def test_segment_missing_from_png_and_bad_order_in_mapper(root):
    record = _val(root)[0]
    broken = dict(
        record,
        segments_info=[
            *record["segments_info"],
            {"id": 77, "category_id": 0, "iscrowd": 0, "isthing": True},
        ],
    )
    with pytest.raises(DataError, match=r"000000900001.jpg \(image_id 900001\).*\[77\]"):
        InstaOrderPanopticMapper(is_train=True)(broken)
    order = dict(record["instaorder"], depth=[{"order": "0<9", "count": 2, "overlap": False}])
    with pytest.raises(DataError, match="image_id 900001.*refers to instance 9"):
        InstaOrderPanopticMapper(is_train=True)(dict(record, instaorder=order))


@pytest.mark.parametrize(
    ("depth", "message"),
    [
        ([{"order": "0<0", "count": 2, "overlap": False}], "itself"),
        ([{"order": "0>1", "count": 2, "overlap": False}], "malformed"),
        ([{"order": "0<1", "count": 2}], "overlap"),
        (
            [
                {"order": "0<1", "count": 2, "overlap": False},
                {"order": "1<0", "count": 2, "overlap": False},
            ],
            "labelled twice",
        ),
    ],
)
def test_inconsistent_order_labels(depth, message):
    record = {"instance_ids": [1, 2], "occlusion": [], "depth": depth}
    with pytest.raises(DataError, match=f"rec 5: .*{message}"):
        build_order_matrices(record, where="rec 5")


def test_instaorder_record_referencing_missing_instance(root, tmp_path):
    ann = root / "coco" / "annotations"
    orders = json.loads((ann / "InstaOrder_val2017.json").read_text())
    orders["annotations"][1]["instance_ids"][0] = 31337
    path = tmp_path / "InstaOrder_val2017.json"
    path.write_text(json.dumps(orders))
    with pytest.raises(DataError, match=r"image_id 900002: instance ids \[31337\]"):
        load_instaorder_json(
            str(path), str(ann / "instances_val2017.json"), str(root / "coco" / "val2017")
        )
