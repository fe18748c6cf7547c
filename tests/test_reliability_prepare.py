"""datasets/prepare_instaorder_panoptic.py: atomic output, no writes through links, nothing
created before the inputs are checked, bad inputs named."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from scripts import load_script

from instaformer.data import DataError, make_synthetic_dataset
from mask2former.utils import atomic
from mask2former.utils.outputs import RECORD_NAME, OutputError

prepare = load_script("datasets/prepare_instaorder_panoptic.py")


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    make_synthetic_dataset(str(tmp_path / "data"), num_train=0, num_val=2, image_size=64, seed=3)
    return tmp_path / "data"


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _run(root: Path, dest: Path, *split: str) -> None:
    prepare.main([*split, "--root", str(root), "--dest-dir", str(dest), "--no-progress"])


def test_output_never_written_through_a_symlink_and_inputs_untouched(root, tmp_path):
    outside = tmp_path / "precious.json"
    outside.write_text('{"keep": true}')
    dest = tmp_path / "out"
    dest.mkdir()
    link = dest / "InstaOrderPanoptic_val2017.json"
    link.symlink_to(outside)
    inputs = _digests(root)
    with pytest.raises(OutputError, match=r"InstaOrderPanoptic_val2017\.json exists and is a "):
        _run(root, dest, "--val")
    assert link.is_symlink() and outside.read_text() == '{"keep": true}'
    assert sorted(p.name for p in dest.iterdir()) == ["InstaOrderPanoptic_val2017.json"]
    assert _digests(root) == inputs


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(root, tmp_path, monkeypatch):
    dest = tmp_path / "out"
    _run(root, dest, "--val")  # the script's own earlier output may be replaced
    previous = (dest / "InstaOrderPanoptic_val2017.json").read_bytes()

    def disk_full(fd):  # the JSON is in the temporary file; the disk fills before it is synced
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _run(root, dest, "--val")
    assert (dest / "InstaOrderPanoptic_val2017.json").read_bytes() == previous
    assert sorted(p.name for p in dest.iterdir()) == [
        RECORD_NAME,
        "InstaOrderPanoptic_val2017.json",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"annotations": [', "is not valid JSON"),
        (b'{"annotations": [], "x": "\xff"}', "is not UTF-8 text"),
        (b"[]", "must hold a JSON object, got a list"),
    ],
)
def test_bad_input_files_are_named_and_nothing_is_created(root, tmp_path, content, message):
    (root / "coco/annotations/InstaOrder_val2017.json").write_bytes(content)
    dest = tmp_path / "new_folder"
    with pytest.raises(DataError, match=rf"InstaOrder_val2017\.json {message}"):
        _run(root, dest, "--val")
    assert not dest.exists()


def test_missing_split_input_is_found_before_anything_is_created(root, tmp_path) -> None:
    dest = tmp_path / "new_folder"
    with pytest.raises(FileNotFoundError, match=r"InstaOrder_train2017\.json not found"):
        _run(root, dest, "--val", "--train")  # val exists, train does not
    assert not dest.exists()


def test_wrongly_typed_records_are_skipped_naming_file_and_record(root, tmp_path, caplog):
    ann = root / "coco/annotations"
    orders = json.loads((ann / "InstaOrder_val2017.json").read_text())
    orders["annotations"][0]["occlusion"] = {"order": "0<1"}
    (ann / "InstaOrder_val2017.json").write_text(json.dumps(orders))
    instances = json.loads((ann / "instances_val2017.json").read_text())
    second = set(orders["annotations"][1]["instance_ids"])
    next(a for a in instances["annotations"] if a["id"] in second)["segmentation"] = "garbage"
    (ann / "instances_val2017.json").write_text(json.dumps(instances))
    with caplog.at_level(logging.WARNING):
        _run(root, tmp_path / "out", "--val")
    first, other = orders["annotations"][0]["image_id"], orders["annotations"][1]["image_id"]
    assert f"InstaOrder_val2017.json, image_id {first}: InstaOrder record skipped" in caplog.text
    assert "'occlusion' must be a list, got dict" in caplog.text
    assert f"image_id {other}: InstaOrder record skipped: instance" in caplog.text
    assert "'segmentation' of type str" in caplog.text
    out = json.loads((tmp_path / "out/InstaOrderPanoptic_val2017.json").read_text())
    assert out["annotations"] == []


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        (
            "InstaOrder_val2017.json",
            lambda d: d["annotations"].append(d["annotations"][0]),
            r"InstaOrder_val2017\.json: duplicates .*: image ids with more than one order record: ",
        ),
        (
            "panoptic_val2017.json",
            lambda d: d["annotations"][0]["segments_info"].append(
                d["annotations"][0]["segments_info"][0]
            ),
            r"panoptic_val2017\.json: duplicates .*: segments listed twice in one segments_info: "
            r"image_id \d+ \(segment ids \d+\)$",
        ),
        (
            "panoptic_val2017.json",
            lambda d: d["images"][1].update(id=d["images"][0]["id"]),
            r"panoptic_val2017\.json: duplicates .*: image ids used by more than one entry of "
            r"'images': \d+$",
        ),
        (
            "instances_val2017.json",
            lambda d: d["annotations"][1].update(id=d["annotations"][0]["id"]),
            r"instances_val2017\.json: duplicates .*: annotation ids used by more than one "
            r"instance: \d+$",
        ),
    ],
)
def test_duplicates_are_refused_naming_file_and_ids(root, tmp_path, name, edit, message):
    path = root / "coco" / "annotations" / name
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    inputs = _digests(root)
    dest = tmp_path / "out"
    with pytest.raises(DataError, match=message):
        _run(root, dest, "--val")
    assert not dest.exists() and _digests(root) == inputs
