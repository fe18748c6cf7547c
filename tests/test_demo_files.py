"""The demo's files: no input or foreign file ever replaced, earlier outputs never taken as
inputs, atomic writes, nothing outside --output, one failed image does not stop the batch, and
video sources that give no frame are refused."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import cv2
import pytest
import torch
from PIL import Image
from test_demo_predictor import OD_CONFIG, SceneModel, make_scene, tiny_cfg

from instaformer.apps import demo
from instaformer.apps.demo_utils import (
    DemoInputError,
    expand_inputs,
    is_demo_output,
    plan_stems,
    run_on_paths,
    run_on_video,
    video_output_path,
)
from instaformer.predictor import Predictor
from mask2former.utils.outputs import RECORD_NAME

PICTURES = ["panoptic", "occlusion", "depth"]


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (and link target) under ``root``."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(root))] = f"link to {path.readlink()}"
        elif path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _save(path: Path, size=(48, 64), n: int = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_scene(*size, n=n)[0]).save(path)


def _stand_in(model=None) -> Predictor:
    image, panoptic, infos = make_scene(48, 64)
    return Predictor(tiny_cfg(), model=model or SceneModel(panoptic, infos))


class FailingModel(SceneModel):
    """The scene model, failing with ``error`` on images ``height`` pixels high."""

    def __init__(self, error: BaseException, height: int):
        image, panoptic, infos = make_scene(48, 64)
        super().__init__(panoptic, infos)
        self.error, self.height = error, height

    def forward(self, batched_inputs, results=None):
        if any(x["height"] == self.height for x in batched_inputs):
            raise self.error
        return super().forward(batched_inputs, results)


def test_input_and_output_folder_the_same_twice(tmp_path, caplog):
    folder = tmp_path / "photos"
    _save(folder / "photo.jpg")
    _save(folder / "photo_depth.png", n=2)  # named like an output of photo.jpg
    (tmp_path / "elsewhere.txt").write_text("keep")
    inputs = _tree(folder)
    outside = {k: v for k, v in _tree(tmp_path).items() if not k.startswith("photos/")}
    argv = ["--config-file", str(OD_CONFIG), "--input", str(folder), "--output", str(folder)]
    argv += ["--confidence-threshold", "0.0", "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0"]
    with caplog.at_level(logging.INFO):
        assert demo.main(argv) == 0
    after_first = _tree(folder)
    for name, digest in inputs.items():
        assert after_first[name] == digest, f"input {name} was modified"
    # photo.jpg's outputs would replace photo_depth.png: its stem gets a suffix
    expected = {f"photo_1_{p}.png" for p in PICTURES} | {"photo_1.json"}
    expected |= {f"photo_depth_{p}.png" for p in PICTURES} | {"photo_depth.json"}
    assert set(after_first) == set(inputs) | expected
    assert json.loads((folder / "photo_1.json").read_text())["input"].endswith("photo.jpg")
    assert "wrote 8 file(s) for 2 of 2 image(s)" in caplog.text
    assert all(is_demo_output(folder / name) for name in expected)
    assert not is_demo_output(folder / "photo_depth.png")

    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert demo.main(argv) == 0  # the earlier outputs are not new inputs
    assert "skipped 6 earlier output(s)" in caplog.text  # the PNGs; JSON is no image
    assert "wrote 8 file(s) for 2 of 2 image(s)" in caplog.text
    after_second = _tree(folder)
    assert set(after_second) == set(after_first)
    for name, digest in inputs.items():
        assert after_second[name] == digest
    assert {k: v for k, v in _tree(tmp_path).items() if not k.startswith("photos/")} == outside


def test_duplicate_stems_never_collide(tmp_path):
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", tmp_path / "c" / "x_1.jpg"]
    paths.append(tmp_path / "d" / "X.png")  # same name on a case-insensitive file system
    for i, path in enumerate(paths):
        _save(path, size=(40 + 8 * i, 64))
    out = tmp_path / "out"
    stems = plan_stems([str(p) for p in paths], out, PICTURES)
    assert stems == ["x", "x_2", "x_1", "X_3"]
    report = run_on_paths(_stand_in(), [str(p) for p in paths], out, progress=False)
    assert report.ok and report.num_files == 16 == len(list(out.iterdir()))
    for path, stem in zip(paths, stems, strict=True):
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["input"] == str(path) and record["producer"] == "instaformer-demo"
        assert report.written[str(path)][-1] == out / f"{stem}.json"


def test_foreign_files_and_links_in_the_output_are_kept(tmp_path):
    _save(tmp_path / "in" / "x.jpg")
    _save(tmp_path / "in" / "y.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.json").write_text('{"mine": true}')  # a user's file
    secret = tmp_path / "secret.json"
    secret.write_text("outside")
    (out / "y_depth.png").symlink_to(secret)  # a link to a file outside the folder
    before = _tree(tmp_path)
    paths = [str(tmp_path / "in" / "x.jpg"), str(tmp_path / "in" / "y.jpg")]
    report = run_on_paths(_stand_in(), paths, out, progress=False)
    assert report.ok
    after = _tree(tmp_path)
    for name in ("in/x.jpg", "in/y.jpg", "out/x.json", "out/y_depth.png", "secret.json"):
        assert after[name] == before[name]
    assert (out / "x_1.json").is_file() and (out / "y_1_depth.png").is_file()
    assert not list(out.glob(".*"))  # no temporary file left


def test_one_failed_image_does_not_stop_the_batch(tmp_path, caplog):
    for name, height in (("a.png", 48), ("b.png", 40), ("c.png", 56)):
        _save(tmp_path / "in" / name, size=(height, 64))
    (tmp_path / "in" / "d.png").write_bytes(b"\x89PNG broken")
    paths = [str(p) for p in sorted((tmp_path / "in").iterdir())]
    for error, reason in (
        (MemoryError(), "MemoryError"),
        (torch.OutOfMemoryError("CUDA out of memory"), "OutOfMemoryError: CUDA out of memory"),
    ):
        out = tmp_path / reason.split(":")[0]
        caplog.clear()
        report = run_on_paths(_stand_in(FailingModel(error, 40)), paths, out, progress=False)
        assert set(report.failed) == {paths[1], paths[3]}
        assert report.failed[paths[1]] == reason
        assert "d.png" in report.failed[paths[3]]
        assert f"failed input {paths[1]}: {reason}" in caplog.text
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [f"{s}_{p}.png" for s in "ac" for p in PICTURES] + ["a.json", "c.json"]
        )


def test_demo_exit_code_one_after_a_model_error(tmp_path, monkeypatch, caplog):
    _save(tmp_path / "a.png", size=(40, 64))
    _save(tmp_path / "b.png", size=(48, 64))

    def predictor(cfg, **options):
        return Predictor(cfg, model=FailingModel(RuntimeError("boom"), 40), **options)

    monkeypatch.setattr(demo, "Predictor", predictor)
    argv = ["--config-file", str(OD_CONFIG), "--input", str(tmp_path / "*.png")]
    argv += ["--output", str(tmp_path / "out")]
    with caplog.at_level(logging.INFO):
        assert demo.main(argv) == 1
    assert "wrote 4 file(s) for 1 of 2 image(s)" in caplog.text
    assert "1 image(s) failed: " + str(tmp_path / "a.png") in caplog.text
    assert (tmp_path / "out" / "b.json").is_file() and not (tmp_path / "out" / "a.json").exists()


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    _save(tmp_path / "a.png")
    out = tmp_path / "out"
    original, calls = Image.Image.save, []

    def full_disk(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 2:  # the second picture: the disk fills up half-way
            fp.write(b"partial")
            raise OSError(28, "No space left on device")
        return original(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    report = run_on_paths(_stand_in(), [str(tmp_path / "a.png")], out, progress=False)
    assert "No space left on device" in report.failed[str(tmp_path / "a.png")]
    assert report.written[str(tmp_path / "a.png")] == [out / "a_panoptic.png"]
    assert [p.name for p in out.iterdir()] == ["a_panoptic.png"]  # no temporary file left


def test_expand_inputs_skips_only_demo_outputs(tmp_path):
    _save(tmp_path / "a.png")
    run_on_paths(_stand_in(), [str(tmp_path / "a.png")], tmp_path, progress=False)
    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / "a.png")]
    assert expand_inputs([str(tmp_path / "*.png")]) == [str(tmp_path / "a.png")]
    named = str(tmp_path / "a_depth.png")
    assert expand_inputs([named]) == [named]  # named explicitly: taken
    (tmp_path / "a.png").unlink()
    with pytest.raises(DemoInputError, match="holds only earlier outputs"):
        expand_inputs([str(tmp_path)])


def _write_video(path: Path, frames: int = 2) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    for _ in range(frames):
        writer.write(make_scene(48, 64)[0][:, :, ::-1])
    writer.release()


def test_video_sources_without_frames_are_refused(tmp_path, monkeypatch):
    predictor = _stand_in()
    out = tmp_path / "out"
    (tmp_path / "notes.mp4").write_text("not a video")
    _save(tmp_path / "still.png")
    _write_video(tmp_path / "clip.mp4")
    (tmp_path / "cut.mp4").write_bytes((tmp_path / "clip.mp4").read_bytes()[:48])
    for name, message in (
        ("notes.mp4", "cannot open video .*notes.mp4"),
        ("still.png", "still.png is an image, not a video"),
        ("cut.mp4", "video .*cut.mp4"),
    ):
        source = str(tmp_path / name)
        with pytest.raises(DemoInputError, match=message):
            run_on_video(predictor, source, video_output_path(out, source))
    assert not out.exists() or not list(out.iterdir())

    assert run_on_video(predictor, str(tmp_path / "clip.mp4"), out / "clip_orders.mp4") == 2
    assert sorted(p.name for p in out.iterdir()) == [RECORD_NAME, "clip_orders.mp4"]
    capture = cv2.VideoCapture(str(out / "clip_orders.mp4"))
    assert capture.read()[0]
    capture.release()
    # the output name never designates the input video itself (here through a link)
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "clip_orders.mp4").symlink_to(tmp_path / "clip.mp4")
    chosen = video_output_path(tmp_path / "links", str(tmp_path / "clip.mp4"))
    assert chosen == tmp_path / "links" / "clip_orders_1.mp4"

    class Camera:
        def __init__(self, opened: bool):
            self.opened = opened

        def __call__(self, index):
            return self

        def isOpened(self):
            return self.opened

        def read(self):
            return False, None

        def get(self, prop):
            return 0.0

        def release(self):
            pass

    for opened, message in ((False, "cannot open camera 0"), (True, "no frame .*camera 0")):
        monkeypatch.setattr(cv2, "VideoCapture", Camera(opened))
        with pytest.raises(DemoInputError, match=message):
            run_on_video(predictor, 0, video_output_path(out, 0))
    assert sorted(p.name for p in out.iterdir()) == [RECORD_NAME, "clip_orders.mp4"]


def test_demo_video_input_that_is_not_a_video_fails(tmp_path):
    (tmp_path / "clip.mp4").write_text("text")
    argv = ["--config-file", str(OD_CONFIG), "--video-input", str(tmp_path / "clip.mp4")]
    argv += ["--output", str(tmp_path / "out")]
    with pytest.raises(DemoInputError, match="clip.mp4"):
        demo.main(argv)
    assert not (tmp_path / "out" / "clip_orders.mp4").exists()
