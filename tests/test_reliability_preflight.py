"""The pre-flight check of train_net.py: every fault that used to show only after training (or
never) is refused before the first process starts, one line each, exit status 2, nothing
written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from scripts import load_script

from instaformer.config import setup_cfg
from instaformer.data import register_synthetic_instaorder
from instaformer.data.datasets import SYNTHETIC_SUBDIR
from instaformer.modeling import build_model
from instaformer.train import cli, parse_args
from mask2former.engine import launch

REPO = Path(__file__).resolve().parents[1]
OD = "synthetic/instaformer_od_tiny.yaml"
HEADER = "instaformer-train: error: the pre-flight check found {}; nothing was started:"
DEBUG_HINT = "instaformer-train: (add --debug or set INSTAFORMER_DEBUG=1 for the full traceback)"


@pytest.fixture(autouse=True)
def _datasets(synthetic_datasets, monkeypatch):
    # other tests of this process may have registered the twin's names elsewhere
    monkeypatch.setenv("DETECTRON2_DATASETS", str(synthetic_datasets))
    register_synthetic_instaorder(str(synthetic_datasets / SYNTHETIC_SUBDIR))


def _refused(
    capsys, tmp_path: Path, *overrides: str, flags: tuple[str, ...] = (), config: str = OD
) -> list[str]:
    """Run the train command with ``flags`` and config ``overrides`` into ``tmp_path/out``;
    assert exit 2 and nothing written; return the fault lines (after the header)."""
    out = tmp_path / "out"
    short = ["SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"]
    with pytest.raises(SystemExit) as info:  # a run that starts anyway stops after one step
        cli(["--config-file", config, *flags, *short, *overrides, "OUTPUT_DIR", str(out)])
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[-1] == DEBUG_HINT and "Traceback" not in captured.err
    faults = lines[1:-1]
    count = f"{len(faults)} fault" + ("s" if len(faults) != 1 else "")
    assert lines[0] == HEADER.format(count)
    assert not out.exists() and captured.out == ""
    return [f.removeprefix("  ") for f in faults]


def test_occlusion_evaluation_of_a_depth_model_is_refused_before_training(capsys, tmp_path):
    faults = _refused(
        capsys,
        tmp_path,
        "MODEL.GEOMETRIC_PREDICTOR.TASK",
        "d",
        "MODEL.GEOMETRIC_PREDICTOR.OCCLUSION_ON",
        "False",
    )
    assert faults == [
        "TEST.OCCLUSION_EVALUATION True but the model returns no occlusion order to evaluate "
        "(MODEL.GEOMETRIC_PREDICTOR.NAME 'GeometricTransformer', TASK 'd', OCCLUSION_ON False); "
        "set TEST.OCCLUSION_EVALUATION False, or a TASK with occlusion and OCCLUSION_ON True"
    ]


def test_output_flag_of_a_task_the_head_lacks_is_refused(capsys, tmp_path):
    faults = _refused(
        capsys, tmp_path, "MODEL.GEOMETRIC_PREDICTOR.TASK", "o", "TEST.DEPTH_EVALUATION", "False"
    )
    assert faults == [
        "MODEL.GEOMETRIC_PREDICTOR.DEPTH_ON True but the order head (NAME 'GeometricTransformer', "
        "TASK 'o') predicts no depth; set DEPTH_ON False or a TASK with depth"
    ]


def test_instance_results_without_panoptic_on_a_panoptic_dataset_are_refused(capsys, tmp_path):
    faults = _refused(
        capsys,
        tmp_path,
        "MODEL.MASK_FORMER.TEST.PANOPTIC_ON",
        "False",
        "MODEL.MASK_FORMER.TEST.INSTANCE_ON",
        "True",
    )
    assert faults == [
        "MODEL.MASK_FORMER.TEST.INSTANCE_ON True with PANOPTIC_ON False: instance predictions "
        "then include the 53 stuff classes of dataset 'synthetic_instaorder_val', which mask AP "
        "cannot score; set PANOPTIC_ON True or INSTANCE_ON False"
    ]


def test_test_datasets_without_any_evaluator_are_refused(capsys, tmp_path):
    off = []
    for key in ("PANOPTIC_ON", "INSTANCE_ON", "SEMANTIC_ON"):
        off += [f"MODEL.MASK_FORMER.TEST.{key}", "False"]
    off += ["TEST.OCCLUSION_EVALUATION", "False", "TEST.DEPTH_EVALUATION", "False"]
    assert _refused(capsys, tmp_path, *off) == [
        "DATASETS.TEST ('synthetic_instaorder_val',) but no evaluator is enabled: set one of "
        "MODEL.MASK_FORMER.TEST.{PANOPTIC,INSTANCE,SEMANTIC}_ON, TEST.OCCLUSION_EVALUATION, "
        "TEST.DEPTH_EVALUATION (or DATASETS.TEST ())"
    ]


def test_fewer_queries_than_segments_are_refused_before_training(
    capsys, tmp_path, synthetic_datasets
):
    faults = _refused(capsys, tmp_path, "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "3")
    image = synthetic_datasets / "synthetic_instaorder/coco/train2017/000000000007.jpg"
    assert faults[0] == (
        f"MODEL.MASK_FORMER.NUM_OBJECT_QUERIES 3 is below the 7 non-crowd segments of image_id 7 "
        f"({image}) in dataset 'synthetic_instaorder_train': segments would be left without a "
        "query and the order head stops at the first annotated one; set NUM_OBJECT_QUERIES to "
        "at least 7"
    )
    assert len(faults) == 2 and "dataset 'synthetic_instaorder_val'" in faults[1]


@pytest.fixture()
def datasets_copy(synthetic_datasets, tmp_path, monkeypatch) -> Iterator[Path]:
    """A copy of the synthetic twin that a test may damage."""
    root = tmp_path / "datasets"
    shutil.copytree(synthetic_datasets, root)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    register_synthetic_instaorder(str(root / SYNTHETIC_SUBDIR))
    yield root / SYNTHETIC_SUBDIR / "coco"
    register_synthetic_instaorder(str(synthetic_datasets / SYNTHETIC_SUBDIR))


def test_missing_images_and_pngs_are_counted_before_training(capsys, tmp_path, datasets_copy):
    gone = [
        datasets_copy / "train2017/000000000006.jpg",  # in the middle of the training set
        datasets_copy / "train2017/000000000009.jpg",
        datasets_copy / "panoptic_val2017/000000900003.png",
    ]
    for path in gone:
        path.unlink()
    assert _refused(capsys, tmp_path) == [
        f"dataset 'synthetic_instaorder_train': 2 of 12 images (file_name) missing, e.g. "
        f"{gone[0]}, {gone[1]}",
        f"dataset 'synthetic_instaorder_val': 1 of 4 panoptic PNGs (pan_seg_file_name) "
        f"missing, e.g. {gone[2]}",
    ]


def test_batch_not_divisible_by_the_processes_is_refused_in_the_launcher(capsys, tmp_path):
    faults = _refused(
        capsys,
        tmp_path,
        "MODEL.DEVICE",
        "cpu",
        "SOLVER.IMS_PER_BATCH",
        "3",
        flags=("--num-gpus", "2"),
    )
    assert faults == [
        "SOLVER.IMS_PER_BATCH 3 is not divisible by the 2 processes (--num-gpus x "
        "--num-machines); use a multiple of 2"
    ]


def test_machine_rank_outside_the_machine_count_exits_instead_of_waiting(tmp_path):
    """Used to wait forever for machines that never come."""
    cmd = [sys.executable, str(REPO / "train_net.py"), "--config-file", OD]
    cmd += ["--num-machines", "2", "--machine-rank", "5", "--dist-url", "tcp://127.0.0.1:9"]
    cmd += ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "out")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=os.environ)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.splitlines()[1] == (
        "  --machine-rank 5 with --num-machines 2: the rank must be 0 .. 1 (a rank outside "
        "would wait forever for the other machines)"
    )
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"^--machine-rank 5 with --num-machines 2: the rank"):
        launch(print, 1, num_machines=2, machine_rank=5, dist_url="tcp://127.0.0.1:9")


def test_torchrun_variables_out_of_range_are_refused(capsys, tmp_path, monkeypatch):
    for key, value in (("RANK", "3"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(key, value)
    assert _refused(capsys, tmp_path) == [
        "torchrun environment RANK=3 WORLD_SIZE=2 LOCAL_RANK=0: needs WORLD_SIZE >= 1, "
        "0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0"
    ]


def test_unknown_names_list_the_known_ones_all_at_once(capsys, tmp_path):
    faults = _refused(
        capsys,
        tmp_path,
        "MODEL.GEOMETRIC_PREDICTOR.NAME",
        "Holistic",
        "MODEL.BACKBONE.NAME",
        "resnet50",
        "DATASETS.TRAIN",
        "('synthetic_train',)",
    )
    assert faults[:2] == [
        "MODEL.BACKBONE.NAME 'resnet50' is not registered; known: D2SwinTransformer, TimmBackbone, "
        "build_resnet_backbone",
        "MODEL.GEOMETRIC_PREDICTOR.NAME 'Holistic' is not registered; known: "
        "GeometricTransformer, PairwiseResNet",
    ]
    assert faults[2].startswith(
        "DATASETS.TRAIN names dataset 'synthetic_train', which is not registered; registered: "
    )
    assert "synthetic_instaorder_train," in faults[2] and len(faults) == 3
    assert _refused(capsys, tmp_path, "MODEL.META_ARCHITECTURE", "Mask2Former") == [
        "MODEL.META_ARCHITECTURE 'Mask2Former' is not registered; known: InstaFormer, "
        "InstaOrderNet, MaskFormer"
    ]


def test_constructor_refusals_are_found_on_the_meta_device(capsys, tmp_path):
    assert _refused(capsys, tmp_path, "MODEL.GEOMETRIC_PREDICTOR.DEPTH_LOSS", "l1") == [
        "the model cannot be built from this config: MODEL.GEOMETRIC_PREDICTOR.DEPTH_LOSS must be "
        "one of ('balanced_softmax', 'ce'), got 'l1'"
    ]


def test_datasets_of_the_other_model_family_are_refused(capsys, tmp_path):
    faults = _refused(
        capsys,
        tmp_path,
        "DATASETS.TEST",
        "('synthetic_instaorder_val',)",
        flags=("--eval-only", "--allow-random-init"),
        config="instaordernet/synthetic_od_tiny.yaml",
    )
    assert faults == [
        "dataset 'synthetic_instaorder_val' has no annotations in its records, which "
        "MODEL.META_ARCHITECTURE 'InstaOrderNet' reads: InstaFormer models take InstaOrder "
        "Panoptic datasets (*_panoptic, synthetic_instaorder_{train,val}), InstaOrderNet takes "
        "InstaOrder ones (instaorder_2017_*, *_instances)"
    ]


def test_eval_only_without_weights_is_refused(capsys, tmp_path):
    assert _refused(capsys, tmp_path, flags=("--eval-only",)) == [
        "--eval-only with MODEL.WEIGHTS '': every weight of the model would be random; give "
        "MODEL.WEIGHTS, or --allow-random-init to evaluate a random model on purpose"
    ]


def _occlusion_only_checkpoint(path: Path) -> str:
    opts = ["MODEL.GEOMETRIC_PREDICTOR.TASK", "o", "MODEL.GEOMETRIC_PREDICTOR.DEPTH_ON", "False"]
    model = build_model(setup_cfg(OD, opts))
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def test_eval_only_with_a_checkpoint_that_leaves_the_depth_head_random(capsys, tmp_path):
    weights = _occlusion_only_checkpoint(tmp_path / "occlusion_only.pth")
    assert _refused(capsys, tmp_path, "MODEL.WEIGHTS", weights, flags=("--eval-only",)) == [
        f"--eval-only: MODEL.WEIGHTS '{weights}' leaves 12 weight tensors of the evaluated model "
        "random, in geometric_predictor.projs.1 (8 tensors), geometric_predictor.out_projs.1 "
        "(4 tensors); the metrics would be those of random layers. Use a checkpoint of this "
        "model and config (the same MODEL.GEOMETRIC_PREDICTOR.TASK), or --allow-random-init to "
        "evaluate it anyway"
    ]
    out = tmp_path / "allowed"
    argv = ["--config-file", OD, "--eval-only", "--allow-random-init", "MODEL.WEIGHTS", weights]
    with pytest.raises(SystemExit) as info:
        cli([*argv, "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out)])
    assert info.value.code == 0
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["random_init"] == {
        "geometric_predictor.projs.1": 8,
        "geometric_predictor.out_projs.1": 4,
    }
    assert (
        "RANDOM WEIGHTS (--allow-random-init) in geometric_predictor.projs.1 (8 tensors), "
        "geometric_predictor.out_projs.1 (4 tensors): not the metrics of a trained model"
    ) in (out / "log.txt").read_text()


def test_unloaded_keys_are_summarised_by_the_largest_unloaded_module() -> None:
    from mask2former.checkpoint import unloaded_modules

    keys = ["a.x.w", "a.x.b", "a.y.w", "b.z", "b.q.w", "b.q.b"]
    assert unloaded_modules(keys, ["a.x.w", "a.x.b", "b.q.w"]) == [("a.x", 2), ("b.q.w", 1)]
    assert unloaded_modules(keys, ["a.x.w", "a.x.b", "a.y.w"]) == [("a", 3)]
    assert unloaded_modules(keys, keys) == [("", 6)]
    assert unloaded_modules(keys, []) == []


def test_a_correct_run_passes_quickly_and_says_what_it_checked() -> None:
    from instaformer.preflight import check_run

    args = parse_args(["--config-file", OD])
    start = time.perf_counter()
    summary = check_run(setup_cfg(OD), args)
    assert time.perf_counter() - start < 10
    assert (summary.datasets, summary.images, summary.files) == (2, 16, 32)
    assert str(summary).startswith(
        "pre-flight check passed: 2 dataset(s), 16 images, 32 files present ("
    )


@pytest.mark.parametrize(
    "config",
    [
        "instaorder/occlusion_depth/all/occlusion_depth_config.yaml",
        "instaorder/depth/pairwise/depth_config.yaml",
        "instaorder/occlusion/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
        "instaorder/maskformer2_R50_bs16_50ep.yaml",
        "instaordernet/InstaOrderNet_od.yaml",
        "synthetic/maskformer2_R50_tiny.yaml",
        "custom/shapes_tiny.yaml",
    ],
)
def test_released_configs_pass_the_config_checks(config: str) -> None:
    from instaformer.preflight import config_faults

    cfg = setup_cfg(config, ["MODEL.WEIGHTS", ""])
    for argv in ([], ["--eval-only", "--allow-random-init"]):
        assert config_faults(cfg, parse_args(["--config-file", config, *argv])) == []


def _demo_main(argv: list[str]) -> None:
    from instaformer.apps.demo import main

    main(argv)


@pytest.mark.parametrize(
    ("entry", "argv", "message"),
    [
        (
            _demo_main,
            ["--config-file", OD, "--input", "a.jpg", "--output", "o"]
            + ["--confidence-threshold", "2"],
            "argument --confidence-threshold: 2 is not in the range [0, 1]",
        ),
        (
            _demo_main,
            ["--config-file", OD, "--input", "a.jpg", "--output", "o"]
            + ["--confidence-threshold", "nan"],
            "argument --confidence-threshold: 'nan' is not a finite number",
        ),
        (
            _demo_main,
            ["--config-file", OD, "--video-input", "v.mp4", "--output", "o", "--max-frames", "0"],
            "argument --max-frames: 0 is not at least 1",
        ),
        (parse_args, ["--num-gpus", "0"], "argument --num-gpus: 0 is not at least 1"),
        (parse_args, ["--machine-rank", "-1"], "argument --machine-rank: -1 is not at least 0"),
        (
            "tools/check_dataset.py",
            ["--pictures", "-2"],
            "argument --pictures: -2 is not at least 0",
        ),
        (
            "tools/make_synthetic_dataset.py",
            ["--image-size", "8"],
            "argument --image-size: 8 is not at least 32",
        ),
        ("tools/quickstart.py", ["--num-train", "0"], "argument --num-train: 0 is not at least 1"),
    ],
)
def test_out_of_range_numbers_are_refused_by_the_command_line(
    entry, argv, message, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    if isinstance(entry, str):
        module = load_script(entry)
        entry = getattr(module, "main", None) or module.parse_args
    with pytest.raises(SystemExit) as info:
        entry(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {message}")
    assert list(tmp_path.iterdir()) == []
