"""Training engine: folder lock, leftovers of killed saves, divergence, hangs, CLI errors."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from _collective_worker import silent_rank
from scipy.optimize import linear_sum_assignment
from torch import nn

from instaformer.config import ConfigError, setup_cfg
from instaformer.train import cli
from mask2former.engine import Trainer, launch
from mask2former.engine.checkpoint import remove_stale_temp_files
from mask2former.engine.lock import LOCK_NAME, RunLock, RunLockError, _process_start

REPO = Path(__file__).resolve().parents[1]


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _write_lock(folder: Path, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": host or socket.gethostname(), "start": _process_start(pid)}
    (folder / LOCK_NAME).write_text(json.dumps({**owner, "started": "earlier"}))


def test_run_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path, caplog) -> None:
    live = _sleeper()
    try:
        _write_lock(tmp_path / "busy", live.pid)
        with pytest.raises(RunLockError, match=rf"in use by a running process \(pid {live.pid}"):
            RunLock(str(tmp_path / "busy")).acquire()
    finally:
        live.kill()
        live.wait()
    with caplog.at_level(logging.WARNING):
        lock = RunLock(str(tmp_path / "busy"))
        lock.acquire()  # the owner is dead now (e.g. killed -9): resuming works
    assert f"from pid {live.pid}" in caplog.text and "no longer running" in caplog.text
    assert json.loads((tmp_path / "busy" / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "busy" / LOCK_NAME).exists()
    _write_lock(tmp_path / "remote", 12345, host="another-host")
    with pytest.raises(RunLockError, match=r"on host another-host.*remove .*\.run\.lock"):
        RunLock(str(tmp_path / "remote")).acquire()
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == []


def test_train_command_refuses_a_folder_in_use_in_one_line(
    tmp_path, capsys, monkeypatch, synthetic_datasets
) -> None:
    monkeypatch.setenv("DETECTRON2_DATASETS", str(synthetic_datasets))  # passes the pre-flight
    live = _sleeper()
    try:
        _write_lock(tmp_path, live.pid)
        before = sorted(p.name for p in tmp_path.iterdir())
        with pytest.raises(SystemExit) as info:
            cli(
                [
                    "--config-file",
                    "synthetic/maskformer2_R50_tiny.yaml",
                    "OUTPUT_DIR",
                    str(tmp_path),
                ]
            )
    finally:
        live.kill()
        live.wait()
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("instaformer-train: error: output folder") and "--debug" in err[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_cli_user_errors_exit_2_and_debug_keeps_the_traceback(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER:\n  MAX_ITER: 0\n")
    argv = ["--config-file", str(bad), "OUTPUT_DIR", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as info:
        cli(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: config key SOLVER.MAX_ITER must be a positive integer, got 0" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER"):
        cli([*argv[:2], "--debug", *argv[2:]])
    monkeypatch.setenv("INSTAFORMER_DEBUG", "1")
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER"):
        cli(argv)


def test_temp_files_of_a_killed_save_are_removed(tmp_path) -> None:
    ours = [".model_0000999.pth.k3j_x9a.tmp", ".last_checkpoint.abc123.tmp", ".config.yaml.q1.tmp"]
    others = ["model_0000999.pth", ".notes.tmp", "last_checkpoint", "data.pth.tmp"]
    for name in ours + others:
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temp_files(str(tmp_path))
    assert sorted(Path(p).name for p in removed) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)


class _MatchingModel(nn.Module):
    """Two 'queries' matched to two targets with scipy, as Mask2Former's matcher does."""

    def __init__(self) -> None:
        super().__init__()
        self.cost = nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 1.0]]))

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        rows, cols = linear_sum_assignment(self.cost.detach().numpy())  # chokes on NaN / inf
        return {"loss": self.cost[rows, cols].mean() * batch[0]["x"]}


def _ones(cfg, start_iter):
    while True:
        yield [{"x": torch.tensor(1.0)}]


def test_weights_blown_up_by_the_step_stop_before_the_matcher(tmp_path) -> None:
    cfg = setup_cfg(
        "",
        ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "5"]
        + ["SOLVER.OPTIMIZER", "SGD", "SOLVER.BASE_LR", "1e38", "SOLVER.WARMUP_ITERS", "0"]
        + ["DATASETS.TEST", "()"],
    )
    # The matched costs reach -inf while the loss is still finite; without the check the next
    # forward pass dies in scipy ("cost matrix contains invalid numeric entries").
    with pytest.raises(
        FloatingPointError,
        match=r"step of iteration 1 \(learning rate 1e\+38, loss -5.0\d*e\+37\): cost\.",
    ):
        Trainer(cfg, _MatchingModel(), _ones).train()


class _Sink:
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.finished = 0

    def log(self, data: dict, step: int) -> None:
        assert data["iteration"] == step and "total_loss" in data
        self.steps.append(step)

    def finish(self) -> None:
        self.finished += 1


def test_trainer_takes_its_pieces_at_construction(tmp_path) -> None:
    opts = ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "2"]
    opts += ["SOLVER.WARMUP_ITERS", "0", "DATASETS.TEST", "()"]
    sink = _Sink()
    Trainer(setup_cfg("", opts), _MatchingModel(), _ones, metric_sinks=[sink]).train()
    assert sink.steps == [1] and sink.finished == 1  # the last iteration is always logged
    with pytest.raises(ValueError, match=r"MODEL.WEIGHTS is 'w.pth' but .* no load_weights"):
        Trainer(setup_cfg("", [*opts, "MODEL.WEIGHTS", "w.pth"]), _MatchingModel(), _ones)
    with pytest.raises(ValueError, match=r"DATASETS.TEST is \('val',\) but .* no evaluate"):
        Trainer(setup_cfg("", [*opts, "DATASETS.TEST", "('val',)"]), _MatchingModel(), _ones)


def test_collective_timeout_names_the_silent_rank(tmp_path) -> None:
    result = tmp_path / "explained.txt"
    launch(silent_rank, 2, backend="gloo", args=(str(result),), timeout=timedelta(seconds=120))
    text = result.read_text() if result.exists() else ""
    assert "rank 0 waited longer than 1.5 s (DIST_TIMEOUT)" in text
    assert "at iteration 1 (backward)" in text
    assert "rank 1 stopped answering (last reached iteration 1 (forward)" in text


_WORKER_SCRIPT = """
import os, sys, time
from torch.utils.data import DataLoader, Dataset
from mask2former.data.build import worker_init_fn

class Slow(Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        with open(sys.argv[1], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
        return i

for _ in DataLoader(Slow(), num_workers=1, worker_init_fn=worker_init_fn):
    pass
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_data_loader_workers_die_with_their_parent(tmp_path) -> None:
    pid_file = tmp_path / "worker.pid"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    parent = subprocess.Popen([sys.executable, "-c", _WORKER_SCRIPT, str(pid_file)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and parent.poll() is None, "worker never started"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert not _gone(worker)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 5
    while not _gone(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(worker), f"worker {worker} outlived its killed parent"
