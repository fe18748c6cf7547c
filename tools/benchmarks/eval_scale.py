"""Evaluation at scale: ``train_net.py --eval-only`` on a synthetic split, 1 and 2 processes.

Writes once into ``--work-dir`` a synthetic validation split (``--images`` images of ``--size``
pixels, the twin that ``tools/make_synthetic_dataset.py`` writes) and the random initial
weights of ``configs/synthetic/instaformer_od_tiny.yaml`` (one file, so that every process
evaluates the same model), then runs, for each version (this checkout, and with
``--before REV`` that revision's whole tree from ``git archive``) and each process count of
``--processes``::

    train_net.py --config-file configs/synthetic/instaformer_od_tiny.yaml --eval-only \\
        --num-gpus N MODEL.DEVICE cpu MODEL.WEIGHTS <weights> OUTPUT_DIR <run folder>

with ``INSTAFORMER_NUM_THREADS=1`` (one thread per process whatever N, so that the model's
outputs are the same numbers in every run). Every 0.2 s the resident memory (VmRSS) of every
process of the run is read from ``/proc``. Reported per run: wall time; for rank 0 (the
process that gathers and evaluates: the main process with one process, else the first one
the launcher starts) its peak RSS, its RSS when the log reports the end of inference, and its
peak after that (the gather and ``evaluate``); and whether ``eval_results.json`` is byte for
byte the first run's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mask2former.utils.argtypes import int_range

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/synthetic/instaformer_od_tiny.yaml"
INFERENCE_DONE = "Total inference time"  # the log line at the end of inference


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int_range(1), default=5000, help="validation images")
    parser.add_argument("--size", type=int_range(16), default=96, help="image side (pixels)")
    parser.add_argument("--processes", type=int_range(1), nargs="+", default=[1, 2])
    parser.add_argument("--before", default=None, metavar="REV", help="git revision to compare")
    parser.add_argument("--work-dir", default=None, help="data and runs (default: temporary)")


def _prepare(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """The dataset root (``DETECTRON2_DATASETS``) and the weights file, written if missing."""
    import torch

    from instaformer.config import get_cfg
    from instaformer.data import make_synthetic_dataset
    from instaformer.data.datasets import SYNTHETIC_SUBDIR
    from instaformer.modeling import build_model

    datasets = work / "datasets"
    root = datasets / SYNTHETIC_SUBDIR
    if not (root / "coco" / "annotations").is_dir():
        make_synthetic_dataset(
            str(root), num_train=0, num_val=args.images, image_size=args.size, seed=0
        )
    weights = work / "weights.pth"
    if not weights.is_file():
        cfg = get_cfg()
        cfg.merge_from_file(str(REPO / CONFIG))
        cfg.MODEL.DEVICE = "cpu"
        torch.manual_seed(0)
        torch.save({"model": build_model(cfg).state_dict()}, weights)
    return datasets, weights


def _rss_mib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sorted(int(c) for c in f.read().split())
    except OSError:
        return []


def _rank0(pid: int, processes: int) -> int | None:
    """The launcher itself with one process, else its first child that is a rank (the
    resource tracker of multiprocessing is not)."""
    if processes == 1:
        return pid
    for child in _children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    return child
        except OSError:
            continue
    return None


def _run(code: Path, out: Path, processes: int, datasets: Path, weights: Path) -> dict:
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets), INSTAFORMER_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH")) if p)
    command = [sys.executable, "train_net.py", "--config-file", CONFIG, "--eval-only"]
    command += ["--num-gpus", str(processes), "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(weights)]
    command += ["OUTPUT_DIR", str(out)]
    start = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(command, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT)
        rank0, peak, at_end, after_end = None, 0, None, 0
        while proc.poll() is None:
            rank0 = rank0 or _rank0(proc.pid, processes)
            rss = _rss_mib(rank0) if rank0 else None
            if rss is not None:
                peak = max(peak, rss)
                if at_end is None and INFERENCE_DONE in _log_text(out):
                    at_end = rss
                if at_end is not None:
                    after_end = max(after_end, rss)
            time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (see {out.with_suffix('.log')})")
    return {
        "wall_s": time.perf_counter() - start,
        "peak_mib": peak,
        "at_inference_end_mib": at_end,
        "peak_after_mib": after_end,
        "results": (out / "eval_results.json").read_bytes(),
    }


def _log_text(out: Path) -> str:
    path = out / "log.txt"
    return path.read_text(errors="replace") if path.is_file() else ""


def run(args: argparse.Namespace) -> None:
    from benchmark import extract_revision, load_average  # tools/benchmark.py, the entry point

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="eval_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    datasets, weights = _prepare(work, args)
    versions = {"after": REPO}
    if args.before:
        extract_revision(args.before, work / "before")
        versions = {"before": work / "before", **versions}
    print(
        f"{args.images} images of {args.size} px, tiny InstaFormer od (random weights), "
        f"one thread per process; load average {load_average()} (start)"
    )
    print(
        f"{'run':16s}{'wall s':>9s}{'rank 0 peak MiB':>17s}{'at inference end':>18s}"
        f"{'peak after':>12s}  eval_results.json"
    )
    first = None
    for version, code in versions.items():
        for processes in args.processes:
            name = f"{version}_{processes}p"
            r = _run(code, work / name, processes, datasets, weights)
            first = first if first is not None else r["results"]
            same = "= first run" if r["results"] == first else "DIFFERS from the first run"
            print(
                f"{name:16s}{r['wall_s']:9.0f}{r['peak_mib']:17d}"
                f"{r['at_inference_end_mib'] or 0:18d}{r['peak_after_mib']:12d}  {same}"
            )
    print(f"load average {load_average()} (end); runs and logs in {work}")
