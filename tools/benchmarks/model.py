"""Inference time and peak memory of the full-size Mask2Former part (Swin-T and R50 configs).

Times backbone + pixel decoder + transformer decoder (``model.run_network``) on a normalised
random image, random initial weights, float32; reports the median of ``--repeats`` runs after
one warm-up, and the peak memory (CUDA allocator peak on GPU, process max-RSS growth on CPU).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

CONFIGS = {
    "swin-t": "configs/instaorder/occlusion_depth/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
    "r50": "configs/instaorder/maskformer2_R50_bs16_50ep.yaml",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument("--size", type=int, default=512, help="square input side (pixels)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")


def _build(config: str, device: str):
    from instaformer.config import get_cfg
    from mask2former.modeling.registry import META_ARCH_REGISTRY

    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.GEOMETRIC_PREDICTOR.NAME = ""
    torch.manual_seed(0)
    return META_ARCH_REGISTRY.get("MaskFormer")(cfg).to(device).eval()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(name: str, *, device: str, size: int, repeats: int) -> dict[str, float]:
    """``{"median_s", "min_s", "peak_mib"}`` for one config."""
    import mask2former.modeling  # noqa: F401

    model = _build(CONFIGS[name], device)
    x = torch.randn(1, 3, size, size, device=device)
    times = []
    with torch.inference_mode():
        model.run_network(x)  # warm-up
        _sync(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(repeats):
            start = time.perf_counter()
            model.run_network(x)
            _sync(device)
            times.append(time.perf_counter() - start)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return {"median_s": statistics.median(times), "min_s": min(times), "peak_mib": peak}


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    label = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu x{args.threads}"
    print(f"device: {label}; input {args.size}x{args.size}; float32; median of {args.repeats}")
    for name in args.models:
        r = measure(name, device=device, size=args.size, repeats=args.repeats)
        print(
            f"{name:7s} median {r['median_s'] * 1000:8.1f} ms  min {r['min_s'] * 1000:8.1f} ms  "
            f"peak {r['peak_mib']:8.1f} MiB (CPU: max-RSS growth after warm-up)"
        )
