"""Demo latency per 512x512 image: prediction and pictures+JSON, tiny od and full Swin-T od.

Random-init weights (latency does not depend on them, apart from the number of segments, which
is reported): the object and overlap thresholds are lowered so that every image yields segments
and the order head runs. Images are synthetic scenes (stuff bands and overlapping rectangles).
Figures are medians over ``--repeats`` images after one warm-up image: wall-clock time and the
process CPU time (all threads; steadier than wall time on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import cv2
import numpy as np
import torch

from instaformer.apps.demo_utils import save_result
from instaformer.config import setup_cfg
from instaformer.predictor import Predictor
from mask2former.config import CfgNode
from mask2former.utils.argtypes import float_range, int_range

FULL_CONFIG = "configs/instaorder/occlusion_depth/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml"
TINY_CONFIG = "configs/synthetic/instaformer_od_tiny.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-file", default=FULL_CONFIG, help="the 'full' model config")
    parser.add_argument("--tiny-config-file", default=TINY_CONFIG, help="the 'tiny' model config")
    parser.add_argument("--which", choices=["tiny", "full", "both"], default="both")
    parser.add_argument("--size", type=int_range(1), default=512, help="square image side (pixels)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int_range(1), default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int_range(1), default=5, help="timed images")
    parser.add_argument(
        "--threshold", type=float_range(0.0, 1.0), default=0.0, help="OBJECT_MASK_THRESHOLD"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides (both)")


def _scene(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), np.uint8)
    image[: size // 2] = (135, 190, 235)
    image[size // 2 :] = (90, 160, 70)
    for _ in range(8):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(size // 10, size // 3, 2)
        cv2.rectangle(
            image, (int(x), int(y)), (int(x + w), int(y + h)), rng.integers(0, 255, 3).tolist(), -1
        )
    return image


def _measure(name: str, cfg: CfgNode, args: argparse.Namespace) -> None:
    predictor = Predictor(cfg)
    images = [_scene(args.size, i) for i in range(args.repeats + 1)]
    predict, predict_cpu, render, segments = [], [], [], []
    with tempfile.TemporaryDirectory() as out:
        for i, image in enumerate(images):
            t0, c0 = time.perf_counter(), time.process_time()
            result = predictor(image)
            if predictor.device.type == "cuda":
                torch.cuda.synchronize()
            t1, c1 = time.perf_counter(), time.process_time()
            save_result(image, result, out, f"img{i}")
            t2 = time.perf_counter()
            if i > 0:
                predict.append(t1 - t0)
                predict_cpu.append(c1 - c0)
                render.append(t2 - t1)
                segments.append(len(result.segments))
    print(
        f"{name:5s} {args.size}x{args.size} on {predictor.device} ({args.threads} threads): "
        f"predict {statistics.median(predict) * 1e3:.0f} ms (process CPU "
        f"{statistics.median(predict_cpu) * 1e3:.0f} ms), pictures+json "
        f"{statistics.median(render) * 1e3:.0f} ms, thing segments per image {segments} "
        f"(tasks: {', '.join(predictor.tasks) or 'none'}; model {type(predictor.model).__name__})"
    )


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    common = [
        "MODEL.DEVICE", args.device,
        "MODEL.WEIGHTS", "",
        "INPUT.MIN_SIZE_TEST", str(args.size),
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", str(args.threshold),
        "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0",
    ]  # fmt: skip
    chosen = {"tiny": ["tiny"], "full": ["full"], "both": ["tiny", "full"]}[args.which]
    files = {"tiny": args.tiny_config_file, "full": args.config_file}
    for name in chosen:
        torch.manual_seed(0)
        _measure(name, setup_cfg(files[name], common + list(args.opts)), args)
