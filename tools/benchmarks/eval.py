"""Evaluators: time per image of each one, this checkout side by side with another version.

Shape shorthand: H, W image size, C semantic classes (133), K predicted instances.

Writes a synthetic validation split (the twin of InstaOrder Panoptic that
``tools/make_synthetic_dataset.py`` writes, ``--size H W``, up to 8 things per image) into
``--work-dir`` (a new temporary folder by default), turns its records into evaluator inputs
with the test mapper, and runs the five evaluators of an InstaFormer evaluation (panoptic PQ,
mask AP, semantic mIoU, occlusion and depth order; prediction files written, as in
``train_net.py --eval-only``) on model-like outputs made from the ground truth, in the same
way in every run (a function of the image and ``--seed``; making them is not timed):

* ``panoptic_seg``: the GT segments moved by up to 6 px, one in ten dropped (void), one in
  ten relabelled;
* ``instances``: ``--masks`` float32 0/1 masks Tensor[K, H, W] (the GT things moved by up to
  10 px, then rectangles), random scores and thing classes;
* ``sem_seg``: float32 Tensor[C, H, W] uniform scores plus 1 at the class of the panoptic
  prediction;
* ``occlusion``, ``depth``: random 0/1 and 0/1/2 matrices of the GT's size.

Each version runs in a fresh process (``--rounds`` times, alternating which goes first, so
both see the same machine load): ``--warmup`` images are processed and forgotten (``reset``),
then ``process`` is timed per evaluator and image (wall clock and process CPU time), then
``evaluate``. Reported: medians over the rounds and the before/after ratios. The outputs of
the two versions must be identical: ``eval_results.json`` (the results as ``train_net.py``
writes them) and every prediction JSON byte for byte, the prediction PNGs pixel for pixel;
the command fails otherwise.

``--before REV``: the "before" side runs the ``mask2former`` and ``instaformer`` packages of
git revision REV (extracted with ``git archive`` into the work folder); without it only this
checkout is measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATASET = "synthetic_instaorder_val"
CONFIG = "configs/synthetic/instaformer_od_tiny.yaml"  # its test mapper makes the inputs
EVALUATORS = (
    "COCOPanopticEvaluator",
    "COCOInstanceEvaluator",
    "SemSegEvaluator",
    "OcclusionEvaluator",
    "DepthEvaluator",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Imported here: the worker processes of this script may run another version's packages.
    from mask2former.utils.argtypes import int_range

    parser.add_argument("--images", type=int_range(1), default=20, help="timed images")
    parser.add_argument(
        "--warmup", type=int_range(0), default=2, help="images processed before timing"
    )
    parser.add_argument(
        "--size", type=int_range(16), nargs=2, default=(480, 640), metavar=("H", "W")
    )
    parser.add_argument(
        "--masks", type=int_range(1), default=50, help="predicted instances per image"
    )
    parser.add_argument(
        "--rounds", type=int_range(1), default=3, help="runs of each version (median)"
    )
    parser.add_argument("--before", default=None, metavar="REV", help="git revision to compare")
    parser.add_argument("--threads", type=int_range(1), default=1, help="torch and OpenCV threads")
    parser.add_argument("--seed", type=int_range(0), default=0)
    parser.add_argument(
        "--work-dir", default=None, help="folder for the data and outputs (default: temporary)"
    )


# ---------------------------------------------------------------------------------------------
# Worker: one version, one fresh process.


def _outputs(inp: dict[str, Any], num_masks: int, num_classes: int, seed: int) -> dict:
    """Model-like outputs of one image, made from its ground truth (see the module docstring)."""
    import torch
    from PIL import Image

    from mask2former.structures import Instances

    rng = np.random.default_rng([seed, int(inp["image_id"])])
    rgb = np.asarray(Image.open(inp["pan_seg_file_name"]).convert("RGB")).astype(np.int64)
    gt = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    h, w = gt.shape
    moved = np.roll(gt, tuple(rng.integers(-6, 7, size=2)), axis=(0, 1))
    pan = np.zeros((h, w), dtype=np.int32)
    classes_map = np.zeros((h, w), dtype=np.int64)
    segments = []
    for k, seg in enumerate(inp["segments_info"]):
        if rng.random() < 0.1:
            continue
        category = int(seg["category_id"])
        if rng.random() < 0.1:
            category = int(rng.integers(0, 80) if seg["isthing"] else rng.integers(80, num_classes))
        region = moved == seg["id"]
        pan[region] = k + 1
        classes_map[region] = category
        segments.append({"id": k + 1, "isthing": bool(seg["isthing"]), "category_id": category})

    things = [s for s in inp["segments_info"] if s["isthing"]]
    masks = np.zeros((num_masks, h, w), dtype=np.float32)
    pred_classes = rng.integers(0, 80, size=num_masks)
    for q in range(num_masks):
        if q < len(things):
            shift = tuple(rng.integers(-10, 11, size=2))
            masks[q] = np.roll(gt == things[q]["id"], shift, axis=(0, 1))
            pred_classes[q] = things[q]["category_id"]
        else:
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            masks[q, y : y + rng.integers(4, h // 2), x : x + rng.integers(4, w // 2)] = 1
    instances = Instances(
        (h, w),
        pred_masks=torch.from_numpy(masks),
        scores=torch.from_numpy(rng.random(num_masks).astype(np.float32)),
        pred_classes=torch.from_numpy(pred_classes),
    )
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    sem_seg = torch.rand((num_classes, h, w), generator=generator)
    sem_seg.view(num_classes, -1)[
        torch.from_numpy(classes_map.reshape(-1)), torch.arange(h * w)
    ] += 1
    k = inp["occlusion_matrix"].shape[0]
    return {
        "panoptic_seg": (torch.from_numpy(pan), segments),
        "instances": instances,
        "sem_seg": sem_seg,
        "occlusion": torch.from_numpy(rng.integers(0, 2, size=(k, k)).astype(np.int32)),
        "depth": torch.from_numpy(rng.integers(0, 3, size=(k, k)).astype(np.int32)),
    }


def _file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``: of the bytes for JSON, of the pixels for PNGs."""
    from PIL import Image

    digests = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".png":
            pixels = np.asarray(Image.open(path).convert("RGB"))
            data = repr(pixels.shape).encode() + pixels.tobytes()
        else:
            data = path.read_bytes()
        digests[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return digests


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """Run the evaluators of one version in this process (see the module docstring)."""
    import cv2
    import torch

    from instaformer.evaluation import DepthEvaluator, OcclusionEvaluator, write_results
    from mask2former.evaluation import (
        COCOInstanceEvaluator,
        COCOPanopticEvaluator,
        SemSegEvaluator,
    )

    torch.set_num_threads(request["threads"])
    cv2.setNumThreads(request["threads"])
    out_dir = Path(request["out_dir"])
    thing_map = {int(k): int(v) for k, v in request["thing_map"]}
    stuff_map = {int(k): int(v) for k, v in request["stuff_map"]}
    gt = {"gt_json": request["gt_json"], "gt_folder": request["gt_folder"]}
    evaluators = {
        "COCOPanopticEvaluator": COCOPanopticEvaluator(
            output_dir=str(out_dir),
            thing_dataset_id_to_contiguous_id=thing_map,
            stuff_dataset_id_to_contiguous_id=stuff_map,
            **gt,
        ),
        "COCOInstanceEvaluator": COCOInstanceEvaluator(
            output_dir=str(out_dir), thing_dataset_id_to_contiguous_id=thing_map, **gt
        ),
        "SemSegEvaluator": SemSegEvaluator(
            num_classes=request["num_classes"], ignore_label=request["ignore_label"]
        ),
        "OcclusionEvaluator": OcclusionEvaluator(output_dir=str(out_dir)),
        "DepthEvaluator": DepthEvaluator(output_dir=str(out_dir)),
    }
    # Our own file, written by the parent process: tensors, lists and plain values only.
    inputs = torch.load(request["inputs"], weights_only=True)
    warmup, timed = inputs[: request["warmup"]], inputs[request["warmup"] :]

    def outputs(inp: dict[str, Any]) -> dict[str, Any]:
        return _outputs(inp, request["masks"], request["num_classes"], request["seed"])

    for inp in warmup:
        out = outputs(inp)
        for evaluator in evaluators.values():
            evaluator.process([inp], [out])
    wall = dict.fromkeys(evaluators, 0.0)
    cpu = dict.fromkeys(evaluators, 0.0)
    for evaluator in evaluators.values():
        evaluator.reset()
    for inp in timed:
        out = outputs(inp)
        for name, evaluator in evaluators.items():
            w0, c0 = time.perf_counter(), time.process_time()
            evaluator.process([inp], [out])
            wall[name] += time.perf_counter() - w0
            cpu[name] += time.process_time() - c0
    evaluate = {}
    results: dict[str, Any] = {}
    for name, evaluator in evaluators.items():
        w0 = time.perf_counter()
        results.update(evaluator.evaluate())
        evaluate[name] = time.perf_counter() - w0
    write_results(results, str(out_dir))
    return {
        "images": len(timed),
        "process_s": wall,
        "process_cpu_s": cpu,
        "evaluate_s": evaluate,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "files": _file_digests(out_dir),
    }


# ---------------------------------------------------------------------------------------------
# Parent: data, versions, rounds, table.


def _prepare_inputs(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Write the dataset and the mapped inputs; return the worker's request fields."""
    import torch

    from instaformer.config import get_cfg
    from instaformer.data import (
        build_dataset_mapper,
        make_synthetic_dataset,
        register_synthetic_instaorder,
    )
    from mask2former.data.catalog import DatasetCatalog, MetadataCatalog

    root = work / "data"
    count = args.warmup + args.images
    make_synthetic_dataset(
        str(root),
        num_train=0,
        num_val=count,
        image_size=(args.size[0], args.size[1]),
        seed=args.seed,
        max_objects=8,
    )
    register_synthetic_instaorder(str(root))
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / CONFIG))
    mapper = build_dataset_mapper(cfg, is_train=False)
    inputs = []
    for record in DatasetCatalog.get(DATASET)[:count]:
        item = mapper(record)
        for unused in ("image", "instances"):  # not read by the evaluators
            item.pop(unused, None)
        inputs.append(item)
    torch.save(inputs, work / "inputs.pt")
    meta = MetadataCatalog.get(DATASET)
    return {
        "inputs": str(work / "inputs.pt"),
        "gt_json": meta.panoptic_json,
        "gt_folder": meta.panoptic_root,
        "thing_map": sorted(meta.thing_dataset_id_to_contiguous_id.items()),
        "stuff_map": sorted(meta.stuff_dataset_id_to_contiguous_id.items()),
        "num_classes": len(meta.stuff_classes),
        "ignore_label": int(meta.ignore_label),
        "warmup": args.warmup,
        "masks": args.masks,
        "seed": args.seed,
        "threads": args.threads,
    }


def run(args: argparse.Namespace) -> None:
    from benchmark import (  # tools/benchmark.py, the entry point
        extract_revision,
        load_average,
        run_script_json,
    )

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="eval_benchmark_"))
    work.mkdir(parents=True, exist_ok=True)
    load_start = load_average()
    request = _prepare_inputs(args, work)
    versions: dict[str, Path] = {"after": REPO}
    if args.before:
        extract_revision(args.before, work / "before", ("mask2former", "instaformer"))
        versions = {"before": work / "before", **versions}
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in versions}
    for r in range(args.rounds):
        order = list(versions) if r % 2 == 0 else list(reversed(versions))
        for version in order:
            out_dir = work / f"out_{version}"
            shutil.rmtree(out_dir, ignore_errors=True)
            runs[version].append(
                run_script_json(
                    __file__, {**request, "out_dir": str(out_dir)}, code_root=versions[version]
                )
            )
    load_end = load_average()

    def per_image_ms(version: str, key: str, name: str) -> float:
        return statistics.median(1000 * r[key][name] / r["images"] for r in runs[version])

    h, w = args.size
    print(
        f"{args.images} images {h}x{w} (+{args.warmup} warm-up), {args.masks} masks, "
        f"{request['num_classes']} classes; {args.threads} thread(s); median of {args.rounds} "
        f"round(s), one fresh process per run; load average {load_start} (start), "
        f"{load_end} (end)"
    )
    for version in versions:
        for r in runs[version]:
            for key in ("process_s", "process_cpu_s"):
                r[key]["all"] = sum(r[key].values())
    columns = [f"{v} ms{c}" for v in versions for c in ("", " (CPU)")]
    if args.before:
        columns += ["before/after", "(CPU)"]
    print(f"{'process() per image':24s}" + "".join(f"{c:>16s}" for c in columns))
    for name in [*EVALUATORS, "all"]:
        cells = [
            f"{per_image_ms(v, key, name):.2f}"
            for v in versions
            for key in ("process_s", "process_cpu_s")
        ]
        if args.before:
            cells += [
                f"{per_image_ms('before', key, name) / per_image_ms('after', key, name):.1f}x"
                for key in ("process_s", "process_cpu_s")
            ]
        print(f"{name:24s}" + "".join(f"{c:>16s}" for c in cells))
    print(f"{'evaluate() s':24s}" + "".join(f"{v:>16s}" for v in versions))
    for name in EVALUATORS:
        cells = [
            f"{statistics.median(r['evaluate_s'][name] for r in runs[v]):.3f}" for v in versions
        ]
        print(f"{name:24s}" + "".join(f"{c:>16s}" for c in cells))
    print(
        "peak RSS MiB: "
        + ", ".join(f"{v} {max(r['peak_rss_mib'] for r in runs[v]):.0f}" for v in versions)
    )
    if args.before:
        before, after = runs["before"][0]["files"], runs["after"][0]["files"]
        differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        pngs = sum(k.endswith(".png") for k in after)
        if differ:
            raise SystemExit(f"outputs differ between before and after: {differ}")
        print(
            f"outputs identical: {len(after) - pngs} JSON files (eval_results.json, predictions) "
            f"byte for byte, {pngs} PNGs pixel for pixel"
        )
    if not args.work_dir:
        shutil.rmtree(work)


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
