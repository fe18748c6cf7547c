"""Whole-model inference per backend: PyTorch eager, torch.compile and onnxruntime, side by side.

Times ``Predictor.__call__`` on one random RGB image (preprocessing, network, panoptic
post-processing, order head over the thing segments, conversion to ``OrderResult``) for
InstaFormer^od with a Swin-T or an R50 backbone, random initial weights, float32, CPU. The
panoptic thresholds are set to 0 so that the random network yields segments and the order head
runs (``k`` = thing segments, reported). Each (model, size, backend) is measured in a fresh
Python process, so that its peak resident set size (``ru_maxrss``) means something:

* ``pytorch``: ``Predictor(cfg)``;
* ``compile``: the same with ``run_network`` wrapped in ``torch.compile`` (inductor); the first
  call (compilation) is reported as ``prepare``;
* ``onnxruntime``: ``Predictor(cfg, backend="onnxruntime")``. The ONNX export runs first in a
  process of its own (its time is ``prepare``), then a fresh process times inference from the
  cached graphs, so the peak RSS is that of inference (PyTorch model for the post-processing
  included), not of the exporter. Graphs are cached in a temporary folder removed at the end.

With ``--profile`` each timed process also profiles its runtime on the same image and prints
where the time goes: ONNX Runtime's own profile of the network graph summed per part and per op
type (:mod:`instaformer.deploy.profile`), or ``torch.profiler``'s self CPU time per PyTorch op
of whole ``Predictor`` calls.

Every backend's result is compared with the PyTorch one (panoptic map equal, largest
probability difference). Median and minimum of ``--repeats`` runs after one warm-up, wall clock;
``cpu`` is the median CPU time of the process (all threads; on a machine shared with other jobs
it tracks the work done rather than the waiting, but counts ONNX Runtime's spinning threads).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mask2former.utils.argtypes import int_range

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "swin-t-od": "configs/instaorder/occlusion_depth/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
    "r50-od": "configs/instaorder/occlusion_depth/all/occlusion_depth_config.yaml",
}
BACKENDS = ("pytorch", "compile", "onnxruntime")
OVERRIDES = [
    "MODEL.WEIGHTS", "",
    "MODEL.DEVICE", "cpu",
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0",
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0",
]  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["512x512", "800x1216"],
        help="image sizes HxW (multiples of 32 avoid padding)",
    )
    parser.add_argument(
        "--backends", nargs="+", default=["pytorch", "onnxruntime"], choices=BACKENDS
    )
    parser.add_argument(
        "--threads", type=int_range(1), default=2, help="intra-op threads (both runtimes)"
    )
    parser.add_argument(
        "--repeats", type=int_range(1), default=3, help="timed runs (median reported)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print where the time goes (ONNX Runtime profile of the network graph per "
        "part and op type; torch.profiler self CPU time per op)",
    )


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _profile_network(predictor, image: np.ndarray, threads: int, repeats: int, folder: Path) -> str:
    """ONNX Runtime profile of the cached network graph over ``repeats`` runs, as a table."""
    from instaformer.deploy.export import pad_like_model
    from instaformer.deploy.profile import profiled_session, summarize_profile

    forward = predictor._forward
    inputs = predictor.preprocess(image)["image"]
    padded = pad_like_model(inputs, forward.model.pixel_mean.cpu(), forward.model.size_divisibility)
    path, _ = forward.paths(*padded.shape[-2:])
    session = profiled_session(path, folder, threads)
    for _ in range(repeats):
        session.run(None, {"image": padded.numpy()})
    return summarize_profile(session.end_profiling(), path).table()


def _profile_torch(predictor, image: np.ndarray, repeats: int, top: int = 12) -> str:
    """``torch.profiler`` self CPU time per op over ``repeats`` Predictor calls, as a table."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            predictor(image)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    lines = [f"{repeats} runs, {total / repeats / 1e3:.1f} ms self CPU per run"]
    for e in events[:top]:
        ms = e.self_cpu_time_total / repeats / 1e3
        share = 100 * e.self_cpu_time_total / total
        lines.append(
            f"  op type  {e.key:38s} {ms:8.1f} ms {share:5.1f} % ({e.count // repeats} calls)"
        )
    return "\n".join(lines)


def measure(
    *,
    model: str,
    height: int,
    width: int,
    backend: str,
    threads: int,
    repeats: int,
    out: str,
    profile: bool = False,
) -> dict:
    """One measurement in this process (see the module docstring); ``repeats = 0`` only
    prepares (export). Writes the result arrays to ``out`` (``.npz``) when timing; with
    ``profile`` the result has a ``profile`` table (after the timed runs)."""
    from instaformer.config import setup_cfg
    from instaformer.predictor import Predictor

    torch.set_num_threads(threads)
    cfg = setup_cfg(str(ROOT / CONFIGS[model]), OVERRIDES)
    torch.manual_seed(0)  # same random weights in every process (and the same cache key)
    predictor = Predictor(cfg, backend="onnxruntime" if backend == "onnxruntime" else "pytorch")
    if backend == "compile":
        predictor.model.run_network = torch.compile(predictor.model.run_network)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    start = time.perf_counter()
    result = predictor(image)  # export / compilation / warm-up
    prepare = time.perf_counter() - start
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = predictor(image)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    if repeats:
        np.savez(
            out,
            panoptic=result.panoptic_seg,
            occlusion_prob=result.occlusion_prob,
            depth_prob=result.depth_prob,
        )
    peak = _max_rss_mib()  # before the profiling session, which holds a second copy
    table = ""
    if profile and repeats:
        if backend == "onnxruntime":
            table = _profile_network(predictor, image, threads, repeats, Path(out).parent)
        else:
            table = _profile_torch(predictor, image, repeats)
    return {
        "profile": table,
        "prepare_s": prepare,
        "median_s": statistics.median(times) if times else float("nan"),
        "min_s": min(times) if times else float("nan"),
        "cpu_s": statistics.median(cpu_times) if cpu_times else float("nan"),
        "peak_mib": peak,
        "k": len(result.segments),
    }


def _compare(reference: Path, other: Path) -> str:
    a, b = np.load(reference), np.load(other)
    differ = int((a["panoptic"] != b["panoptic"]).sum())
    diff = max(
        float(np.abs(a[k] - b[k]).max()) if a[k].size else 0.0
        for k in ("occlusion_prob", "depth_prob")
    )
    panoptic = "panoptic equal" if differ == 0 else f"panoptic differs on {differ} px"
    return f"{panoptic}, prob diff {diff:.1e}"


def run(args: argparse.Namespace) -> None:
    print(
        f"cpu x{args.threads}; float32; random weights; median of {args.repeats} after one "
        f"warm-up; one fresh process per measurement; load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="instaformer-bench-") as tmp:
        from benchmark import run_script_json  # tools/benchmark.py, the entry point

        env = dict(os.environ, INSTAFORMER_CACHE=tmp)
        for model in args.models:
            for size in args.sizes:
                height, width = (int(v) for v in size.lower().split("x"))
                reference = None
                rows = {}
                for backend in args.backends:
                    out = str(Path(tmp) / f"{model}-{size}-{backend}.npz")
                    request = {
                        "model": model, "height": height, "width": width, "backend": backend,
                        "threads": args.threads, "repeats": args.repeats, "out": out,
                        "profile": args.profile,
                    }  # fmt: skip
                    prepare = None
                    if backend == "onnxruntime":  # export in a process of its own
                        prepare = run_script_json(__file__, {**request, "repeats": 0}, env)[
                            "prepare_s"
                        ]
                    r = run_script_json(__file__, request, env)
                    r["prepare_s"] = prepare if prepare is not None else r["prepare_s"]
                    rows[backend] = r
                    if backend == "pytorch":
                        reference = out
                    match = "" if reference in (None, out) else _compare(Path(reference), Path(out))
                    speedup = ""
                    if "pytorch" in rows and backend != "pytorch":
                        speedup = f"x{rows['pytorch']['median_s'] / r['median_s']:.2f} "
                    print(
                        f"{model:9s} {size:9s} {backend:11s} median {r['median_s']:7.2f} s  "
                        f"min {r['min_s']:7.2f} s  cpu {r['cpu_s']:7.2f} s  "
                        f"prepare {r['prepare_s']:6.1f} s  "
                        f"peak RSS {r['peak_mib']:6.0f} MiB  k={r['k']:3d}  {speedup}{match}",
                        flush=True,
                    )
                    if r["profile"]:
                        print(r["profile"], flush=True)


if __name__ == "__main__":
    # worker: one measurement described by a JSON request; prints the result as JSON
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
