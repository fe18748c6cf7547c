"""Quick start: the whole InstaFormer pipeline on a CPU in minutes, with no download.

    python tools/quickstart.py [--output-dir output/quickstart]

1. writes the synthetic twin of InstaOrder Panoptic (tools/make_synthetic_dataset.py) to
   ``DIR/datasets/synthetic_instaorder``, or reuses the one a previous run wrote there when its
   marker file (``quickstart_dataset.json``: generator, parameters, file count and bytes) matches;
   the marker is written before the first dataset file, so only a folder holding it is ever
   replaced: a non-empty folder without it (not the quick start's) is refused;
2. trains InstaFormer^od (configs/synthetic/instaformer_od_tiny.yaml) with the machinery of
   ``train_net.py`` (same trainer, data loader and evaluators) into ``DIR/train``, starting its
   log and metrics afresh; on a CPU whose cores other work shares, see ``--threads``;
3. evaluates it on the synthetic val split (PQ, occlusion, depth) and writes
   ``DIR/eval_results.json``;
4. runs the demo on a few val images into ``DIR/demo/``;
5. prints the results table, the goals (occlusion F1 >= 80, depth WHDR (all) <= 20) and where
   the pictures are. The exit code is 1 when a goal is missed.

``DIR`` is locked for the run (one quick start per folder) and its files follow
mask2former/utils/outputs.py; a refused folder or file exits with status 2 and one message.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

# before torch: importing mask2former chooses the OpenMP wait policy, read when torch loads
from mask2former.utils.threads import ENV_THREADS

# isort: split
import torch

from mask2former.engine.lock import RunLockError
from mask2former.utils.argtypes import int_range
from mask2former.utils.atomic import atomic_write_bytes
from mask2former.utils.outputs import OutputError, OutputFolder

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "synthetic" / "instaformer_od_tiny.yaml"
GOALS = {("occlusion_order", "f1"): (">=", 80.0), ("depth_order", "ovlOX/WHDR_all"): ("<=", 20.0)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", default="output/quickstart", help="where everything goes")
    parser.add_argument(
        "--num-train", type=int_range(1), default=2000, help="synthetic training images"
    )
    parser.add_argument(
        "--num-val", type=int_range(1), default=300, help="synthetic validation images"
    )
    parser.add_argument("--image-size", type=int_range(32), default=96, help="image side (pixels)")
    parser.add_argument(
        "--demo-images", type=int_range(0), default=4, help="val images shown by the demo"
    )
    parser.add_argument(
        "--seed", type=int_range(0), default=0, help="seed of the data and the training"
    )
    parser.add_argument(
        "--threads",
        type=int_range(1),
        default=None,
        help=f"CPU threads (default: the cores available to this process; same as {ENV_THREADS})",
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="KEY VALUE overrides of the training config, e.g. SOLVER.MAX_ITER 200",
    )
    return parser.parse_args(argv)


MARKER = "quickstart_dataset.json"
"""File the quick start writes into the dataset folder once the dataset is complete."""


def _dataset_files(root: Path) -> tuple[int, int]:
    """(number of files, total bytes) under ``root``, the marker excluded."""
    files = [p for p in root.rglob("*") if p.is_file() and p.name != MARKER]
    return len(files), sum(p.stat().st_size for p in files)


def _dataset_params(args: argparse.Namespace) -> dict:
    from instaformer.data import synthetic

    generator = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:16]
    return {
        "generator": generator,
        "num_train": args.num_train,
        "num_val": args.num_val,
        "image_size": args.image_size,
        "seed": args.seed,
    }


def prepare_dataset(data_root: Path, args: argparse.Namespace) -> bool:
    """Write the synthetic twin to ``data_root``, unless the one there was written with the same
    generator and parameters and still holds its files. Returns True when it was reused."""
    from instaformer.data import make_synthetic_dataset

    params = _dataset_params(args)
    marker = data_root / MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            recorded = json.loads(marker.read_text())
        except json.JSONDecodeError:
            recorded = {}
        files, size = _dataset_files(data_root)
        if recorded == {**params, "files": files, "bytes": size}:
            return True
        shutil.rmtree(data_root)  # the quick start's own, partial or different: start clean
    elif data_root.is_symlink() or (data_root.exists() and any(data_root.iterdir())):
        raise OutputError(
            f"{data_root} exists and was not written by the quick start (it has no {MARKER}); "
            "it is left as it is: move or delete it, or choose another --output-dir"
        )
    # the marker first, so that a run killed while writing leaves a folder known as ours
    atomic_write_bytes(marker, json.dumps({**params, "complete": False}).encode())
    make_synthetic_dataset(
        str(data_root),
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        seed=args.seed,
    )
    files, size = _dataset_files(data_root)
    atomic_write_bytes(
        marker, json.dumps({**params, "files": files, "bytes": size}, indent=2).encode()
    )
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be at least 1; got {args.threads}")
        os.environ[ENV_THREADS] = str(args.threads)
    try:
        with OutputFolder(args.output_dir, what="--output-dir", tool="quickstart") as folder:
            return run(args, folder)
    except (OutputError, RunLockError) as err:
        print(f"quickstart: error: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    """Steps 1-5 of the module docstring into ``folder`` (locked)."""
    out = folder.root.resolve()
    datasets_root = out / "datasets"
    os.environ["DETECTRON2_DATASETS"] = str(datasets_root)
    # Imported after DETECTRON2_DATASETS is set, so the registered datasets read it.
    from instaformer.apps.demo_utils import run_on_paths
    from instaformer.data.datasets import SYNTHETIC_SUBDIR
    from instaformer.evaluation import format_results_table
    from instaformer.predictor import Predictor
    from instaformer.train import load_config
    from instaformer.train import main as train_main
    from mask2former.engine import default_argument_parser

    stages = [("start", time.perf_counter())]
    data_root = datasets_root / SYNTHETIC_SUBDIR
    print(f"[1/4] synthetic dataset -> {data_root}")
    if prepare_dataset(data_root, args):
        print(f"      reusing the dataset written by a previous run ({MARKER} matches)")
    stages.append(("dataset", time.perf_counter()))

    train_dir = out / "train"
    print(f"[2/4] training {CONFIG.relative_to(REPO)} -> {train_dir}")
    overrides = ["OUTPUT_DIR", str(train_dir), "SEED", str(args.seed), "MODEL.DEVICE", "cpu"]
    train_args = default_argument_parser().parse_args(
        ["--config-file", str(CONFIG), *overrides, *args.opts]
    )
    # trains, then evaluates on DATASETS.TEST (step 3)
    results = train_main(load_config(train_args), train_args)
    stages.append(("training and evaluation", time.perf_counter()))

    print(f"[3/4] evaluation -> {out / 'eval_results.json'}")
    summary = {k: results[k] for k in ("occlusion_order", "depth_order", "panoptic_seg")}
    folder.write_bytes("eval_results.json", json.dumps(summary, indent=2, sort_keys=True).encode())

    demo_dir = out / "demo"
    print(f"[4/4] demo -> {demo_dir}")
    val_images = sorted((data_root / "coco" / "val2017").glob("*.jpg"))[: args.demo_images]
    predictor = Predictor.from_config_file(  # the trained model: the training's overrides
        CONFIG, weights=str(train_dir / "model_final.pth"), opts=["MODEL.DEVICE", "cpu", *args.opts]
    )
    logging.getLogger("instaformer").setLevel(logging.WARNING)
    report = run_on_paths(predictor, [str(p) for p in val_images], demo_dir, progress=False)
    stages.append(("demo", time.perf_counter()))

    minutes = (stages[-1][1] - stages[0][1]) / 60
    parts = ", ".join(
        f"{name} {(end - begin) / 60:.1f}"
        for (_, begin), (name, end) in zip(stages, stages[1:], strict=False)
    )
    print()
    print(format_results_table(results))
    print()
    missed = []
    for (task, metric), (op, goal) in GOALS.items():
        value = results[task][metric]
        ok = value >= goal if op == ">=" else value <= goal
        missed += [] if ok else [f"{task}/{metric}"]
        print(f"  {task}/{metric} = {value:.2f}  (goal {op} {goal:g}: {'met' if ok else 'MISSED'})")
    print(f"\nDone in {minutes:.1f} min ({parts}) on {torch.get_num_threads()} CPU threads.")
    print(f"Results: {out / 'eval_results.json'}")
    print(f"Pictures ({len(report.written)} images): {demo_dir}")
    print(f"Checkpoint: {train_dir / 'model_final.pth'}; log: {train_dir / 'log.txt'}")
    if missed or report.failed:
        print(f"Missed goals: {missed}; failed demo inputs: {list(report.failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
