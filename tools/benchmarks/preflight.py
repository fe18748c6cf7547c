"""Cost of train_net.py's pre-flight check on a training set of many records (default 101,000,
the size of InstaOrder Panoptic train).

Writes a small synthetic twin to a temporary folder, then repeats its training records up to
``--records`` (new image ids and file names; the images and PNGs are hard links, so every
``stat`` finds a real file) and times, side by side in this one process: parsing the JSON
alone, the dataset loader (which the training processes run anyway; it includes the duplicate
check), the duplicate check alone, the ``stat`` of every image and PNG (one thread and the
check's pool) and the whole pre-flight check (:func:`instaformer.preflight.check_run`) of the
synthetic InstaFormer config. Peak resident memory is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from instaformer.data import make_synthetic_dataset
from instaformer.data.datasets import SYNTHETIC_SUBDIR
from instaformer.data.duplicates import check_panoptic_duplicates
from mask2former.preflight import missing_files
from mask2former.utils.argtypes import int_range

CONFIG = "synthetic/instaformer_od_tiny.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--records", type=int_range(1), default=101_000, help="training records to check"
    )
    parser.add_argument("--repeats", type=int_range(1), default=3, help="timed runs (median)")


def _grow(coco: Path, records: int) -> int:
    """Repeat the training records of the twin in ``coco`` up to ``records``; returns the JSON
    size in bytes."""
    path = coco / "annotations" / "InstaOrderPanoptic_train2017.json"
    data = json.loads(path.read_text())
    images, annotations = data["images"], data["annotations"]
    grown_images, grown_annotations = [], []
    for index in range(records):
        image, ann = images[index % len(images)], annotations[index % len(annotations)]
        image_id = 10_000_000 + index
        stem = f"{image_id:012d}"
        os.link(coco / "train2017" / image["file_name"], coco / "train2017" / f"{stem}.jpg")
        os.link(
            coco / "panoptic_train2017" / ann["file_name"],
            coco / "panoptic_train2017" / f"{stem}.png",
        )
        grown_images.append({**image, "id": image_id, "file_name": f"{stem}.jpg"})
        grown_annotations.append({**ann, "image_id": image_id, "file_name": f"{stem}.png"})
    data["images"], data["annotations"] = grown_images, grown_annotations
    path.write_text(json.dumps(data))
    return path.stat().st_size


def _median(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(args: argparse.Namespace) -> None:
    from instaformer.config import setup_cfg
    from instaformer.preflight import check_run
    from instaformer.train import parse_args
    from mask2former.data.catalog import DatasetCatalog

    with tempfile.TemporaryDirectory() as root:
        coco = Path(root) / SYNTHETIC_SUBDIR / "coco"
        make_synthetic_dataset(str(coco.parent), num_train=50, num_val=4, image_size=64, seed=0)
        size = _grow(coco, args.records)
        os.environ["DETECTRON2_DATASETS"] = root
        json_file = coco / "annotations" / "InstaOrderPanoptic_train2017.json"
        parsed = json.loads(json_file.read_text())
        records = DatasetCatalog.get("synthetic_instaorder_train")
        paths = [r["file_name"] for r in records] + [r["pan_seg_file_name"] for r in records]
        cfg = setup_cfg(CONFIG)
        command = parse_args(["--config-file", CONFIG])
        rows = {
            "parse the JSON (json.loads)": lambda: json.loads(json_file.read_text()),
            "dataset loader (incl. duplicate check)": lambda: DatasetCatalog.get(
                "synthetic_instaorder_train"
            ),
            "duplicate check alone": lambda: check_panoptic_duplicates(parsed, str(json_file)),
            f"stat {len(paths)} files, 1 thread": lambda: missing_files(paths, threads=1),
            f"stat {len(paths)} files, pool": lambda: missing_files(paths),
            "whole pre-flight check (train + val)": lambda: check_run(cfg, command),
        }
        print(
            f"pre-flight on {args.records} training records ({size / 1e6:.0f} MB JSON), "
            f"median of {args.repeats}, load average {os.getloadavg()[0]:.1f}:"
        )
        loader = None
        for name, fn in rows.items():
            seconds = _median(fn, args.repeats)
            loader = seconds if name.startswith("dataset loader") else loader
            ratio = f" ({seconds / loader:.2f}x the loader)" if loader else ""
            print(f"  {name:42s} {seconds:7.3f} s{ratio}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of this process: {peak:.0f} MiB")
