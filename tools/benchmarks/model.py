"""Inference time and peak memory of the full-size Mask2Former part (Swin-T, R50, timm configs).

Times backbone + pixel decoder + transformer decoder (``model.run_network``) on a normalised
random image, random initial weights, float32, under ``torch.inference_mode``; reports the
median and minimum of ``--repeats`` runs after one warm-up. The timm configs
(``configs/instaorder/occlusion_depth/all/timm/``) are built with ``MODEL.TIMM.PRETRAINED``
False: random weights, no download, the same network. Each config is measured in a fresh
Python process, so that peak memory means something on CPU too:

* CPU: the process's peak resident set size (``ru_maxrss``) after the runs, and its growth over
  the peak reached once the model was built (what inference adds on top of the weights);
* CUDA: the caching allocator's peak (``torch.cuda.max_memory_allocated``) during the runs.

``--clock process`` times with the process CPU time (all threads) instead of wall time: on a
machine shared with other jobs it tracks the work done rather than the waiting.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from mask2former.utils.argtypes import int_range

ROOT = Path(__file__).resolve().parents[2]
TIMM = "configs/instaorder/occlusion_depth/all/timm"
CONFIGS = {
    "swin-t": "configs/instaorder/occlusion_depth/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
    "r50": "configs/instaorder/maskformer2_R50_bs16_50ep.yaml",
    "convnext-t": f"{TIMM}/maskformer2_convnext_tiny_bs16_50ep.yaml",
    "vit-s14-dinov2": f"{TIMM}/maskformer2_vit_small_patch14_dinov2_bs16_50ep.yaml",
    "vit-s14-dinov2-adapters": (
        f"{TIMM}/maskformer2_vit_small_patch14_dinov2_adapters_bs16_50ep.yaml"
    ),
    "tiny-timm": "configs/synthetic/instaformer_od_tiny_timm.yaml",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["swin-t", "r50"], choices=list(CONFIGS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int_range(1), default=2, help="CPU threads (torch)")
    parser.add_argument("--size", type=int_range(1), default=512, help="square input side (pixels)")
    parser.add_argument(
        "--repeats", type=int_range(1), default=5, help="timed runs (median reported)"
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "process"),
        default="wall",
        help="wall: elapsed time; process: CPU time of the process (CPU only)",
    )


def _build(config: str, device: str) -> torch.nn.Module:
    import mask2former.modeling  # noqa: F401  (registers the modules)
    from instaformer.config import get_cfg
    from mask2former.modeling.registry import META_ARCH_REGISTRY

    cfg = get_cfg()
    cfg.merge_from_file(str(ROOT / config))
    cfg.MODEL.GEOMETRIC_PREDICTOR.NAME = ""
    cfg.MODEL.TIMM.PRETRAINED = False  # random weights: no download, the same network
    torch.manual_seed(0)
    return META_ARCH_REGISTRY.get("MaskFormer")(cfg).to(device).eval()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _max_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    name: str, *, device: str, size: int, repeats: int, threads: int, clock: str = "wall"
) -> dict[str, float]:
    """Time one config in this process.

    Returns:
        ``{"median_s", "min_s", "peak_mib", "growth_mib"}``: times of ``run_network``; peak
        memory (CPU: process max-RSS; CUDA: allocator peak) and, on CPU, its growth over the
        peak after building the model (0 on CUDA).
    """
    torch.set_num_threads(threads)
    now = time.process_time if clock == "process" else time.perf_counter
    model = _build(CONFIGS[name], device)
    x = torch.randn(1, 3, size, size, device=device)
    rss_built = _max_rss_mib()
    times = []
    with torch.inference_mode():
        model.run_network(x)  # warm-up
        _sync(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        for _ in range(repeats):
            start = now()
            model.run_network(x)
            _sync(device)
            times.append(now() - start)
    if device.startswith("cuda"):
        peak, growth = torch.cuda.max_memory_allocated() / 2**20, 0.0
    else:
        peak = _max_rss_mib()
        growth = peak - rss_built
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "peak_mib": peak,
        "growth_mib": growth,
    }


def _measure_in_subprocess(name: str, args: argparse.Namespace) -> dict[str, float]:
    request = {
        "name": name,
        "device": args.device,
        "size": args.size,
        "repeats": args.repeats,
        "threads": args.threads,
        "clock": args.clock,
    }
    from benchmark import run_script_json  # tools/benchmark.py, the entry point

    return run_script_json(__file__, request)


def run(args: argparse.Namespace) -> None:
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if device.startswith("cuda") and args.clock == "process":
        raise SystemExit("--clock process measures CPU time; use --clock wall with --device cuda")
    label = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu x{args.threads}"
    print(
        f"device: {label}; input {args.size}x{args.size}; float32; median of {args.repeats}; "
        f"clock {args.clock}; one fresh process per model"
    )
    for name in args.models:
        r = _measure_in_subprocess(name, args)
        memory = (
            f"peak {r['peak_mib']:7.0f} MiB allocated"
            if device.startswith("cuda")
            else f"peak RSS {r['peak_mib']:7.0f} MiB (+{r['growth_mib']:.0f} MiB over the model)"
        )
        print(
            f"{name:23s} median {r['median_s'] * 1000:8.1f} ms  min {r['min_s'] * 1000:8.1f} ms  "
            f"{memory}"
        )


if __name__ == "__main__":
    # worker: one measurement described by a JSON request; prints the result as JSON
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
