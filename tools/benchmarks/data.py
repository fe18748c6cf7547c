"""Mapper throughput (images/s, one process) of instaorder_panoptic on synthetic images.

Writes a small synthetic twin to a temporary folder and times the mapper alone (decode JPEG and
PNG, build masks and matrices; with ``--augment`` also large-scale jitter + flip).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from instaformer.data import make_synthetic_dataset, register_synthetic_instaorder
from instaformer.data.augment import build_lsj_augmentation
from instaformer.data.mapper import InstaOrderPanopticMapper
from mask2former.data.catalog import DatasetCatalog
from mask2former.utils.argtypes import int_range


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-size", type=int_range(1), default=512, help="synthetic image side (px)"
    )
    parser.add_argument(
        "--num-images", type=int_range(1), default=32, help="distinct images to cycle"
    )
    parser.add_argument("--iters", type=int_range(1), default=200, help="mapper calls timed")
    parser.add_argument("--augment", action="store_true", help="also run LSJ + flip")
    parser.add_argument("--lsj-size", type=int_range(1), default=1024, help="LSJ crop side (px)")
    parser.add_argument("--threads", type=int_range(1), default=1, help="torch intra-op threads")


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as root:
        make_synthetic_dataset(
            root, num_train=args.num_images, num_val=0, image_size=args.image_size, seed=0
        )
        register_synthetic_instaorder(root)
        dicts = DatasetCatalog.get("synthetic_instaorder_train")
        augmentation = None
        if args.augment:
            augmentation = build_lsj_augmentation(
                image_size=args.lsj_size, min_scale=0.1, max_scale=2.0, random_flip="horizontal"
            )
        mapper = InstaOrderPanopticMapper(is_train=True, augmentation=augmentation, task="od")
        for record in dicts[:4]:
            mapper(dict(record))
        start = time.perf_counter()
        for i in range(args.iters):
            mapper(dict(dicts[i % len(dicts)]))
        elapsed = time.perf_counter() - start
    mode = f"LSJ {args.lsj_size} + flip" if args.augment else "no augmentation"
    print(
        f"instaorder_panoptic mapper, {args.image_size}x{args.image_size} synthetic, {mode}, "
        f"{args.threads} thread(s): {args.iters / elapsed:.1f} images/s "
        f"({1000 * elapsed / args.iters:.2f} ms/image)"
    )
