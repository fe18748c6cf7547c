"""Writes and lost data: every tool that writes follows mask2former/utils/outputs.py.

One test per case of docs/reliability.md ("Writes and lost data"): the input, the message, and
the files left as they were (SHA-256 of every file before and after).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scripts import load_script

from instaformer.data.example import EXAMPLE_CATEGORIES
from instaformer.errors import run_cli
from mask2former.utils.outputs import RECORD_NAME

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "synthetic" / "maskformer2_R50_tiny.yaml")
TINY_OD = str(REPO / "configs" / "synthetic" / "instaformer_od_tiny.yaml")


def _digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file (and the target of every link) under ``folder``."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _simple_dataset(root: Path, file_name: str = "a.png", mask_dir: str = "masks") -> Path:
    """One 8x8 PNG image ``root/images/a.png``, its id mask ``root/<mask_dir>/a.png`` and the
    split file ``root/split.json`` in the simple format, naming the image ``file_name``."""
    (root / "images").mkdir(parents=True)
    (root / mask_dir).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(root / "images" / "a.png")
    ids = np.zeros((8, 8), np.uint8)
    ids[:, :4], ids[:2, 4:], ids[4:, 4:] = 1, 2, 3
    Image.fromarray(ids).save(root / mask_dir / "a.png")
    image = {
        "file_name": file_name,
        "mask_file": f"{mask_dir}/a.png",
        "instances": [
            {"category_id": 200, "mask_id": 1},
            {"category_id": 101, "mask_id": 2},
            {"category_id": 102, "mask_id": 3},
        ],
        "occlusion": [[1, 2]],
    }
    source = root / "split.json"
    source.write_text(json.dumps({"categories": EXAMPLE_CATEGORIES, "images": [image]}))
    return source


def _convert(capsys, source: Path, image_root: Path, out_json: Path, out_panoptic: Path):
    tool = load_script("tools/convert_to_instaorder.py")
    code = tool.main(
        [
            "convert",
            str(source),
            "--image-root",
            str(image_root),
            "--out-json",
            str(out_json),
            "--out-panoptic",
            str(out_panoptic),
        ]
    )
    return code, capsys.readouterr().err


# --- the converter -------------------------------------------------------------------------


def test_convert_out_json_equal_to_the_input_is_refused(tmp_path, capsys):
    source = _simple_dataset(tmp_path)
    before = _digests(tmp_path)
    code, err = _convert(capsys, source, tmp_path / "images", source, tmp_path / "pan")
    assert code == 1
    assert f"output {source} is the order annotation file {source}, an input of this run" in err
    assert "choose another --out-json" in err
    assert _digests(tmp_path) == before  # no PNG either: names are checked before any write


@pytest.mark.parametrize(
    ("out", "message"),
    [("images", r"is the image folder \(--image-root\)"), ("masks", r"is a folder of mask files")],
)
def test_convert_out_panoptic_on_the_image_or_mask_folder_is_refused(
    tmp_path, capsys, out, message
):
    source = _simple_dataset(tmp_path)
    before = _digests(tmp_path)
    code, err = _convert(capsys, source, tmp_path / "images", tmp_path / "o.json", tmp_path / out)
    assert code == 1 and f"--out-panoptic {tmp_path / out} " in err
    assert re.search(message, err), err
    assert _digests(tmp_path) == before


def test_convert_absolute_file_name_is_refused_naming_the_record(tmp_path, capsys):
    image = tmp_path / "images" / "a.png"
    source = _simple_dataset(tmp_path, file_name=str(image))  # its PNG would replace the image
    before = _digests(tmp_path)
    code, err = _convert(capsys, source, tmp_path / "images", tmp_path / "o.json", tmp_path / "p")
    assert code == 1
    assert f"image 0 ('{image}'): file name '{image}' is absolute" in err
    assert _digests(tmp_path) == before


def test_convert_dot_dot_file_name_writes_nothing_outside_the_folder(tmp_path, capsys):
    source = _simple_dataset(tmp_path / "data", file_name="../images/a.png")
    out = tmp_path / "out"
    (out / "panoptic").mkdir(parents=True)  # its PNG would go to out/images/a.png
    before = _digests(tmp_path)
    code, err = _convert(
        capsys, source, tmp_path / "data" / "images", out / "o.json", out / "panoptic"
    )
    assert code == 1 and "file name '../images/a.png' contains '..'" in err
    assert _digests(tmp_path) == before


def test_convert_replaces_only_its_own_files(tmp_path, capsys):
    source = _simple_dataset(tmp_path)
    pan, out_json = tmp_path / "pan", tmp_path / "o.json"
    assert _convert(capsys, source, tmp_path / "images", out_json, pan)[0] == 0
    assert _convert(capsys, source, tmp_path / "images", out_json, pan)[0] == 0  # its own: ok
    (pan / "a.png").write_bytes(b"edited by the user since")
    (tmp_path / "theirs.json").write_text("{}")
    before = _digests(tmp_path)
    code, err = _convert(capsys, source, tmp_path / "images", out_json, pan)
    assert code == 1 and f"{pan / 'a.png'} was changed since convert wrote it" in err
    code, err = _convert(capsys, source, tmp_path / "images", tmp_path / "theirs.json", pan)
    assert code == 1 and f"{tmp_path / 'theirs.json'} exists and is a file that convert" in err
    assert _digests(tmp_path) == before


# --- the preparation script ----------------------------------------------------------------


def test_prepare_keeps_a_file_it_did_not_write(tmp_path):
    from instaformer.data import make_synthetic_dataset
    from mask2former.utils.outputs import OutputError

    prepare = load_script("datasets/prepare_instaorder_panoptic.py")
    root = tmp_path / "data"
    make_synthetic_dataset(str(root), num_train=0, num_val=2, image_size=64, seed=3)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "InstaOrderPanoptic_val2017.json").write_text('{"downloaded": true}')
    before = _digests(tmp_path)
    with pytest.raises(OutputError, match=r"val2017\.json exists and is a file that prepare"):
        prepare.main(["--val", "--root", str(root), "--dest-dir", str(dest), "--no-progress"])
    assert _digests(tmp_path) == before


# --- the quick start ------------------------------------------------------------------------


def test_quickstart_keeps_a_dataset_folder_it_did_not_write(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "unused"))  # restored afterwards
    theirs = tmp_path / "q" / "datasets" / "synthetic_instaorder"
    theirs.mkdir(parents=True)
    (theirs / "my_notes.txt").write_text("months of work")
    before = _digests(tmp_path)
    argv = ["--output-dir", str(tmp_path / "q"), "--num-train", "2", "--num-val", "1"]
    argv += ["--image-size", "32", "--demo-images", "1", "SOLVER.MAX_ITER", "1"]
    code = load_script("tools/quickstart.py").main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert f"{theirs} exists and was not written by the quick start" in err
    assert _digests(tmp_path) == before


# --- check_dataset --pictures ---------------------------------------------------------------


def test_check_dataset_pictures_keep_a_file_they_did_not_write(
    synthetic_datasets, tmp_path, monkeypatch, capsys
):
    from mask2former.data.catalog import DatasetCatalog

    monkeypatch.setenv("DETECTRON2_DATASETS", str(synthetic_datasets))
    first = DatasetCatalog.get("synthetic_instaorder_val")[0]["file_name"]
    theirs = tmp_path / "synthetic_instaorder_val" / f"{Path(first).stem}_panoptic.png"
    theirs.parent.mkdir()
    theirs.write_bytes(b"a picture of the user's")
    before = _digests(tmp_path)
    tool = load_script("tools/check_dataset.py")
    argv = ["--datasets", "synthetic_instaorder_val", "--pictures", "1"]
    code = tool.main([*argv, "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and f"{theirs} exists and is a file that check_dataset did not write" in err
    assert _digests(tmp_path) == before


# --- the demo --------------------------------------------------------------------------------


class _NeverCalled:
    """A predictor stand-in: the refused run must not predict anything."""

    tasks = ("occlusion", "depth")

    def __call__(self, image):
        raise AssertionError("the refused run predicted")


def test_two_demo_runs_into_one_folder_the_second_is_refused(tmp_path):
    from instaformer.apps.demo_utils import run_on_paths
    from mask2former.engine.lock import RunLockError

    out = tmp_path / "out"
    out.mkdir()
    (out / "a_panoptic.png").write_bytes(b"the first run's picture")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    holder = textwrap.dedent(
        """
        import sys, time
        from mask2former.engine.lock import RunLock
        RunLock(sys.argv[1]).acquire()
        print("held", flush=True)
        time.sleep(120)
        """
    )
    first = subprocess.Popen(
        [sys.executable, "-c", holder, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "held"
        before = _digests(tmp_path)
        with pytest.raises(RunLockError, match=rf"in use by a running process \(pid {first.pid}"):
            run_on_paths(_NeverCalled(), [str(tmp_path / "a.png")], out, progress=False)
        assert _digests(tmp_path) == before
    finally:
        first.kill()
        first.wait()


def test_demo_empty_output_is_refused(tmp_path, monkeypatch, capsys):
    from instaformer.apps.demo import main

    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.jpg")
    before = _digests(tmp_path)
    argv = ["--config-file", TINY_OD, "--input", "a.jpg", "--output", "", "MODEL.DEVICE", "cpu"]
    assert run_cli(main, argv, "instaformer-demo") == 2
    err = capsys.readouterr().err
    assert "instaformer-demo: error: --output is empty: name the output folder" in err
    assert _digests(tmp_path) == before


# --- export -----------------------------------------------------------------------------------


def test_export_keeps_a_file_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "network.pt2").write_bytes(b"last week's export, by hand")
    before = _digests(tmp_path)
    tool = load_script("tools/export_model.py")
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--config-file", TINY_OD, "--output", str(out), "MODEL.DEVICE", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{out / 'network.pt2'} exists and is a file that export did not write" in err
    assert _digests(tmp_path) == before


# --- training ------------------------------------------------------------------------------


def _train_cli(*argv: str) -> int:
    from instaformer.train import parse_args, run

    overrides = ["SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "SOLVER.MAX_ITER", "1"]
    overrides += ["MODEL.DEVICE", "cpu"]
    return run_cli(lambda a: run(parse_args(a)), [*argv, *overrides], "instaformer-train")


@pytest.fixture(scope="module")
def trained(synthetic_datasets, tmp_path_factory) -> Path:
    """A run folder of one training iteration of the tiny config (no evaluation)."""
    folder = tmp_path_factory.mktemp("run")
    env = os.environ.get("DETECTRON2_DATASETS")
    os.environ["DETECTRON2_DATASETS"] = str(synthetic_datasets)
    try:
        argv = ["--config-file", TINY, "OUTPUT_DIR", str(folder), "DATASETS.TEST", "[]"]
        assert _train_cli(*argv) == 0
    finally:
        if env is None:
            del os.environ["DETECTRON2_DATASETS"]
        else:
            os.environ["DETECTRON2_DATASETS"] = env
    return folder


@pytest.fixture()
def _datasets(synthetic_datasets, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(synthetic_datasets))


@pytest.mark.usefixtures("_datasets")
def test_empty_output_dir_is_refused_naming_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model_final.pth").write_bytes(b"a model of the user's")
    (tmp_path / "metrics.json").write_text('{"iteration": 89999}\n')
    before = _digests(tmp_path)
    assert _train_cli("--config-file", TINY, "OUTPUT_DIR", "", "DATASETS.TEST", "[]") == 2
    err = capsys.readouterr().err
    assert "instaformer-train: error: OUTPUT_DIR is empty: name the output folder" in err
    assert _digests(tmp_path) == before


@pytest.mark.usefixtures("_datasets")
def test_weights_that_the_run_would_replace_are_refused(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = _digests(tmp_path)
    weights = str(run / "model_final.pth")
    argv = ["--config-file", TINY, "OUTPUT_DIR", str(run), "MODEL.WEIGHTS", weights]
    assert _train_cli(*argv, "DATASETS.TEST", "[]") == 2
    err = capsys.readouterr().err
    assert f"MODEL.WEIGHTS {weights} is a checkpoint in OUTPUT_DIR {run} that this" in err
    assert _digests(tmp_path) == before


@pytest.mark.usefixtures("_datasets")
def test_eval_only_keeps_the_training_config(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    config = (run / "config.yaml").read_bytes()
    weights = str(run / "model_final.pth")
    argv = ["--config-file", TINY, "--eval-only", "OUTPUT_DIR", str(run), "MODEL.WEIGHTS"]
    assert _train_cli(*argv, weights, "SEED", "7") == 0
    assert (run / "config.yaml").read_bytes() == config
    assert "SEED: 7" in (run / "config_eval.yaml").read_text()
    assert (run / "model_final.pth").read_bytes() == (trained / "model_final.pth").read_bytes()


# --- the synthetic twin and the example ------------------------------------------------------


def _make_synthetic(capsys, *argv: str) -> tuple[int, str]:
    cli = load_script("tools/make_synthetic_dataset.py")
    code = cli.main([*argv, "--num-train", "0", "--num-val", "2", "--image-size", "32"])
    return code, capsys.readouterr().err


def test_synthetic_dataset_keeps_a_file_it_did_not_write(tmp_path, capsys):
    root = tmp_path / "data"
    theirs = root / "coco" / "annotations" / "instances_val2017.json"
    theirs.parent.mkdir(parents=True)
    theirs.write_text('{"info": "the real COCO val2017 instances"}')
    before = _digests(tmp_path)
    code, err = _make_synthetic(capsys, "--root", str(root))
    assert code == 2
    assert (
        f"make_synthetic_dataset: error: {theirs} exists and is a file that "
        "make_synthetic_dataset did not write" in err
    )
    assert _digests(tmp_path) == before  # no image either: every name is checked first


def test_synthetic_dataset_replaces_only_its_own_unchanged_files(tmp_path):
    from instaformer.data import make_synthetic_dataset
    from mask2former.utils.outputs import OutputError

    root = tmp_path / "data"
    make_synthetic_dataset(str(root), num_train=0, num_val=2, image_size=32, seed=1)
    first = _digests(root)
    make_synthetic_dataset(str(root), num_train=0, num_val=2, image_size=32, seed=1)  # its own
    assert {k: v for k, v in _digests(root).items() if k != RECORD_NAME} == {
        k: v for k, v in first.items() if k != RECORD_NAME
    }
    image = next((root / "coco" / "val2017").iterdir())
    image.write_bytes(b"retouched by the user since")
    before = _digests(tmp_path)
    with pytest.raises(OutputError, match=f"{image} was changed since make_synthetic_dataset"):
        make_synthetic_dataset(str(root), num_train=0, num_val=2, image_size=32, seed=1)
    assert _digests(tmp_path) == before


def test_synthetic_dataset_empty_root_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("the current folder")
    before = _digests(tmp_path)
    code, err = _make_synthetic(capsys, "--root", "")
    assert code == 2
    assert "make_synthetic_dataset: error: --root is empty: name the output folder" in err
    assert _digests(tmp_path) == before


def test_example_keeps_a_file_it_did_not_write(tmp_path, capsys):
    root = tmp_path / "shapes"
    root.mkdir()
    (root / "val.json").write_text('{"images": "annotated by hand, two weeks of work"}')
    before = _digests(tmp_path)
    tool = load_script("tools/convert_to_instaorder.py")
    argv = ["example", str(root), "--num-train", "0", "--num-val", "2", "--image-size", "32"]
    assert tool.main(argv) == 1
    err = capsys.readouterr().err
    assert f"error: {root / 'val.json'} exists and is a file that example did not write" in err
    assert _digests(tmp_path) == before  # and no temporary twin left behind
    assert sorted(p.name for p in root.iterdir()) == ["val.json"]


# --- the GPU check ---------------------------------------------------------------------------


def _gpu_check(capsys, monkeypatch, output_dir: str) -> tuple[int, str]:
    monkeypatch.syspath_prepend(str(REPO / "tools"))  # it imports tools/benchmark.py
    tool = load_script("tools/gpu_check.py")
    code = tool.main(["--output-dir", output_dir, "--dry-run", "--steps", "ops_cuda"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("theirs", "message"),
    [
        ("gpu_check.json", "{path} exists and is a file that gpu_check did not write"),
        ("work/train_net/train/model_final.pth", "{out}/work exists, and {out} has no "),
    ],
)
def test_gpu_check_keeps_files_it_did_not_write(tmp_path, capsys, monkeypatch, theirs, message):
    out = tmp_path / "out"
    (out / theirs).parent.mkdir(parents=True, exist_ok=True)
    (out / theirs).write_bytes(b"a file of the user's")
    before = _digests(tmp_path)
    code, err = _gpu_check(capsys, monkeypatch, str(out))
    assert code == 2
    assert "gpu_check: error: " + message.format(path=out / theirs, out=out) in err
    assert _digests(tmp_path) == before


def test_gpu_check_writes_again_into_its_own_folder(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert _gpu_check(capsys, monkeypatch, str(out))[0] == 0
    assert _gpu_check(capsys, monkeypatch, str(out))[0] == 0
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["steps"]["ops_cuda"]["status"] == "skipped"


def test_gpu_check_empty_output_dir_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("the current folder")
    before = _digests(tmp_path)
    code, err = _gpu_check(capsys, monkeypatch, "")
    assert code == 2 and "gpu_check: error: --output-dir is empty: name the output folder" in err
    assert _digests(tmp_path) == before


def test_gpu_check_script_keeps_an_install_log_it_did_not_write(tmp_path):
    out, wheels = tmp_path / "out", tmp_path / "wheels"
    out.mkdir()
    wheels.mkdir()
    (out / "install.log").write_text("my notes of the cluster's install")
    before = _digests(tmp_path)
    result = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu_check.sh"), str(out), "--wheels", str(wheels)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert f"gpu_check: error: {out}/install.log exists, and {out} has no gpu_check.json" in (
        result.stderr
    )
    assert _digests(tmp_path) == before


# --- evaluators (inside OUTPUT_DIR, which the run holds) ---------------------------------------


def _panoptic_gt(tmp_path: Path, file_name: str, gt_folder: Path) -> Path:
    """A panoptic ground truth of one 4x4 image (two segments) at ``tmp_path/gt/a.png`` whose
    annotation names it ``file_name`` (relative to ``gt_folder``); returns the JSON."""
    from mask2former.structures import id2rgb

    (tmp_path / "gt").mkdir()
    gt_folder.mkdir(parents=True, exist_ok=True)  # may be tmp_path/gt itself
    ids = np.ones((4, 4), np.int64)
    ids[:, 2:] = 2
    Image.fromarray(id2rgb(ids)).save(tmp_path / "gt" / "a.png")
    segments = [
        {"id": i, "category_id": i, "iscrowd": 0, "area": 8, "bbox": [0, 0, 2, 4]} for i in (1, 2)
    ]
    gt = {
        "categories": [
            {"id": 1, "name": "blob", "isthing": 1},
            {"id": 2, "name": "backdrop", "isthing": 0},
        ],
        "images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
        "annotations": [{"image_id": 1, "file_name": file_name, "segments_info": segments}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


@pytest.mark.parametrize(
    ("name", "message"),
    [("{gt}/a.png", "is absolute"), ("../../gt/a.png", "contains '..'")],
)
def test_panoptic_predictions_never_replace_the_ground_truth(tmp_path, name, message):
    from mask2former.evaluation import COCOPanopticEvaluator
    from mask2former.utils.outputs import OutputError

    gt_folder = tmp_path / "panoptic" / "val"
    file_name = name.format(gt=tmp_path / "gt")  # both read tmp_path/gt/a.png
    gt_json = _panoptic_gt(tmp_path, file_name, gt_folder)
    run = tmp_path / "run"  # its prediction PNG would be tmp_path/gt/a.png
    run.mkdir()
    before = _digests(tmp_path)
    with pytest.raises(OutputError, match=rf"gt\.json, image_id 1: file name '.*' {message}"):
        evaluator = COCOPanopticEvaluator(
            output_dir=str(run), gt_json=str(gt_json), gt_folder=str(gt_folder), distributed=False
        )
        prediction = (torch.zeros(4, 4, dtype=torch.int32), [])
        evaluator.process([{"image_id": 1}], [{"panoptic_seg": prediction}])
    assert _digests(tmp_path) == before


@pytest.mark.parametrize("kind", ["panoptic", "instance"])
def test_evaluator_failing_while_writing_keeps_the_previous_predictions(
    tmp_path, monkeypatch, kind
):
    from mask2former.evaluation import COCOInstanceEvaluator, COCOPanopticEvaluator

    gt_json = _panoptic_gt(tmp_path, "a.png", tmp_path / "gt")
    gt_folder = tmp_path / "gt"
    run = tmp_path / "run"
    run.mkdir()
    name = {"panoptic": "panoptic_predictions.json", "instance": "instances_predictions.json"}
    (run / name[kind]).write_text('{"annotations": ["the last evaluation"]}')
    build = {"panoptic": COCOPanopticEvaluator, "instance": COCOInstanceEvaluator}[kind]
    evaluator = build(
        output_dir=str(run), gt_json=str(gt_json), gt_folder=str(gt_folder), distributed=False
    )
    before = _digests(tmp_path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", disk_full)
    monkeypatch.setattr(json, "dumps", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        evaluator.evaluate()
    monkeypatch.undo()
    assert _digests(tmp_path) == before


# --- training's further outputs, the download cache --------------------------------------------


def test_wandb_files_go_into_the_output_folder(tmp_path, monkeypatch):
    import types

    from instaformer.train import load_config, metric_sinks
    from mask2former.engine import default_argument_parser

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    calls: list[dict] = []
    monkeypatch.setitem(
        sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: calls.append(kw) or "run")
    )
    argv = ["--config-file", TINY, "OUTPUT_DIR", "run", "WANDB.METRICS", "True"]
    assert metric_sinks(load_config(default_argument_parser().parse_args(argv))) == ["run"]
    assert calls[0].get("dir") == str(tmp_path / "run")  # not ./wandb in the current folder


def test_download_is_on_disk_before_it_takes_its_final_name(tmp_path, monkeypatch):
    from local_server import LocalServer

    from mask2former.utils import download

    monkeypatch.setenv("INSTAFORMER_CACHE", str(tmp_path / "cache"))
    synced: list[tuple[str, bool]] = []
    fsync = os.fsync

    def spy(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((os.path.basename(path), os.path.exists(download.cache_path(url))))
        fsync(fd)

    with LocalServer({"/w/model.pth": b"weights" * 1000}) as server:
        url = server.url("/w/model.pth")
        monkeypatch.setattr(os, "fsync", spy)
        path = download.download(url, progress=False)
    assert path.read_bytes() == b"weights" * 1000
    assert (path.name, False) in synced  # flushed under its temporary name, before the rename


# --- permissions -----------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_respect_the_umask(tmp_path, umask):
    from instaformer.evaluation.results import write_results
    from mask2former.engine.checkpoint import save_training_checkpoint
    from mask2former.engine.lock import RunLock
    from mask2former.utils.atomic import atomic_write_bytes

    previous = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "config.yaml", b"SEED: 1\n")
        save_training_checkpoint(str(tmp_path), "model_final", {"w": torch.zeros(2)})
        write_results({"occlusion_order": {"f1": 90.0}}, str(tmp_path))
        with RunLock(str(tmp_path / "shared")) as lock:
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
            modes[".run.lock"] = stat.S_IMODE(os.stat(lock.path).st_mode)
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    names = ["config.yaml", "model_final.pth", "last_checkpoint", "eval_results.json"]
    assert {n: oct(modes[n]) for n in [*names, ".run.lock"]} == {
        n: oct(expected) for n in [*names, ".run.lock"]
    }


# --- the rule itself ---------------------------------------------------------------------------


def test_output_folder_rules(tmp_path):
    from mask2former.utils.outputs import RECORD_NAME, OutputError, OutputFolder

    out = tmp_path / "out"
    with OutputFolder(out, what="--out", tool="t") as folder:
        folder.write_bytes("sub/x.bin", b"1")
        for name, message in [
            ("/etc/passwd", "is absolute"),
            ("a/../../x", "contains '..'"),
            ("", "is not a file name"),
        ]:
            with pytest.raises(OutputError, match=message):
                folder.target(name, where="record 3")
        (out / "link").symlink_to(tmp_path)
        with pytest.raises(OutputError, match="its folder leads outside --out"):
            folder.target("link/y.bin")
        source = tmp_path / "input.bin"
        source.write_bytes(b"input")
        (out / "hard.bin").hardlink_to(source)
        folder.protect([source], "the input file")
        with pytest.raises(OutputError, match=r"hard\.bin is the input file .*input\.bin, an"):
            folder.target("hard.bin")
    with OutputFolder(out, what="--out", tool="other") as folder:
        with pytest.raises(OutputError, match="is a file that other did not write"):
            folder.target("sub/x.bin")
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, symlinks=True)  # new modification times, same contents
    os.utime(copy / "sub" / "x.bin", ns=(5, 5))
    with OutputFolder(copy, what="--out", tool="t") as folder:
        assert folder.write_bytes("sub/x.bin", b"2").read_bytes() == b"2"
    assert len((copy / RECORD_NAME).read_text().splitlines()) == 2
    with pytest.raises(OutputError, match="--out is empty"):
        OutputFolder("", what="--out", tool="t")
