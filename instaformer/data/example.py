"""A small example dataset in the simple order-annotation format, made from the synthetic twin.

The twin's six COCO categories become three others: ``blob`` (id 101, thing: the twin's people
and balls), ``block`` (id 102, thing: its cars and kites) and ``backdrop`` (id 200, stuff: its
sky and grass, one region per image). The crowd band stays a crowd ``blob``. Written under
``root``, a layout unlike COCO's::

    images/{train,val}/scene_NNNN.jpg     the images
    masks/{train,val}/scene_NNNN.png      8-bit instance ids (0 = none)
    {train,val}.json                      categories, instances (mask_id) and ordered pairs

:func:`instaformer.data.convert.convert_to_instaorder_panoptic` turns each split file into
InstaOrder Panoptic (docs/custom_data.md walks through it).

``root`` is an output folder of :mod:`mask2former.utils.outputs`: locked while it is written,
every file recorded; a file at an output name that the example did not write is refused before
anything (the twin included) is written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np
from PIL import Image

from instaformer.data.io import read_panoptic_ids
from instaformer.data.relations import parse_order
from instaformer.data.synthetic import make_synthetic_dataset
from mask2former.utils.outputs import OutputFolder

__all__ = ["EXAMPLE_CATEGORIES", "make_example_dataset"]

EXAMPLE_CATEGORIES = [
    {"id": 101, "name": "blob", "isthing": 1, "color": [230, 90, 40]},
    {"id": 102, "name": "block", "isthing": 1, "color": [40, 90, 230]},
    {"id": 200, "name": "backdrop", "isthing": 0, "color": [120, 160, 120]},
]
"""The example's categories (contiguous ids 0, 1, 2)."""

# Twin COCO category -> example category.
_CATEGORY = {1: 101, 37: 101, 3: 102, 38: 102, 187: 200, 193: 200}
_TOOL = "example"  # the writer's name in the output folder's record


def _output_names(split: str, num_images: int) -> list[str]:
    """Every file (relative to ``root``) that :func:`_split` writes for ``split``."""
    stems = [f"scene_{n:04d}" for n in range(num_images)]
    return (
        [f"images/{split}/{stem}.jpg" for stem in stems]
        + [f"masks/{split}/{stem}.png" for stem in stems]
        + [f"{split}.json"]
    )


def _split(twin: str, out: OutputFolder, split: str) -> int:
    coco = os.path.join(twin, "coco")
    with open(os.path.join(coco, "annotations", f"InstaOrderPanoptic_{split}2017.json")) as f:
        data = json.load(f)
    images = []
    for n, ann in enumerate(data["annotations"]):
        stem = f"scene_{n:04d}"
        source = os.path.join(coco, f"{split}2017", os.path.splitext(ann["file_name"])[0] + ".jpg")
        out.write(
            f"images/{split}/{stem}.jpg", lambda tmp, source=source: shutil.copyfile(source, tmp)
        )
        ids = read_panoptic_ids(os.path.join(coco, f"panoptic_{split}2017", ann["file_name"]))
        mask = np.zeros(ids.shape, dtype=np.uint8)
        instances: list[dict[str, Any]] = [{"category_id": 200, "mask_id": 1}]
        index_of_segment = {}
        for seg in ann["segments_info"]:
            category = _CATEGORY[seg["category_id"]]
            if category == 200:
                mask[ids == seg["id"]] = 1
                continue
            index_of_segment[seg["id"]] = len(instances)
            mask[ids == seg["id"]] = len(instances) + 1
            entry = {"category_id": category, "mask_id": len(instances) + 1}
            if seg["iscrowd"]:
                entry["iscrowd"] = 1
            instances.append(entry)
        out.write(
            f"masks/{split}/{stem}.png",
            lambda tmp, mask=mask: Image.fromarray(mask).save(tmp, format="PNG"),
        )
        record = ann["instaorder"]
        index = [index_of_segment[p] for p in record["pan_instance_ids"]]
        m = len(index)
        occlusion, depth = [], []
        for entry in record["occlusion"]:
            i, _, j, both = parse_order(entry["order"], m)
            occlusion += [[index[i], index[j]]] + ([[index[j], index[i]]] if both else [])
        for entry in record["depth"]:
            i, op, j, _ = parse_order(entry["order"], m)
            pair = (
                {"equal": [index[i], index[j]]}
                if op == "="
                else {"closer": index[i], "farther": index[j]}
            )
            depth.append({**pair, "overlap": entry["overlap"], "count": entry["count"]})
        images.append(
            {
                "file_name": stem + ".jpg",
                "height": int(ids.shape[0]),
                "width": int(ids.shape[1]),
                "mask_file": f"masks/{split}/{stem}.png",
                "instances": instances,
                "occlusion": occlusion,
                "depth": depth,
            }
        )
    data = {"categories": EXAMPLE_CATEGORIES, "images": images}

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)

    out.write(f"{split}.json", write)
    return len(images)


def make_example_dataset(
    root: str, num_train: int = 40, num_val: int = 10, image_size: int = 64, seed: int = 0
) -> dict[str, int]:
    """Write the example under ``root`` (module docstring); a deterministic function of the
    arguments. Returns the number of images per split.

    Raises:
        mask2former.utils.outputs.OutputError: ``root`` is empty, or an output name holds a
            file (or link) the example did not write; nothing is written then.
        mask2former.engine.lock.RunLockError: another run writes into ``root``.
    """
    counts = {split: n for split, n in (("train", num_train), ("val", num_val)) if n > 0}
    with OutputFolder(root, what="ROOT", tool=_TOOL) as out:
        out.check(name for split, n in counts.items() for name in _output_names(split, n))
        with tempfile.TemporaryDirectory(dir=root, prefix=".twin_") as twin:
            make_synthetic_dataset(
                twin, num_train=num_train, num_val=num_val, image_size=image_size, seed=seed
            )
            return {split: _split(twin, out, split) for split in counts}
