"""train_net.py end to end on the synthetic twin: train, resume, evaluate, distributed, NaN."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from instaformer.data import register_synthetic_instaorder
from instaformer.data.datasets import SYNTHETIC_SUBDIR
from instaformer.train import build_trainer, load_config, main, setup
from mask2former.engine import Trainer, default_argument_parser, launch
from mask2former.utils import comm
from mask2former.utils.threads import ENV_THREADS
from tests.support import REPO

CONFIG = str(REPO / "configs" / "synthetic" / "maskformer2_R50_tiny.yaml")


def _args(output_dir: Path, *extra: str, resume: bool = False, eval_only: bool = False):
    argv = ["--config-file", CONFIG]
    argv += ["--resume"] if resume else []
    argv += ["--eval-only"] if eval_only else []
    argv += [
        "OUTPUT_DIR",
        str(output_dir),
        "SOLVER.IMS_PER_BATCH",
        "2",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.WARMUP_ITERS",
        "2",
        *extra,
    ]
    return default_argument_parser().parse_args(argv)


def _trainer(args) -> Trainer:
    cfg = load_config(args)
    setup(cfg, args)
    return build_trainer(cfg)


def _main(args):
    return main(load_config(args), args)


@pytest.fixture(autouse=True)
def _datasets(synthetic_datasets, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(synthetic_datasets))


def _metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]


@pytest.mark.slow
def test_train_then_eval_only(tmp_path):
    results = _main(_args(tmp_path, "SOLVER.MAX_ITER", "3"))
    assert "panoptic_seg" in results and "sem_seg" in results
    for name in ("config.yaml", "log.txt", "model_final.pth", "last_checkpoint"):
        assert (tmp_path / name).is_file(), name
    records = _metrics(tmp_path)
    assert records[-1]["iteration"] == 2 and torch.isfinite(torch.tensor(records[-1]["total_loss"]))
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())
    checkpoint = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert checkpoint["iteration"] == 2 and "SOLVER:" in checkpoint["cfg"]

    eval_dir = tmp_path / "eval"
    weights = str(tmp_path / "model_final.pth")
    _main(_args(eval_dir, "MODEL.WEIGHTS", weights, eval_only=True))
    saved = json.loads((eval_dir / "eval_results.json").read_text())
    assert saved["panoptic_seg"]["PQ"] == pytest.approx(results["panoptic_seg"]["PQ"])


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tmp_path, monkeypatch):
    common = ("SOLVER.MAX_ITER", "6", "SOLVER.STEPS", "(4,)", "SOLVER.CHECKPOINT_PERIOD", "3")
    common += ("DATASETS.TEST", "()", "SEED", "7")
    full = _trainer(_args(tmp_path / "full", *common))
    full.train()
    full_lr = full.optimizer.param_groups[0]["lr"]

    killed_dir = tmp_path / "killed"
    killed = _trainer(_args(killed_dir, *common))
    original = Trainer.run_step

    def run_step_then_die(self, data):
        if self.iteration == 4:
            raise KeyboardInterrupt("simulated kill")
        return original(self, data)

    monkeypatch.setattr(Trainer, "run_step", run_step_then_die)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    monkeypatch.setattr(Trainer, "run_step", original)
    assert (killed_dir / "last_checkpoint").read_text() == "model_0000002.pth"

    resumed = _trainer(_args(killed_dir, *common, resume=True))
    resumed.train(resume=True)
    assert resumed.start_iter == 3 and resumed.iteration == full.iteration == 5
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(full_lr)
    for (name, a), b in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


def test_nan_loss_stops_with_a_message(tmp_path, monkeypatch):
    trainer = _trainer(_args(tmp_path, "SOLVER.MAX_ITER", "2"))
    forward = type(trainer.model).forward

    def nan_forward(self, batched_inputs):
        losses = forward(self, batched_inputs)
        losses["loss_mask"] = losses["loss_mask"] * float("nan")
        return losses

    monkeypatch.setattr(type(trainer.model), "forward", nan_forward)
    with pytest.raises(FloatingPointError, match=r"iteration 0.*loss_mask=nan"):
        trainer.train()


def _two_process_step(output_dir: str, result_file: str) -> None:
    args = _args(Path(output_dir), "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()")
    trainer = _trainer(args)
    trainer.train()
    flat = torch.cat([p.detach().flatten() for p in trainer.model_without_ddp.parameters()])
    sums = comm.all_gather((float(flat.sum()), float(flat.abs().sum())))
    if comm.is_main_process():
        Path(result_file).write_text(json.dumps(sums))


@pytest.mark.slow
def test_two_gloo_processes_agree_after_a_step(tmp_path):
    result = tmp_path / "sums.json"
    launch(
        _two_process_step,
        2,
        backend="gloo",
        args=(str(tmp_path / "out"), str(result)),
    )
    sums = json.loads(result.read_text())
    assert len(sums) == 2 and sums[0] == sums[1]


@pytest.mark.slow
def test_command_line_two_cpu_processes(tmp_path, synthetic_datasets):
    env = dict(os.environ, DETECTRON2_DATASETS=str(synthetic_datasets))
    cmd = [sys.executable, str(REPO / "train_net.py"), "--config-file", CONFIG, "--num-gpus", "2"]
    cmd += ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "2"]
    cmd += ["SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Rank 0 of 2" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "model_final.pth").is_file()


@pytest.mark.slow
def test_instaordernet_trains_and_evaluates_through_train_net(tmp_path):
    config = str(REPO / "configs" / "instaordernet" / "synthetic_od_tiny.yaml")
    argv = ["--config-file", config, "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "2"]
    results = _main(default_argument_parser().parse_args(argv))
    assert set(results) == {"occlusion_order", "depth_order"}
    assert 0.0 <= results["occlusion_order"]["f1"] <= 100.0
    assert (tmp_path / "model_final.pth").is_file() and (tmp_path / "eval_results.json").is_file()


OD_CONFIG = str(REPO / "configs" / "synthetic" / "instaformer_od_tiny.yaml")


def _two_process_train_and_evaluate(output_dir: str, result_file: str) -> None:
    args = _args(Path(output_dir), "SOLVER.MAX_ITER", "3", "MODEL.DEVICE", "cpu")
    args.config_file = OD_CONFIG
    results = _main(args)
    if comm.is_main_process():
        Path(result_file).write_text(json.dumps(results))


@pytest.mark.slow
def test_two_process_final_evaluation_equals_eval_only_of_saved_weights(
    tmp_path, monkeypatch, synthetic_datasets
):
    """BatchNorm buffers differ between processes after a step; the final evaluation (spread
    over both processes) must use the saved model's, as ``--eval-only`` does.

    One CPU thread everywhere: the two processes and the single evaluation process then compute
    every image alike (thread counts change float sums, and the barely trained model's
    decisions sit close to their thresholds)."""
    monkeypatch.setenv(ENV_THREADS, "1")
    result = tmp_path / "results.json"
    train_dir = tmp_path / "train"
    launch(
        _two_process_train_and_evaluate,
        2,
        backend="gloo",
        args=(str(train_dir), str(result)),
    )
    trained = json.loads(result.read_text())
    # the spawned processes registered the val split of this root; other tests of this process
    # may have registered the name elsewhere
    register_synthetic_instaorder(str(synthetic_datasets / SYNTHETIC_SUBDIR))
    weights = str(train_dir / "model_final.pth")
    args = _args(tmp_path / "eval", "MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu", eval_only=True)
    args.config_file = OD_CONFIG
    evaluated = _main(args)
    assert {"occlusion_order", "depth_order", "panoptic_seg"} <= set(trained)
    for task in ("occlusion_order", "depth_order", "panoptic_seg"):
        for metric, value in evaluated[task].items():
            if isinstance(value, float):  # n/a (NaN) where nothing could be scored: NaN in both
                same = pytest.approx(value, abs=1e-9, nan_ok=True)
                assert trained[task][metric] == same, (task, metric)


def test_random_frozen_parts_are_warned_about(monkeypatch):
    import instaformer.train as train

    messages = []
    monkeypatch.setattr(train.logger, "warning", lambda msg, *a: messages.append(msg % a))
    released = (
        REPO / "configs/instaorder/occlusion_depth/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml"
    )
    train.warn_random_frozen_parts(train.setup_cfg(str(released), ["MODEL.WEIGHTS", ""]))
    assert len(messages) == 1 and "backbone and sem_seg_head are frozen" in messages[0]
    train.warn_random_frozen_parts(train.setup_cfg(CONFIG, []))  # nothing frozen: silent
    assert len(messages) == 1


def test_config_parsed_once_per_run(tmp_path, monkeypatch):
    """The command line parses the yaml and overrides once; the processes get the result."""
    import instaformer.config
    from instaformer.train import cli

    parses = []
    get_cfg = instaformer.config.get_cfg
    monkeypatch.setattr(instaformer.config, "get_cfg", lambda: parses.append(1) or get_cfg())
    argv = ["--config-file", CONFIG, "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "1"]
    argv += ["SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()"]
    with pytest.raises(SystemExit) as done:
        cli(argv)
    assert done.value.code == 0 and (tmp_path / "model_final.pth").is_file()
    assert len(parses) == 1


def test_wandb_metrics_become_a_metric_sink(monkeypatch):
    import types

    from instaformer.train import metric_sinks

    cfg = load_config(_args(Path("unused"), "WANDB.METRICS", "True", "WANDB.PROJECT", "p1"))
    calls = []
    fake = types.SimpleNamespace(init=lambda **kw: calls.append(kw) or "run")
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert metric_sinks(cfg) == ["run"]
    assert calls[0]["project"] == "p1" and "WANDB:" in calls[0]["config"]["yaml"]
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(ImportError, match="WANDB.METRICS is True but `wandb` is not installed"):
        metric_sinks(cfg)
    assert metric_sinks(load_config(_args(Path("unused")))) == []
