"""CPU thread choice, passive OpenMP waiting, and fresh logs/metrics for a new run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mask2former.engine.events import MetricsWriter
from mask2former.utils.logger import setup_logger
from mask2former.utils.threads import ENV_THREADS, available_cpus, busy, choose_num_threads
from tests.support import REPO


def test_threads_share_the_available_cores(monkeypatch):
    monkeypatch.delenv(ENV_THREADS, raising=False)
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)
    assert choose_num_threads(1, cpus=8, load=0.0, passive=True)[0] == 8
    assert choose_num_threads(2, cpus=8, load=0.0, passive=True)[0] == 4
    assert choose_num_threads(16, cpus=8, load=0.0, passive=True)[0] == 1
    # passive waiting: a busy machine keeps the share (measured faster than one thread)
    assert choose_num_threads(1, cpus=2, load=9.0, passive=True)[0] == 2
    # spinning threads on a busy machine stall: one thread per process
    threads, reason = choose_num_threads(1, cpus=2, load=9.0, passive=False)
    assert threads == 1 and "busy" in reason
    assert choose_num_threads(1, cpus=2, load=0.5, passive=False)[0] == 2


def test_thread_override(monkeypatch):
    monkeypatch.setenv(ENV_THREADS, "3")
    assert choose_num_threads(4, cpus=2, load=50.0, passive=False) == (3, f"set by {ENV_THREADS}")
    monkeypatch.setenv(ENV_THREADS, "0")
    with pytest.raises(ValueError, match=ENV_THREADS):
        choose_num_threads()


@pytest.mark.parametrize("policy", [None, "ACTIVE"])
def test_importing_the_package_before_torch_on_a_busy_machine_makes_openmp_wait_passively(policy):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    code = (
        "import os, instaformer, torch; from mask2former.utils import threads as t; "
        "print(os.environ.get('OMP_WAIT_POLICY', '-'), "
        "t.busy(t.LOAD_AT_IMPORT, t.available_cpus()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    chosen, was_busy = done.stdout.split()
    if policy is not None:
        assert chosen == policy  # the user's choice stands
    else:  # passive only on a busy machine: spinning is twice as fast on idle cores
        assert chosen == ("PASSIVE" if was_busy == "True" else "-")


def test_busy_means_a_load_of_at_least_the_cores():
    assert busy(2.0, 2) and busy(9.0, 2) and not busy(1.9, 2) and not busy(0.0, 8)


def _records(path: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines()]


def test_metrics_start_afresh_and_resume_keeps_earlier_iterations(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in (19, 39, 59)) + '{"it')
    writer = MetricsWriter(str(tmp_path), 100, start_iter=40, tensorboard=False)
    assert _records(path) == [19, 39]  # iterations from 40 on are redone; a cut line dropped
    writer.put(40, {"loss": 1.0, "time": 0.1})
    writer.write(40, 0.1)
    assert _records(path) == [19, 39, 40]
    MetricsWriter(str(tmp_path), 100, tensorboard=False)
    assert path.read_text() == ""


def test_new_run_log_starts_afresh(tmp_path):
    (tmp_path / "log.txt").write_text("old run\n")
    logger = setup_logger(str(tmp_path), name="instaformer", append=False)
    logger.info("new run")
    text = (tmp_path / "log.txt").read_text()
    assert "new run" in text and "old run" not in text
    setup_logger(str(tmp_path), name="instaformer").info("resumed")
    assert "new run" in (tmp_path / "log.txt").read_text()
    for handler in logger.handlers:
        handler.close()
