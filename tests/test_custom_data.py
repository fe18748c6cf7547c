"""Own datasets: the simple format converted, registered by function and by YAML, checked.

The dataset is the example of docs/custom_data.md: the synthetic twin with three non-COCO
categories (blob, block: things; backdrop: stuff) in a layout unlike COCO's.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from scripts import load_script

from instaformer.apps.ground_truth import write_ground_truth_pictures
from instaformer.config import ConfigError, setup_cfg
from instaformer.data import make_synthetic_dataset, register_instaorder_panoptic
from instaformer.data.check import check_dataset
from instaformer.data.convert import convert_to_instaorder_panoptic
from instaformer.data.custom import (
    check_num_classes,
    register_custom_datasets,
    register_panoptic_order_dataset,
)
from instaformer.data.example import EXAMPLE_CATEGORIES, make_example_dataset
from instaformer.data.io import DataError
from instaformer.data.mapper import InstaOrderPanopticMapper
from instaformer.evaluation import build_evaluators
from mask2former.data.catalog import DatasetCatalog, MetadataCatalog
from mask2former.modeling.meta_arch import thing_class_ids
from mask2former.structures import Instances

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "custom" / "shapes_tiny.yaml"
SIZES = {"num_train": 6, "num_val": 4, "image_size": 64, "seed": 3}


def _convert(root: Path, split: str) -> dict[str, int]:
    return convert_to_instaorder_panoptic(
        str(root / f"{split}.json"),
        image_root=str(root / "images" / split),
        out_json=str(root / f"instaorder_{split}.json"),
        out_panoptic=str(root / "panoptic" / split),
    )


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> Path:
    """A dataset root holding ``shapes/`` (the example, both splits converted)."""
    root = tmp_path_factory.mktemp("custom")
    make_example_dataset(str(root / "shapes"), **SIZES)
    for split in ("train", "val"):
        _convert(root / "shapes", split)
    return root


def _register(name: str, shapes: Path, split: str = "val") -> None:
    register_panoptic_order_dataset(
        name,
        image_root=str(shapes / "images" / split),
        panoptic_root=str(shapes / "panoptic" / split),
        json_file=str(shapes / f"instaorder_{split}.json"),
        replace=True,
    )


def test_converted_twin_keeps_masks_classes_and_orders(datasets, tmp_path):
    twin = tmp_path / "twin"
    make_synthetic_dataset(str(twin), **SIZES)
    register_instaorder_panoptic("twin_val_for_custom", split="val", root=str(twin), replace=True)
    _register("shapes_val_converted", datasets / "shapes")
    mapper = InstaOrderPanopticMapper(is_train=False, task="od")
    original = DatasetCatalog.get("twin_val_for_custom")
    converted = DatasetCatalog.get("shapes_val_converted")
    assert len(original) == len(converted) == SIZES["num_val"]
    to_example = {0: 0, 32: 0, 2: 1, 33: 1}  # contiguous COCO person/ball -> blob, car/kite
    for a, b in zip(original, converted, strict=True):
        out_a, out_b = mapper(a), mapper(b)
        assert np.array_equal(out_a["image"], out_b["image"])
        rows_a, rows_b = out_a["tgt_pan_idx"].tolist(), out_b["tgt_pan_idx"].tolist()
        assert len(rows_a) == len(rows_b) >= 2
        masks_a, masks_b = out_a["instances"].gt_masks, out_b["instances"].gt_masks
        classes_a = out_a["instances"].gt_classes
        for ra, rb in zip(rows_a, rows_b, strict=True):
            assert torch.equal(masks_a[ra], masks_b[rb])
            assert to_example[int(classes_a[ra])] == int(out_b["instances"].gt_classes[rb])
        for key in ("occlusion", "depth", "overlap", "count"):
            assert torch.equal(out_a[f"{key}_matrix"], out_b[f"{key}_matrix"]), key
        backdrop = out_b["instances"].gt_classes == 2
        assert int(backdrop.sum()) == 1
        stuff = ~torch.isin(classes_a, torch.tensor(list(to_example)))
        assert torch.equal(masks_a[stuff].any(0), masks_b[backdrop][0])


def test_register_by_function_derives_metadata_from_the_json(datasets):
    _register("shapes_val_fn", datasets / "shapes")
    meta = MetadataCatalog.get("shapes_val_fn")
    assert meta.thing_classes == ["blob", "block"]
    assert meta.stuff_classes == ["blob", "block", "backdrop"]
    assert meta.thing_dataset_id_to_contiguous_id == {101: 0, 102: 1}
    assert meta.stuff_dataset_id_to_contiguous_id == {101: 0, 102: 1, 200: 2}
    assert meta.stuff_colors == [c["color"] for c in EXAMPLE_CATEGORIES]
    assert meta.evaluator_type == "instaorder"
    items = DatasetCatalog.get("shapes_val_fn")
    assert len(items) == SIZES["num_val"]
    assert all(Path(d["file_name"]).is_file() for d in items)
    assert {s["category_id"] for d in items for s in d["segments_info"]} <= {0, 1, 2}
    assert thing_class_ids(3, ["shapes_val_fn"]) == frozenset({0, 1})


def test_explicit_categories_need_not_come_from_the_json(datasets):
    shapes = datasets / "shapes"
    cats = [dict(c, color=[1, 2, 3]) if c["id"] == 200 else c for c in EXAMPLE_CATEGORIES]
    register_panoptic_order_dataset(
        "shapes_val_cats",
        image_root=str(shapes / "images" / "val"),
        panoptic_root=str(shapes / "panoptic" / "val"),
        json_file=str(shapes / "instaorder_val.json"),
        categories=cats,
        replace=True,
    )
    assert MetadataCatalog.get("shapes_val_cats").stuff_colors[2] == [1, 2, 3]
    with pytest.raises(KeyError, match="already registered"):
        register_panoptic_order_dataset(
            "shapes_val_cats", image_root="a", panoptic_root="b", json_file="c.json"
        )


def test_register_by_yaml_alone(datasets, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets))
    cfg = setup_cfg(str(CONFIG))
    assert register_custom_datasets(cfg) == ["shapes_train", "shapes_val"]
    check_num_classes(cfg)
    assert len(DatasetCatalog.get("shapes_train")) == SIZES["num_train"]
    meta = MetadataCatalog.get("shapes_val")
    assert meta.stuff_classes == ["blob", "block", "backdrop"]
    assert meta.panoptic_root == str(datasets / "shapes" / "panoptic" / "val")
    assert thing_class_ids(3, [*cfg.DATASETS.TRAIN]) == frozenset({0, 1})


def test_num_classes_mismatch_names_the_key_and_both_numbers(datasets, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets))
    cfg = setup_cfg(str(CONFIG), ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "133"])
    register_custom_datasets(cfg)
    with pytest.raises(ConfigError, match=r"NUM_CLASSES is 133 but dataset 'shapes_train' has 3"):
        check_num_classes(cfg)


def test_custom_entry_cannot_take_a_built_in_name(tmp_path):
    config = tmp_path / "clash.yaml"
    entry = "IMAGE_ROOT: a\n      PANOPTIC_ROOT: b\n      JSON: c.json\n"
    config.write_text(
        f"_BASE_: {CONFIG}\nDATASETS:\n  CUSTOM:\n    instaorder_2017_val_panoptic:\n      {entry}"
    )
    with pytest.raises(ConfigError, match="instaorder_2017_val_panoptic' is already a registered"):
        register_custom_datasets(setup_cfg(str(config)))


def test_custom_entry_missing_a_key_is_named(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"_BASE_: {CONFIG}\nDATASETS:\n  CUSTOM:\n    mine:\n      IMAGE_ROOT: a\n      JSON: b\n"
    )
    cfg = setup_cfg(str(config))
    with pytest.raises(
        ConfigError, match=r"DATASETS.CUSTOM.mine.*missing keys \['PANOPTIC_ROOT'\]"
    ):
        register_custom_datasets(cfg)


def _perfect_outputs(out: dict, thing_ids: set[int], num_classes: int) -> dict:
    inst = out["instances"]
    masks, classes = inst.gt_masks, inst.gt_classes
    seg = torch.zeros(masks.shape[1:], dtype=torch.int32)
    info = []
    for k, (mask, c) in enumerate(zip(masks, classes.tolist(), strict=True)):
        seg[mask] = k + 1
        info.append({"id": k + 1, "category_id": c, "isthing": c in thing_ids})
    things = torch.tensor([c in thing_ids for c in classes.tolist()], dtype=torch.bool)
    pred = Instances(
        tuple(masks.shape[1:]),
        pred_masks=masks[things],
        scores=torch.ones(int(things.sum())),
        pred_classes=classes[things],
    )
    scores = torch.zeros(num_classes, *masks.shape[1:])
    for mask, c in zip(masks, classes.tolist(), strict=True):
        scores[c][mask] = 1.0
    return {"panoptic_seg": (seg, info), "instances": pred, "sem_seg": scores}


def test_ground_truth_as_prediction_scores_100(datasets, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets))
    cfg = setup_cfg(str(CONFIG), ["TEST.OCCLUSION_EVALUATION", "False"])
    cfg.defrost()
    cfg.TEST.DEPTH_EVALUATION = False
    register_custom_datasets(cfg)
    evaluator = build_evaluators(cfg, "shapes_val", None)
    evaluator.reset()
    mapper = InstaOrderPanopticMapper(is_train=False, task="od")
    for item in DatasetCatalog.get("shapes_val"):
        out = mapper(item)
        evaluator.process([out], [_perfect_outputs(out, {0, 1}, 3)])
    results = evaluator.evaluate()
    assert results["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    assert results["panoptic_seg"]["PQ_st"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)


def test_check_dataset_passes_and_draws(datasets, tmp_path):
    _register("shapes_val_check", datasets / "shapes")
    report = check_dataset("shapes_val_check", samples=1)
    assert report.ok, report.faults
    assert len(report.samples) == 1 and not report.pictures
    written = write_ground_truth_pictures(report, str(tmp_path))
    assert report.pictures == written and all(Path(p).parent == tmp_path for p in written)
    assert report.images == SIZES["num_val"]
    assert report.classes == ["blob", "block", "backdrop"]
    assert min(report.instances_per_image) >= 2
    assert report.depth["closer"] + report.depth["equal"] > 0
    assert sorted(Path(p).name.split("_")[-1] for p in report.pictures) == [
        "depth.png",
        "occlusion.png",
        "panoptic.png",
    ]
    summary = report.summary()
    assert "shapes_val_check: OK" in summary
    strict, equal = report.depth["closer"], report.depth["equal"]
    assert f"INPUT.DEPTH_SAMPLES_PER_CLASS {[strict, strict, 2 * equal]}" in summary


def _edit_json(shapes: Path, edit: Callable[[dict], None]) -> None:
    path = shapes / "instaorder_val.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _missing_image(shapes: Path) -> None:
    (shapes / "images" / "val" / "scene_0001.jpg").unlink()


def _png_wrong_size(shapes: Path) -> None:
    path = shapes / "panoptic" / "val" / "scene_0002.png"
    Image.open(path).resize((32, 32), Image.NEAREST).save(path)


def _segment_not_in_png(shapes: Path) -> None:
    def edit(data):
        seg = {"id": 99, "category_id": 101, "iscrowd": 0, "bbox": [0, 0, 1, 1], "area": 1}
        data["annotations"][0]["segments_info"].append(seg)

    _edit_json(shapes, edit)


def _contradicting_orders(shapes: Path) -> None:
    def edit(data):
        record = data["annotations"][3]["instaorder"]
        first = record["depth"][0]
        i, j = first["order"].replace("=", "<").split("<")
        record["depth"].append({"order": f"{j}<{i}", "count": 2, "overlap": False})

    _edit_json(shapes, edit)


def _unknown_category(shapes: Path) -> None:
    def edit(data):
        data["annotations"][1]["segments_info"][0]["category_id"] = 555

    _edit_json(shapes, edit)


def _png_id_without_segment(shapes: Path) -> None:
    path = shapes / "panoptic" / "val" / "scene_0003.png"
    rgb = np.array(Image.open(path))
    rgb[0, 0] = (77, 0, 0)
    Image.fromarray(rgb).save(path)


BROKEN = {
    "missing_image": (_missing_image, r"image not found: .*scene_0001\.jpg"),
    "png_wrong_size": (_png_wrong_size, r"scene_0002\.png is 32x32 but the image is 64x64"),
    "segment_not_in_png": (_segment_not_in_png, r"segments \[99\] of segments_info do not occur"),
    "contradicting_orders": (_contradicting_orders, r"depth pair .* labelled twice"),
    "unknown_category": (_unknown_category, r"unknown category_id 555"),
    "png_id_without_segment": (_png_id_without_segment, r"segment ids \[77\].*not in segments"),
}


@pytest.mark.parametrize("variant", sorted(BROKEN))
def test_check_dataset_names_the_fault(datasets, tmp_path, variant):
    shapes = tmp_path / "shapes"
    for sub in ("images/val", "panoptic/val"):
        shutil.copytree(datasets / "shapes" / sub, shapes / sub)
    shutil.copy(datasets / "shapes" / "instaorder_val.json", shapes)
    breaker, expected = BROKEN[variant]
    breaker(shapes)
    _register(f"shapes_val_{variant}", shapes)
    report = check_dataset(f"shapes_val_{variant}")
    assert not report.ok
    assert any(re.search(expected, f) for f in report.faults), report.faults


def _one_image(tmp_path: Path, **changes) -> Path:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.jpg")
    ids = np.zeros((8, 8), np.uint8)
    ids[:, :4], ids[:2, 4:], ids[4:, 4:] = 1, 2, 3
    Image.fromarray(ids).save(tmp_path / "ids.png")
    image = {
        "file_name": "a.jpg",
        "mask_file": "ids.png",
        "instances": [
            {"category_id": 200, "mask_id": 1},
            {"category_id": 101, "mask_id": 2},
            {"category_id": 102, "mask_id": 3},
        ],
        "occlusion": [[1, 2]],
        "depth": [{"closer": 1, "farther": 2}],
        **changes,
    }
    source = tmp_path / "split.json"
    source.write_text(json.dumps({"categories": EXAMPLE_CATEGORIES, "images": [image]}))
    return source


def _run_convert(source: Path) -> dict:
    folder = source.parent
    convert_to_instaorder_panoptic(
        str(source),
        image_root=str(folder),
        out_json=str(folder / "out.json"),
        out_panoptic=str(folder / "pan"),
    )
    return json.loads((folder / "out.json").read_text())


def test_convert_writes_the_instaorder_record(tmp_path):
    data = _run_convert(_one_image(tmp_path))
    ann = data["annotations"][0]
    assert [s["id"] for s in ann["segments_info"]] == [1, 2, 3]
    assert ann["instaorder"] == {
        "instance_ids": [2, 3],
        "occlusion": [{"order": "0<1", "count": 2}],
        "depth": [{"order": "0<1", "count": 2, "overlap": False}],
        "pan_instance_ids": [2, 3],
    }
    assert data["images"][0] == {"id": 1, "file_name": "a.jpg", "height": 8, "width": 8}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".instaformer-written.jsonl",  # the converter's record of what it wrote
        "a.jpg",
        "ids.png",
        "out.json",
        "pan",
        "split.json",
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"occlusion": [[0, 1]]}, r"occlusion names instance 0, which is not an ordered instance"),
        ({"depth": [{"closer": 1}]}, r"needs 'closer' and 'farther', or 'equal'"),
        (
            {"instances": [{"category_id": 7, "mask_id": 1}]},
            r"instance 0: category_id 7 is not in the categories",
        ),
        (
            {"instances": [{"category_id": 101, "mask_id": 1}, {"category_id": 101, "mask_id": 1}]},
            r"instance 1 overlaps instance 0",
        ),
        ({"instances": [{"category_id": 101, "mask_id": 9}]}, r"instance 0: the mask is empty"),
        (
            {"depth": [{"closer": 1, "farther": 2}, {"closer": 2, "farther": 1}]},
            r"depth pair \(0, 1\) is labelled twice",
        ),
    ],
)
def test_convert_names_the_fault(tmp_path, changes, expected):
    if "instances" in changes:
        changes = {"occlusion": [], "depth": [], **changes}
    with pytest.raises(DataError, match=expected):
        _run_convert(_one_image(tmp_path, **changes))
    assert not (tmp_path / "out.json").exists()


def test_new_class_count_reinitialises_only_the_class_head(tmp_path):
    from instaformer.modeling import build_model
    from instaformer.train import load_weights

    base = str(REPO / "configs" / "synthetic" / "instaformer_od_tiny.yaml")
    no_data = ["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
    coco = build_model(setup_cfg(base, no_data))
    torch.save({"model": coco.state_dict()}, tmp_path / "coco.pth")
    cfg = setup_cfg(base, [*no_data, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"])
    report = load_weights(cfg, build_model(cfg), str(tmp_path / "coco.pth"))
    head = "sem_seg_head.predictor.class_embed"
    assert sorted(report["missing_keys"]) == [
        "criterion.empty_weight",
        f"{head}.bias",
        f"{head}.weight",
    ]
    assert report["unexpected_keys"] == []
    assert [k for k, _, _ in report["incorrect_shapes"]] == [
        f"{head}.weight",
        f"{head}.bias",
        "criterion.empty_weight",
    ]


def test_predictor_names_the_classes_of_a_custom_dataset(datasets, monkeypatch):
    from instaformer.predictor import Predictor

    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets))
    predictor = Predictor(
        setup_cfg(str(CONFIG), ["MODEL.DEVICE", "cpu"]), model=torch.nn.Identity()
    )
    assert predictor.class_names == ["blob", "block", "backdrop"]


def test_check_dataset_tool_exit_code(datasets, tmp_path, capsys):
    tool = load_script("tools/check_dataset.py")
    _register("shapes_val_tool", datasets / "shapes")
    assert tool.main(["--datasets", "shapes_val_tool"]) == 0
    assert "shapes_val_tool: OK" in capsys.readouterr().out
    shapes = tmp_path / "shapes"
    for sub in ("images/val", "panoptic/val"):
        shutil.copytree(datasets / "shapes" / sub, shapes / sub)
    shutil.copy(datasets / "shapes" / "instaorder_val.json", shapes)
    _unknown_category(shapes)
    _register("shapes_val_tool_broken", shapes)
    assert tool.main(["--datasets", "shapes_val_tool", "shapes_val_tool_broken"]) == 1
    out = capsys.readouterr().out
    assert "FAULT" in out and "unknown category_id 555" in out and "shapes_val_tool: OK" in out


def test_per_image_folder_and_every_mask_kind_convert_alike(tmp_path):
    reference = _run_convert(_one_image(tmp_path))
    split = json.loads((tmp_path / "split.json").read_text())
    image = split["images"][0]
    ids = np.array(Image.open(tmp_path / "ids.png"))
    folder = tmp_path / "per_image"
    folder.mkdir()
    instances = []
    for k, inst in enumerate(image["instances"]):
        mask = ids == inst["mask_id"]
        if k == 1:  # own binary PNG
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "region1.png")
            instances.append({"category_id": inst["category_id"], "mask_file": "region1.png"})
        else:  # compressed RLE
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            instances.append({"category_id": inst["category_id"], "segmentation": rle})
    per_image = {k: v for k, v in image.items() if k != "mask_file"}
    (folder / "0001.json").write_text(json.dumps({**per_image, "instances": instances}))
    (folder / "categories.json").write_text(json.dumps({"categories": EXAMPLE_CATEGORIES}))
    converted = convert_to_instaorder_panoptic(
        str(folder),
        image_root=str(tmp_path),
        out_json=str(tmp_path / "from_folder.json"),
        out_panoptic=str(tmp_path / "pan_folder"),
    )
    assert converted["images"] == 1 and converted["ordered_instances"] == 2
    data = json.loads((tmp_path / "from_folder.json").read_text())
    assert data["annotations"] == reference["annotations"]
    assert np.array_equal(
        np.array(Image.open(tmp_path / "pan_folder" / "a.png")),
        np.array(Image.open(tmp_path / "pan" / "a.png")),
    )


def test_a_categories_only_json_is_enough_for_the_metadata(tmp_path):
    (tmp_path / "cats.json").write_text(json.dumps({"categories": EXAMPLE_CATEGORIES}))
    register_panoptic_order_dataset(
        "shapes_metadata_only",
        image_root=str(tmp_path),
        panoptic_root=str(tmp_path),
        json_file=str(tmp_path / "cats.json"),
        replace=True,
    )
    assert MetadataCatalog.get("shapes_metadata_only").stuff_classes[2] == "backdrop"
    assert thing_class_ids(3, ["shapes_metadata_only"]) == frozenset({0, 1})
