"""Dataset scale: annotation memory, start-up and mapper throughput, record cache off vs on.

Writes under ``--work-dir`` (default ``output/benchmark_data``, outside git):

* a pool of rendered synthetic images (the synthetic twin: ``--pool-images`` 480 x 640 images,
  up to 14 things each, about 9 segments and 26 order entries per image);
* scale sets with InstaOrder's statistics that reuse the pool's images under new image ids
  (``--records`` images, InstaOrder's 101K by default): InstaOrder Panoptic (InstaFormer) and
  InstaOrder + COCO instances (InstaOrderNet), whose instances are COCO polygons, about 8.5 per
  image (COCO's 860K at 101K images), of which InstaOrder's records name the things.

Then every measurement runs in fresh processes (``tools/benchmarks/_data_measure.py``), for the
record cache off (``DATALOADER.RECORD_CACHE False``: the JSON parsed in every process, the
loaders as they were before the cache) and on, one after the other:

* ``load`` (one process): start-up (dataset dicts, empty images dropped, aspect-ratio groups, the
  first item; InstaOrderNet: its training items), peak RSS, the dataset's memory in the process
  (USS / PSS growth, ``/proc/self/smaps_rollup``) and the cost of one ``MapDataset`` item; for
  the cache: a first build and a warm start.
* ``run`` (R ranks started as training starts them, gloo, x W workers): every worker reads its
  share of one epoch of records through ``MapDataset``. Each worker's USS growth over the epoch
  from before it held the dataset: a forked worker (one rank) from its first item; a spawned one
  (the ranks' workers, as ``launch`` starts them) from before the dataset was unpickled in it.
  The same loader over a one-record list gives the loader's own growth (the control). The
  memory held for annotations: the ranks' PSS growth while loading plus the workers' growth
  beyond the control, compared with one copy: the dataset's PSS in one process alone
  (``load``).
* ``mapper`` (panoptic; R ranks x W workers): the ``instaorder_panoptic`` training mapper's
  images/s at 480 x 640 (no augmentation) and with the released LSJ recipe (1024, scale 0.1-2,
  flip) over ``--mapper-images`` images per rank, timed once every worker has delivered its
  first batch; today's path (``MapDataset`` over a list: a deep copy per item) and the cache's
  (one record decoded per item) alternate in one process, ``--rounds`` times, on the same
  images (the list holds just those records: the mapper's cost does not depend on the rest).

Time figures are only comparable within one run (the cores are shared): state the load
(``uptime``), which is printed with the tables.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from instaformer.data import make_synthetic_dataset
from mask2former.structures import decode_segmentation
from mask2former.utils.argtypes import int_range
from mask2former.utils.atomic import atomic_write

MEASURE = Path(__file__).resolve().parent / "_data_measure.py"
POOL_SIZE = (480, 640)
POOL_MAX_OBJECTS = 14
SCALE_LAYOUT = 2  # version of write_scale_sets' output, in its folder's name
INSTANCES_PER_IMAGE = 8.5  # COCO train2017: 860K instances; InstaOrder: 101K images


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", default="output/benchmark_data", help="output folder")
    parser.add_argument(
        "--records", type=int_range(1), default=101_000, help="images of the scale sets"
    )
    parser.add_argument(
        "--pool-images", type=int_range(1), default=64, help="rendered images reused"
    )
    parser.add_argument("--sets", nargs="+", default=["panoptic", "instances"])
    parser.add_argument(
        "--ranks", type=int_range(1), nargs="+", default=[1, 2], help="processes (gloo)"
    )
    parser.add_argument("--workers", type=int_range(0), nargs="+", default=[2, 4], help="per rank")
    parser.add_argument(
        "--instances-grid",
        nargs="*",
        default=["1x2"],
        help="RANKSxWORKERS runs of the instances set (its JSON path needs several GB a rank)",
    )
    parser.add_argument(
        "--mapper-images",
        type=int_range(0),
        default=48,
        help="images per rank and recipe (0: skip)",
    )
    parser.add_argument(
        "--rounds", type=int_range(1), default=3, help="alternations of the two paths"
    )
    parser.add_argument(
        "--old-max-ranks",
        type=int_range(1),
        default=None,
        help="run the cache-off path up to this many ranks only (its spawned workers each "
        "unpickle a whole copy of the records: at 101K, 2 GB a worker)",
    )


def write_pool(root: str, images: int) -> None:
    """The synthetic twin's train split at 480 x 640 under ``root`` (kept when present)."""
    marker = os.path.join(root, "pool.json")
    wanted = {"images": images, "size": POOL_SIZE, "max_objects": POOL_MAX_OBJECTS}
    if os.path.exists(marker) and json.loads(Path(marker).read_text()) == json.loads(
        json.dumps(wanted)
    ):
        return
    make_synthetic_dataset(
        root,
        num_train=images,
        num_val=0,
        image_size=POOL_SIZE,
        seed=0,
        max_objects=POOL_MAX_OBJECTS,
    )
    atomic_write(marker, lambda f: f.write(json.dumps(wanted).encode()))


def _polygons(mask: np.ndarray, rng: np.random.Generator) -> list[list[float]]:
    """COCO polygons (x, y pairs, sub-pixel floats as COCO's) of the outer contours of
    ``mask``."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polygons = []
    for contour in contours:
        points = cv2.approxPolyDP(contour, 1.0, True).reshape(-1, 2).astype(np.float64)
        if len(points) >= 3:
            points += rng.uniform(0.0, 1.0, size=points.shape)
            polygons.append([round(v, 2) for v in points.ravel().tolist()])
    return polygons


def _json_file(path: str, head: dict[str, Any], lists: dict[str, Iterable[Any]]) -> None:
    """Write ``{**head, key: [items...]}`` item by item (as ``json.dump`` lays it out)."""

    def write(f: Any) -> None:
        fields = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in head.items())
        f.write(b"{" + fields.encode())
        for n, (key, items) in enumerate(lists.items()):
            f.write(f"{', ' if head or n else ''}{json.dumps(key)}: [".encode())
            for i, item in enumerate(items):
                f.write((", " if i else "").encode() + json.dumps(item).encode())
            f.write(b"]")
        f.write(b"}")

    atomic_write(path, write)


def write_scale_sets(pool: str, out: str, records: int) -> dict[str, Any]:
    """InstaOrder-scale annotation files under ``out/coco/annotations`` whose ``records`` images
    cycle through the pool's train images (image ``i + 1`` is pool image ``i mod P``):
    ``InstaOrderPanoptic_train2017.json``, ``InstaOrder_train2017.json`` and
    ``instances_train2017.json`` (polygons; extra copies of an image's things, named by no
    InstaOrder record, bring the instances to about :data:`INSTANCES_PER_IMAGE` per image).
    Every image has names of its own (``<id>.jpg``, ``<id>.png``, as the loaders refuse names
    shared by two images): ``out/coco/{train2017,panoptic_train2017}`` hold one link per image to
    the pool's file.

    Returns:
        counts: records, segments, order entries, instances, and the files' sizes in bytes.
    """
    src = os.path.join(pool, "coco")
    ann_dir = os.path.join(out, "coco", "annotations")
    os.makedirs(ann_dir, exist_ok=True)
    with open(os.path.join(src, "annotations", "InstaOrderPanoptic_train2017.json")) as f:
        panoptic = json.load(f)
    with open(os.path.join(src, "annotations", "instances_train2017.json")) as f:
        coco = json.load(f)
    pool_images = panoptic["images"]
    pool_anns = panoptic["annotations"]
    rng = np.random.default_rng(0)
    instances_of: dict[int, list[dict]] = {img["id"]: [] for img in pool_images}
    for ann in coco["annotations"]:
        seg = ann["segmentation"]
        if not ann["iscrowd"]:
            img = next(i for i in pool_images if i["id"] == ann["image_id"])
            mask = decode_segmentation(seg, img["height"], img["width"])
            seg = _polygons(mask, rng) or seg
        instances_of[ann["image_id"]].append({**ann, "segmentation": seg})
    p = len(pool_images)

    def name(i: int, pool_name: str) -> str:
        return f"{i + 1:012d}{os.path.splitext(pool_name)[1]}"

    for folder, entries in (("train2017", pool_images), ("panoptic_train2017", pool_anns)):
        links = os.path.join(out, "coco", folder)
        os.makedirs(links, exist_ok=True)
        target = os.path.relpath(os.path.join(src, folder), links)
        for i in range(records):
            link = os.path.join(links, name(i, entries[i % p]["file_name"]))
            if not os.path.islink(link):
                os.symlink(os.path.join(target, entries[i % p]["file_name"]), link)

    def images() -> Iterator[dict]:
        for i in range(records):
            image = pool_images[i % p]
            yield {**image, "id": i + 1, "file_name": name(i, image["file_name"])}

    def panoptic_anns() -> Iterator[dict]:
        for i in range(records):
            ann = pool_anns[i % p]
            yield {**ann, "image_id": i + 1, "file_name": name(i, ann["file_name"])}

    _json_file(
        os.path.join(ann_dir, "InstaOrderPanoptic_train2017.json"),
        {k: panoptic[k] for k in ("info", "licenses", "categories")},
        {"images": images(), "annotations": panoptic_anns()},
    )
    own_count = [len(instances_of[pool_images[i % p]["id"]]) for i in range(records)]
    per_image = [
        max(own_count[i], int((i + 1) * INSTANCES_PER_IMAGE) - int(i * INSTANCES_PER_IMAGE))
        for i in range(records)
    ]
    first_id = np.concatenate([[1], 1 + np.cumsum(per_image)]).tolist()

    def instances() -> Iterator[dict]:
        for i in range(records):
            own = instances_of[pool_images[i % p]["id"]]
            things = [a for a in own if not a["iscrowd"]]
            extra = [things[k % len(things)] for k in range(per_image[i] - len(own))]
            for k, ann in enumerate(own + extra):
                yield {**ann, "id": first_id[i] + k, "image_id": i + 1}

    def orders() -> Iterator[dict]:
        for i in range(records):
            record = pool_anns[i % p]["instaorder"]
            own = instances_of[pool_images[i % p]["id"]]
            new_id = {a["id"]: first_id[i] + k for k, a in enumerate(own)}
            yield {
                "image_id": i + 1,
                "instance_ids": [new_id[j] for j in record["instance_ids"]],
                "occlusion": record["occlusion"],
                "depth": record["depth"],
            }

    _json_file(
        os.path.join(ann_dir, "instances_train2017.json"),
        {"info": coco["info"], "licenses": [], "categories": coco["categories"]},
        {"images": images(), "annotations": instances()},
    )
    _json_file(os.path.join(ann_dir, "InstaOrder_train2017.json"), {}, {"annotations": orders()})
    names = ("InstaOrderPanoptic", "InstaOrder", "instances")
    return {
        "records": records,
        "segments": sum(len(pool_anns[i % p]["segments_info"]) for i in range(records)),
        "order_entries": sum(
            sum(len(pool_anns[i % p]["instaorder"][k]) for k in ("occlusion", "depth"))
            for i in range(records)
        ),
        "instances": sum(per_image),
        "bytes": {n: os.path.getsize(os.path.join(ann_dir, f"{n}_train2017.json")) for n in names},
    }


def _scale_sets(work: str, records: int, pool_images: int) -> tuple[str, dict[str, Any]]:
    pool = os.path.join(work, f"pool-{pool_images}")
    write_pool(pool, pool_images)
    out = os.path.join(work, f"scale{SCALE_LAYOUT}-{records}-{pool_images}")
    manifest = os.path.join(out, "manifest.json")
    if os.path.exists(manifest):
        return out, json.loads(Path(manifest).read_text())
    stats = write_scale_sets(pool, out, records)
    atomic_write(manifest, lambda f: f.write(json.dumps(stats).encode()))
    return out, stats


def _drop_record_files(root: str) -> None:
    for path in glob.glob(os.path.join(root, "coco", "annotations", "*.records")):
        os.remove(path)


def _measure(request: dict[str, Any]) -> dict[str, Any]:
    from benchmark import run_script_json  # tools/benchmark.py, which loads this module

    load = os.getloadavg()
    result = run_script_json(MEASURE, request)
    result["load"] = [round(v, 2) for v in (*load, *os.getloadavg())]
    what = f"{request['task']} {request['set']} cache={request['cache']}"
    print(f"  {what}: {json.dumps(result)[:400]}", flush=True)
    return result


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def _table(columns: list[str], rows: Iterable[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _loads(r: dict) -> str:
    return f"{r['load'][0]:.1f}-{r['load'][3]:.1f}"


def _load_table(rows: list[tuple[str, dict]]) -> list[str]:
    columns = ["path", "start-up s", "peak RSS MiB", "dataset USS MiB", "dataset PSS MiB"]
    columns += ["record file MiB", "one item µs", "load avg"]
    return _table(
        columns,
        (
            [
                label,
                f"{r['startup_s']:.2f}",
                _mib(r["peak_rss"]),
                _mib(r["uss"]),
                _mib(r["pss"]),
                _mib(r["file_bytes"]) if r["file_bytes"] else "-",
                f"{r['item_us']:.0f}",
                _loads(r),
            ]
            for label, r in rows
        ),
    )


def _run_table(rows: list[tuple[str, dict]]) -> list[str]:
    columns = ["ranks x workers", "path", "start-up s (per rank)", "rank dataset USS MiB"]
    columns += ["worker USS growth MiB (max)", "control MiB", "held for annotations MiB"]
    columns += ["x one copy", "load avg"]
    return _table(
        columns,
        (
            [
                f"{r['ranks']} x {r['workers']}",
                label,
                ", ".join(f"{s:.2f}" for s in r["startup_s"]),
                ", ".join(_mib(u) for u in r["rank_uss"]),
                _mib(max(r["worker_growth"])),
                _mib(r["control_growth"]),
                _mib(r["held"]),
                f"{r['held'] / r['one_copy']:.2f}",
                _loads(r),
            ]
            for label, r in rows
        ),
    )


def _mapper_table(rows: list[dict]) -> list[str]:
    columns = ["ranks x workers", "recipe", "today img/s (per worker)"]
    columns += ["cache img/s (per worker)", "cache / today", "load avg"]
    cells = []
    for r in rows:
        workers = r["ranks"] * r["workers"]
        for recipe in ("480x640", "lsj1024"):
            off = float(np.median(r["rates"][f"off {recipe}"]))
            on = float(np.median(r["rates"][f"on {recipe}"]))
            cells.append(
                [
                    f"{r['ranks']} x {r['workers']}",
                    recipe,
                    f"{off:.1f} ({off / workers:.2f})",
                    f"{on:.1f} ({on / workers:.2f})",
                    f"{on / off:.2f}",
                    _loads(r),
                ]
            )
    return _table(columns, cells)


def run(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/, for run_script_json
    work = os.path.abspath(args.work_dir)
    start = time.perf_counter()
    root, stats = _scale_sets(work, args.records, args.pool_images)
    print(f"Scale sets in {root}: {json.dumps(stats)}", flush=True)
    report = [f"Scale sets: {json.dumps(stats)}"]
    results: dict[str, Any] = {"stats": stats}
    for which in args.sets:
        base = {"root": root, "set": which, "mapper_images": args.mapper_images}
        off = _measure({**base, "task": "load", "cache": False})
        _drop_record_files(root)
        build = _measure({**base, "task": "load", "cache": True})
        warm = _measure({**base, "task": "load", "cache": True})
        loads = [
            ("cache off (today)", off),
            ("cache on, first build", build),
            ("cache on, warm", warm),
        ]
        report += ["", f"### {which}: load", "", *_load_table(loads)]
        grid = (
            list(itertools.product(args.ranks, args.workers))
            if which == "panoptic"
            else [tuple(int(v) for v in g.split("x")) for g in args.instances_grid]
        )
        runs, raced = [], False
        for ranks, workers in grid:
            request = {**base, "task": "run", "ranks": ranks, "workers": workers}
            if args.old_max_ranks is None or ranks <= args.old_max_ranks:
                old = _measure({**request, "cache": False})
                old["one_copy"] = off["pss"]
                runs.append(("cache off (today)", old))
            cold = ranks > 1 and not raced
            if cold:  # the first multi-rank run races to build the record file
                _drop_record_files(root)
                raced = True
            new = _measure({**request, "cache": True})
            new["one_copy"] = warm["pss"]
            runs.append(("cache on" + (", cold" if cold else ""), new))
        report += ["", f"### {which}: ranks x workers", "", *_run_table(runs)]
        results[which] = {"load": loads, "runs": runs}
        if which == "panoptic" and args.mapper_images:
            request = {**base, "task": "mapper", "cache": True, "rounds": args.rounds}
            mappers = [
                _measure({**request, "ranks": r, "workers": w})
                for r, w in itertools.product(args.ranks, args.workers)
            ]
            report += ["", "### panoptic: mapper throughput (medians)", "", *_mapper_table(mappers)]
            results["mapper"] = mappers
    text = json.dumps(results, indent=1).encode()
    atomic_write(os.path.join(work, "results.json"), lambda f: f.write(text))
    print("\n".join(report))
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n{time.perf_counter() - start:.0f} s in all; load average now {load}")
