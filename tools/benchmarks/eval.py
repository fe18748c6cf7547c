"""Order evaluators (occlusion + depth): time to process and evaluate a synthetic val set.

Each synthetic image has n instances (uniform in 1..--max-instances) with random GT and
predicted matrices stored as torch int tensors, as the model and the mapper produce them.
Generation is not timed; the figure is reset + process (one image per call) + evaluate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from instaformer.evaluation import DepthEvaluator, OcclusionEvaluator
from mask2former.utils.argtypes import int_range


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images", type=int_range(1), default=5000, help="number of synthetic images"
    )
    parser.add_argument(
        "--max-instances", type=int_range(1), default=20, help="largest n per image"
    )
    parser.add_argument("--threads", type=int_range(1), default=1, help="torch intra-op threads")
    parser.add_argument("--multi-scale", action="store_true", help="per-n breakdown as well")
    parser.add_argument("--seed", type=int_range(0), default=0)


def _symmetric(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    upper = np.triu(rng.integers(low, high, size=(n, n)), 1)
    matrix = upper + upper.T
    np.fill_diagonal(matrix, -1)
    return matrix


def synthetic_samples(
    num_images: int, max_instances: int, seed: int
) -> list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """(input, output) pairs with occlusion and depth GT/predictions, Tensor[n, n] int32."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(num_images):
        n = int(rng.integers(1, max_instances + 1))
        occlusion = (rng.random((n, n)) < 0.15).astype(np.int32)
        np.fill_diagonal(occlusion, 0)
        nearer = rng.integers(0, 3, size=(n, n))  # 0 farther, 1 nearer, 2 equal (upper part)
        depth = np.triu(nearer, 1)
        depth = depth + np.where(depth.T == 2, 2, 1 - depth.T) * np.tril(np.ones((n, n), int), -1)
        np.fill_diagonal(depth, -1)
        pred_occlusion = (rng.random((n, n)) < 0.2).astype(np.int32)
        np.fill_diagonal(pred_occlusion, -1)
        pred_depth = rng.integers(0, 3, size=(n, n))
        np.fill_diagonal(pred_depth, -1)
        inputs = {
            "image_id": len(samples),
            "occlusion_matrix": torch.from_numpy(occlusion),
            "depth_matrix": torch.from_numpy(depth.astype(np.int32)),
            "overlap_matrix": torch.from_numpy(_symmetric(rng, n, 0, 2).astype(np.int32)),
            "count_matrix": torch.from_numpy(_symmetric(rng, n, 1, 4).astype(np.int32)),
        }
        outputs = {
            "occlusion": torch.from_numpy(pred_occlusion),
            "depth": torch.from_numpy(pred_depth.astype(np.int32)),
        }
        samples.append((inputs, outputs))
    return samples


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    samples = synthetic_samples(args.images, args.max_instances, args.seed)
    evaluators = {
        "occlusion": OcclusionEvaluator(multi_scale_evaluation=args.multi_scale),
        "depth": DepthEvaluator(multi_scale_evaluation=args.multi_scale),
    }
    total = 0.0
    for name, evaluator in evaluators.items():
        start = time.perf_counter()
        evaluator.reset()
        for inputs, outputs in samples:
            evaluator.process([inputs], [outputs])
        results = evaluator.evaluate()
        elapsed = time.perf_counter() - start
        total += elapsed
        task = next(iter(results))
        print(f"{name:9s} {elapsed:7.3f} s  ({1e6 * elapsed / args.images:.1f} us/image)")
        print(f"          {task}: " + ", ".join(f"{k}={v:.3f}" for k, v in results[task].items()))
    print(
        f"total     {total:7.3f} s for {args.images} images, n <= {args.max_instances}, "
        f"{args.threads} thread(s)"
    )
