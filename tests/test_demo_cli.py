"""The demo command (instaformer.apps.demo, demo/demo.py) end to end on the tiny od model;
inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_demo_predictor import LOW_THRESHOLDS, OD_CONFIG, make_scene

from instaformer.apps import demo
from instaformer.apps.demo_utils import expand_inputs


def test_demo_writes_pictures_and_json_and_reports_bad_input(tmp_path, caplog):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, size in enumerate([(64, 96), (80, 64)]):
        Image.fromarray(make_scene(*size)[0]).save(inputs / f"scene{i}.png")
    (inputs / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    out = tmp_path / "out" / "nested"
    argv = ["--config-file", str(OD_CONFIG), "--input", str(inputs), "--output", str(out)]
    argv += ["--confidence-threshold", "0.0", "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0"]
    code = demo.main(argv)
    assert code == 1
    assert "corrupt.jpg" in caplog.text
    for stem, size in (("scene0", (64, 96)), ("scene1", (80, 64))):
        for picture in ("panoptic", "occlusion", "depth"):
            written = np.asarray(Image.open(out / f"{stem}_{picture}.png"))
            factor = -(-256 // min(size))  # small images are drawn enlarged (whole factor)
            assert written.shape[1] == factor * size[1] and written.shape[0] >= factor * size[0]
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["image_size"] == list(size)
        assert record["input"].endswith(f"{stem}.png")
        k = len(record["segments"])
        assert k >= 2, "the random-init od model should find several things in the scene"
        assert all(s["isthing"] for s in record["segments"])
        for task in ("occlusion", "depth"):
            matrix = np.array(record[task])
            assert matrix.shape == (k, k) and (np.diag(matrix) == -1).all()
        assert np.array(record["occlusion_prob"]).shape == (k, k)
        assert np.array(record["depth_prob"]).shape == (k, k, 3)
        assert sorted(record["depth_ranking"]) == list(range(k))
    assert not list(out.glob("corrupt*"))


def test_demo_exit_zero_on_good_inputs(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(make_scene(64, 64)[0]).save(path)
    argv = ["--config-file", str(OD_CONFIG), "--input", str(path), "--output", str(tmp_path / "o")]
    argv += ["--opts", *LOW_THRESHOLDS]
    assert demo.main(argv) == 0
    assert (tmp_path / "o" / "a_panoptic.png").is_file()
    assert json.loads((tmp_path / "o" / "a.json").read_text())["depth"] is not None


def test_demo_rejects_unknown_override(tmp_path):
    argv = ["--config-file", str(OD_CONFIG), "--input", "x.png"]
    argv += ["--output", str(tmp_path), "MODEL.NOT_A_KEY", "1"]
    with pytest.raises(SystemExit):
        demo.main(argv)


def test_expand_inputs(tmp_path):
    for name in ("b.png", "a.jpg", "notes.md"):
        (tmp_path / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# images\na.jpg\n\nmissing.png\n")
    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / "a.jpg"), str(tmp_path / "b.png")]
    assert expand_inputs([str(tmp_path / "*.png"), str(tmp_path / "b.png")]) == [
        str(tmp_path / "b.png")
    ]
    assert expand_inputs([str(listing)]) == [str(tmp_path / "a.jpg"), str(tmp_path / "missing.png")]
    with pytest.raises(ValueError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.gif")])
