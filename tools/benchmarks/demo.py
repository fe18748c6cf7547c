"""Demo latency per 512x512 image: prediction and pictures+JSON, tiny config and a real config.

Random-init weights (latency does not depend on them, apart from the number of segments, which
is reported): the object threshold is lowered so that every image yields segments. Images are
synthetic scenes (stuff bands and overlapping rectangles). Figures are medians over
``--repeats`` images after one warm-up image.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import cv2
import numpy as np
import torch

from instaformer.config import get_cfg
from instaformer.demo_utils import save_result
from instaformer.predictor import Predictor

DEFAULT_CONFIG = "configs/instaorder/occlusion_depth/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml"

TINY_OPTS = [
    "MODEL.BACKBONE.NAME", "D2SwinTransformer",
    "MODEL.SWIN.EMBED_DIM", "16",
    "MODEL.SWIN.DEPTHS", "[1, 1, 1, 1]",
    "MODEL.SWIN.NUM_HEADS", "[1, 1, 1, 1]",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", "2",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "10",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
    "MODEL.MASK_FORMER.DEC_LAYERS", "2",
    "MODEL.MASK_FORMER.NHEADS", "2",
]  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, help="the 'full' model config")
    parser.add_argument("--which", choices=["tiny", "full", "both"], default="both")
    parser.add_argument("--size", type=int, default=512, help="square image side (pixels)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed images")
    parser.add_argument("--threshold", type=float, default=0.0, help="OBJECT_MASK_THRESHOLD")
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


def _measure(name: str, cfg, args: argparse.Namespace) -> None:
    predictor = Predictor(cfg)
    images = [_scene(args.size, i) for i in range(args.repeats + 1)]
    predict, render, segments = [], [], []
    with tempfile.TemporaryDirectory() as out:
        for i, image in enumerate(images):
            t0 = time.perf_counter()
            result = predictor(image)
            if predictor.device.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            save_result(image, result, out, f"img{i}")
            t2 = time.perf_counter()
            if i > 0:
                predict.append(t1 - t0)
                render.append(t2 - t1)
                segments.append(len(result.segments))
    print(
        f"{name:5s} {args.size}x{args.size} on {predictor.device} ({args.threads} threads): "
        f"predict {statistics.median(predict) * 1e3:.0f} ms, pictures+json "
        f"{statistics.median(render) * 1e3:.0f} ms, thing segments {statistics.median(segments)} "
        f"(tasks: {', '.join(predictor.tasks) or 'none'}; model {type(predictor.model).__name__})"
    )


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    common = [
        "MODEL.DEVICE", args.device,
        "MODEL.WEIGHTS", "",
        "INPUT.MIN_SIZE_TEST", str(args.size),
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", str(args.threshold),
    ]  # fmt: skip
    if args.which in ("full", "both"):
        cfg = get_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(common + list(args.opts))
        _measure("full", cfg, args)
    if args.which in ("tiny", "both"):
        cfg = get_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(TINY_OPTS + common + list(args.opts))
        _measure("tiny", cfg, args)
