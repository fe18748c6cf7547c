"""A synthetic twin of InstaOrder Panoptic: layered shapes with known depth, in the real formats.

Each image shows a sky and a grass region (two stuff classes) and 2-``max_objects`` things from
four COCO classes, each drawn as its own shape and colour: person (tall ellipse), car (wide
rectangle), sports ball (disc), kite (triangle). A thing at distance ``z`` (1-4) stands on the
grass with its base lower in the image and its size larger the closer it is, its colour fades
towards the sky colour the farther it is (aerial perspective), and things are painted far to
near, so:

* occlusion is read off the rendering: ``i`` occludes ``j`` when some pixel of ``j``'s shape
  shows ``i`` (painted later, i.e. closer); labels stay readable at the model's 1/4
  resolution: a thing is redrawn when it would hide a mere sliver of another or come within a
  few pixels of a thing it does not occlude;
* depth order compares ``z``; about one image in four has two things at exactly the same ``z``
  (an "=" label); every thing has a depth extent ``[z, z + thickness(class)]`` and a pair's
  ``overlap`` flag says whether the two extents intersect;
* some images also hold a crowd segment (a band of small people at the horizon, ``iscrowd`` 1,
  not annotated), listed at a random position of ``segments_info``.

Under ``root`` the generator writes the layout of ``datasets/README.md``: ``coco/{split}2017``
JPEGs, ``coco/panoptic_{split}2017`` PNGs and in ``coco/annotations/`` the files
``panoptic_``, ``instances_``, ``InstaOrder_`` and ``InstaOrderPanoptic_{split}2017.json``.
Everything is a deterministic function of the arguments.

``root`` is an output folder of :mod:`mask2former.utils.outputs`: locked while it is written,
every file recorded in its ``.instaformer-written.jsonl``; before the first file is written,
every output name is checked, and a file there that the generator did not write (or that was
changed since) is refused, so writing the twin again replaces only its own earlier files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

from instaformer.data.datasets import register_instaorder, register_instaorder_panoptic
from mask2former.data.coco_categories import COCO_CATEGORIES
from mask2former.structures import encode_rle, id2rgb, mask_bbox
from mask2former.utils.outputs import OutputFolder

__all__ = ["SYNTHETIC_THING_CLASSES", "make_synthetic_dataset", "register_synthetic_instaorder"]

# COCO id -> (shape, RGB colour, size factor, depth thickness)
SYNTHETIC_THING_CLASSES: dict[int, tuple[str, tuple[int, int, int], float, float]] = {
    1: ("ellipse", (220, 40, 60), 0.45, 0.3),  # person
    3: ("rectangle", (20, 40, 200), 0.45, 1.0),  # car
    37: ("disc", (250, 200, 30), 0.22, 0.2),  # sports ball
    38: ("triangle", (150, 40, 220), 0.35, 0.4),  # kite
}
_SKY, _GRASS, _PERSON = 187, 193, 1
_STUFF_COLOURS = {_SKY: (120, 170, 230), _GRASS: (60, 150, 60)}
_HORIZON = 0.35  # horizon height as a fraction of the image height
_Z_RANGE = (1.0, 4.0)
_HAZE = 0.6  # colour fade towards the sky at the farthest distance
_CLUSTER_PROB = 0.6  # chance that a thing is placed next to an earlier one
_TIE_PROB = 0.25
_CROWD_PROB = 0.25
_MIN_HIDDEN = 0.004  # smallest hidden area of an occlusion, as a fraction of the image
_MIN_AREA = 0.005  # smallest visible area of a thing, as a fraction of the image
_MIN_CROWD_AREA = 0.002  # smallest visible area of the crowd, as a fraction of the image
_MIN_GAP = 0.03  # smallest gap between things that do not occlude each other (of the side)
_PLACE_TRIES = 10
_MAX_TRIES = 100
_TOOL = "make_synthetic_dataset"  # the writer's name in the output folder's record
_FIRST_IMAGE_ID = {"train": 1, "val": 900_001}
_ANNOTATION_FILES = ("panoptic", "InstaOrderPanoptic", "instances", "InstaOrder")


@dataclass
class _Thing:
    category_id: int
    z: float
    mask: np.ndarray  # amodal (full shape) bool[H, W]
    cx: float  # horizontal centre (pixels)
    label: int = 0  # index in the label map
    occludes: set[int] = field(default_factory=set)  # labels of things it hides part of


def _draw(shape: str, h: int, w: int, cx: float, bottom: float, size: float) -> np.ndarray:
    canvas = np.zeros((h, w), dtype=np.uint8)
    if shape == "ellipse":
        axes = (max(1, round(size * 0.2)), max(1, round(size * 0.5)))
        cv2.ellipse(canvas, (round(cx), round(bottom - axes[1])), axes, 0, 0, 360, 1, -1)
    elif shape == "rectangle":
        half_w, height = round(size * 0.5), max(1, round(size * 0.45))
        cv2.rectangle(
            canvas,
            (round(cx) - half_w, round(bottom) - height),
            (round(cx) + half_w, round(bottom)),
            1,
            -1,
        )
    elif shape == "disc":
        r = max(1, round(size * 0.5))
        cv2.circle(canvas, (round(cx), round(bottom) - r), r, 1, -1)
    else:
        half = size * 0.5
        pts = np.array([[cx - half, bottom], [cx + half, bottom], [cx, bottom - size]])
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)


def _new_thing(
    rng: np.random.Generator, things: list[_Thing], h: int, w: int, horizon: int
) -> _Thing:
    cat = list(SYNTHETIC_THING_CLASSES)[int(rng.integers(len(SYNTHETIC_THING_CLASSES)))]
    if things and rng.random() < _TIE_PROB:
        z = things[int(rng.integers(len(things)))].z
    else:
        z = float(np.round(rng.uniform(*_Z_RANGE), 3))
    shape, _, size_factor, _ = SYNTHETIC_THING_CLASSES[cat]
    bottom = horizon + (h - 2 - horizon) * (_Z_RANGE[0] / z)
    if things and rng.random() < _CLUSTER_PROB:
        # Next to an earlier thing, so that things overlap in the image as in real scenes.
        cx = things[int(rng.integers(len(things)))].cx + rng.normal(0.0, 0.12 * w)
        cx = float(np.clip(cx, 0.05 * w, 0.95 * w))
    else:
        cx = rng.uniform(0.05 * w, 0.95 * w)
    return _Thing(cat, z, _draw(shape, h, w, cx, bottom, size_factor * h / z), cx)


def _compose(background: np.ndarray, things: list[_Thing]) -> np.ndarray | None:
    """Paint ``things`` far to near over ``background`` (labels 0-2) and fill in their labels
    and occlusions; None when a label would be ambiguous at the model's 1/4 resolution: a thing
    (almost) invisible, an occlusion that hides less than ``_MIN_HIDDEN`` of the image, or two
    things that do not occlude each other closer than ``_MIN_GAP``."""
    h, w = background.shape
    labels = background.copy()
    for k, thing in sorted(enumerate(things), key=lambda t: (-t[1].z, t[0])):  # ties: creation
        thing.label, thing.occludes = 3 + k, set()
        labels[thing.mask] = thing.label
    min_area = max(12, round(_MIN_AREA * h * w))
    if any((labels == t.label).sum() < min_area for t in things):
        return None
    min_hidden = max(4, round(_MIN_HIDDEN * h * w))
    for j in things:
        shown, counts = np.unique(labels[j.mask], return_counts=True)
        for label, n in zip(shown.tolist(), counts.tolist(), strict=True):
            if label >= 3 and label != j.label:
                if n < min_hidden:
                    return None
                things[label - 3].occludes.add(j.label)
    gap = max(1, round(_MIN_GAP * min(h, w)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
    for a in things:
        near = cv2.dilate((labels == a.label).astype(np.uint8), kernel).astype(bool)
        for b in things:
            apart = b.label not in a.occludes and a.label not in b.occludes
            if b is not a and apart and (near & (labels == b.label)).any():
                return None
    return labels


def _scene(rng: np.random.Generator, h: int, w: int, max_objects: int) -> dict[str, Any] | None:
    """One attempt at a scene: things are added one at a time, each redrawn up to
    ``_PLACE_TRIES`` times until the labels stay unambiguous (else left out); None when fewer
    than two things or too little of the crowd remain visible."""
    horizon = round(h * _HORIZON)
    background = np.zeros((h, w), dtype=np.int32)  # 0 sky, 1 grass, 2 crowd, 3.. things
    background[horizon:] = 1
    crowd = None
    if rng.random() < _CROWD_PROB:
        crowd = np.zeros((h, w), dtype=bool)
        for cx in rng.uniform(0, w, size=int(rng.integers(3, 7))):
            crowd |= _draw("ellipse", h, w, cx, horizon + 0.06 * h, 0.12 * h)
        background[crowd] = 2
    things: list[_Thing] = []
    for _ in range(int(rng.integers(2, max_objects + 1))):
        for _ in range(_PLACE_TRIES):
            candidate = [*things, _new_thing(rng, things, h, w, horizon)]
            if _compose(background, candidate) is not None:
                things = candidate
                break
    if len(things) < 2:
        return None
    labels = _compose(background, things)  # resets the labels of the rejected candidates
    if crowd is not None and (labels == 2).sum() < max(12, round(_MIN_CROWD_AREA * h * w)):
        return None
    return {"labels": labels, "things": things, "crowd": crowd is not None}


def _render(rng: np.random.Generator, labels: np.ndarray, things: list[_Thing]) -> np.ndarray:
    h, w = labels.shape
    colours = np.zeros((3 + len(things), 3), dtype=np.float32)
    colours[0], colours[1] = _STUFF_COLOURS[_SKY], _STUFF_COLOURS[_GRASS]
    colours[2] = SYNTHETIC_THING_CLASSES[_PERSON][1]
    sky = np.asarray(_STUFF_COLOURS[_SKY], dtype=np.float32)
    for thing in things:
        jitter = rng.uniform(-20, 20, size=3)
        base = np.asarray(SYNTHETIC_THING_CLASSES[thing.category_id][1]) + jitter
        # Aerial perspective: the farther a thing, the more its colour fades towards the sky.
        haze = _HAZE * (thing.z - _Z_RANGE[0]) / (_Z_RANGE[1] - _Z_RANGE[0])
        colours[thing.label] = (1.0 - haze) * base + haze * sky
    image = colours[labels] + rng.normal(0, 6, size=(h, w, 3))
    # Shading: darker towards the bottom of each thing's box gives the shapes some texture.
    image *= (1.0 - 0.15 * (np.arange(h) / h))[:, None, None]
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _rle(mask: np.ndarray, compressed: bool) -> dict[str, Any]:
    if compressed:
        return encode_rle(mask)
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def _output_names(split: str, num_images: int) -> list[str]:
    """Every file (relative to ``root``) that :func:`_write_split` writes for ``split``."""
    stems = [f"{_FIRST_IMAGE_ID[split] + n:012d}" for n in range(num_images)]
    return (
        [f"coco/{split}2017/{stem}.jpg" for stem in stems]
        + [f"coco/panoptic_{split}2017/{stem}.png" for stem in stems]
        + [f"coco/annotations/{kind}_{split}2017.json" for kind in _ANNOTATION_FILES]
    )


@dataclass
class _SplitFiles:
    """What the four annotation files of one split hold, gathered image by image."""

    images: list[dict[str, Any]] = field(default_factory=list)  # COCO ``images``
    panoptic: list[dict[str, Any]] = field(default_factory=list)  # with their ``instaorder``
    instances: list[dict[str, Any]] = field(default_factory=list)  # COCO instance annotations
    orders: list[dict[str, Any]] = field(default_factory=list)  # InstaOrder records
    truth: list[dict[str, Any]] = field(default_factory=list)  # returned ground truth


def _write_split(
    out: OutputFolder,
    split: str,
    num_images: int,
    size: tuple[int, int],
    rng: np.random.Generator,
    max_objects: int,
) -> list[dict[str, Any]]:
    """Write the images, panoptic PNGs and annotation files of ``split``; returns its truth.

    Every step draws from ``rng`` in a fixed order (scene, rendering, segment ids and order,
    annotated things and their labels), so the output is a function of the arguments.
    """
    first_image_id = _FIRST_IMAGE_ID[split]
    files = _SplitFiles()
    next_instance_id = first_image_id * 100
    for image_id in range(first_image_id, first_image_id + num_images):
        scene = _place_scene(rng, size, max_objects, image_id)
        labels, things = scene["labels"], scene["things"]
        stem = f"{image_id:012d}"
        picture = Image.fromarray(_render(rng, labels, things))
        out.write(f"coco/{split}2017/{stem}.jpg", lambda tmp, p=picture: p.save(tmp, quality=95))
        files.images.append(
            {"id": image_id, "file_name": stem + ".jpg", "height": size[0], "width": size[1]}
        )
        entries = _segment_entries(scene)
        id_map, segment_of_label, segments = _panoptic_segments(rng, labels, entries)
        ids_png = Image.fromarray(id2rgb(id_map))
        out.write(
            f"coco/panoptic_{split}2017/{stem}.png",
            lambda tmp, p=ids_png: p.save(tmp, format="PNG"),
        )
        instances = _instance_annotations(labels, entries[2:], image_id, next_instance_id)
        files.instances += instances
        next_instance_id += len(instances)
        instance_of_label = {
            label: ann["id"] for (label, _, _), ann in zip(entries[2:], instances, strict=True)
        }
        annotated, record = _order_record(rng, things, instance_of_label)
        files.orders.append({"image_id": image_id, **record})
        files.panoptic.append(
            {
                "file_name": stem + ".png",
                "image_id": image_id,
                "segments_info": segments,
                "instaorder": {
                    **record,
                    "pan_instance_ids": [segment_of_label[t.label] for t in annotated],
                },
            }
        )
        files.truth.append(_image_truth(image_id, segments, things, segment_of_label))
    _write_annotation_files(out, split, files)
    return files.truth


def _place_scene(
    rng: np.random.Generator, size: tuple[int, int], max_objects: int, image_id: int
) -> dict[str, Any]:
    """A scene (:func:`_scene`) of ``size`` (height, width), drawn again until its things fit."""
    h, w = size
    for _ in range(_MAX_TRIES):
        scene = _scene(rng, h, w, max_objects)
        if scene is not None:
            return scene
    raise RuntimeError(f"could not place the objects of image {image_id} in {w}x{h}")


def _segment_entries(scene: dict[str, Any]) -> list[tuple[int, int, int]]:
    """``(label in the map, category, iscrowd)`` of every segment: sky, grass, the crowd when
    the scene has one, then the things."""
    entries = [(0, _SKY, 0), (1, _GRASS, 0)]
    if scene["crowd"]:
        entries.append((2, _PERSON, 1))
    return entries + [(t.label, t.category_id, 0) for t in scene["things"]]


def _panoptic_segments(
    rng: np.random.Generator, labels: np.ndarray, entries: list[tuple[int, int, int]]
) -> tuple[np.ndarray, dict[int, int], list[dict[str, Any]]]:
    """Random distinct segment ids for ``entries`` over the label map ``labels`` (int[H, W]).

    Returns:
        the id map int64[H, W], the segment id of each label, and ``segments_info`` in a random
        order.
    """
    # Drawn as indices into [1, 256**3) without building that 16.7M-entry array: the same ids
    # and the same random stream as choosing from the array itself.
    seg_ids = (rng.choice(256**3 - 1, size=len(entries), replace=False) + 1).tolist()
    id_map = np.zeros(labels.shape, dtype=np.int64)
    segment_of_label, segments = {}, []
    for (label, cat, crowd), seg_id in zip(entries, seg_ids, strict=True):
        mask = labels == label
        id_map[mask] = seg_id
        segment_of_label[label] = seg_id
        segments.append(
            {
                "id": int(seg_id),
                "category_id": cat,
                "iscrowd": crowd,
                "bbox": list(mask_bbox(mask)),
                "area": int(mask.sum()),
            }
        )
    order = rng.permutation(len(segments)).tolist()
    return id_map, segment_of_label, [segments[i] for i in order]


def _instance_annotations(
    labels: np.ndarray, entries: list[tuple[int, int, int]], image_id: int, first_id: int
) -> list[dict[str, Any]]:
    """COCO instance annotations (modal masks) of ``entries`` (the things and the crowd), with
    ids from ``first_id`` on."""
    annotations = []
    for instance_id, (label, cat, crowd) in enumerate(entries, start=first_id):
        mask = labels == label
        annotations.append(
            {
                "id": instance_id,
                "image_id": image_id,
                "category_id": cat,
                "segmentation": _rle(mask, compressed=not crowd),
                "area": int(mask.sum()),
                "bbox": [float(v) for v in mask_bbox(mask)],
                "iscrowd": crowd,
            }
        )
    return annotations


def _order_record(
    rng: np.random.Generator, things: list[_Thing], instance_of_label: dict[int, int]
) -> tuple[list[_Thing], dict[str, Any]]:
    """The InstaOrder record over the things, annotated in a random order.

    Returns:
        the things in their annotated order, and ``{"instance_ids", "occlusion", "depth"}``
        (labels with 2-3 votes; an "=" pair written either way round at random).
    """
    perm = rng.permutation(len(things)).tolist()
    annotated = [things[i] for i in perm]
    occlusion, depth = [], []
    for a in range(len(annotated)):
        for b in range(a + 1, len(annotated)):
            ta, tb = annotated[a], annotated[b]
            if tb.label in ta.occludes:
                occlusion.append({"order": f"{a}<{b}", "count": int(rng.integers(2, 4))})
            if ta.label in tb.occludes:
                occlusion.append({"order": f"{b}<{a}", "count": int(rng.integers(2, 4))})
            if ta.z == tb.z:
                text = f"{a}={b}" if rng.random() < 0.5 else f"{b}={a}"
            else:
                text = f"{a}<{b}" if ta.z < tb.z else f"{b}<{a}"
            thick_a = SYNTHETIC_THING_CLASSES[ta.category_id][3]
            thick_b = SYNTHETIC_THING_CLASSES[tb.category_id][3]
            overlap = ta.z < tb.z + thick_b and tb.z < ta.z + thick_a
            depth.append(
                {"order": text, "count": int(rng.integers(2, 4)), "overlap": bool(overlap)}
            )
    record = {
        "instance_ids": [instance_of_label[t.label] for t in annotated],
        "occlusion": occlusion,
        "depth": depth,
    }
    return annotated, record


def _image_truth(
    image_id: int,
    segments: list[dict[str, Any]],
    things: list[_Thing],
    segment_of_label: dict[int, int],
) -> dict[str, Any]:
    """The returned ground truth of one image (see :func:`make_synthetic_dataset`)."""
    by_label = {t.label: t for t in things}
    return {
        "image_id": image_id,
        "segments": [
            {
                "id": s["id"],
                "iscrowd": s["iscrowd"],
                "category_id": s["category_id"],
                **_thing_truth(by_label, segment_of_label, s["id"]),
            }
            for s in segments
        ],
    }


def _write_annotation_files(out: OutputFolder, split: str, files: _SplitFiles) -> None:
    """The four annotation files of ``split``: ``coco/annotations/{panoptic, InstaOrderPanoptic,
    instances, InstaOrder}_<split>2017.json``."""
    ann_dir = "coco/annotations"
    panoptic = {
        "info": {"description": "synthetic twin of InstaOrder Panoptic"},
        "licenses": [],
        "categories": COCO_CATEGORIES,
        "images": files.images,
    }
    _dump(
        out,
        f"{ann_dir}/panoptic_{split}2017.json",
        {**panoptic, "annotations": [_without_instaorder(a) for a in files.panoptic]},
    )
    _dump(
        out,
        f"{ann_dir}/InstaOrderPanoptic_{split}2017.json",
        {**panoptic, "annotations": files.panoptic},
        indent=4,
    )
    things_categories = [
        {"id": c["id"], "name": c["name"], "supercategory": c["name"]}
        for c in COCO_CATEGORIES
        if c["isthing"]
    ]
    _dump(
        out,
        f"{ann_dir}/instances_{split}2017.json",
        {
            "info": panoptic["info"],
            "licenses": [],
            "images": files.images,
            "annotations": files.instances,
            "categories": things_categories,
        },
    )
    _dump(out, f"{ann_dir}/InstaOrder_{split}2017.json", {"annotations": files.orders})


def _thing_truth(
    by_label: dict[int, _Thing], segment_of_label: dict[int, int], seg_id: int
) -> dict:
    label = next(k for k, v in segment_of_label.items() if v == seg_id)
    if label not in by_label:
        return {"z": None, "thickness": None, "occludes": []}
    thing = by_label[label]
    return {
        "z": thing.z,
        "thickness": SYNTHETIC_THING_CLASSES[thing.category_id][3],
        "occludes": sorted(segment_of_label[k] for k in thing.occludes),
    }


def _without_instaorder(ann: dict) -> dict:
    return {k: v for k, v in ann.items() if k != "instaorder"}


def _dump(out: OutputFolder, name: str, data: Any, indent: int | None = None) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=indent)

    out.write(name, write)


def make_synthetic_dataset(
    root: str,
    num_train: int = 200,
    num_val: int = 50,
    image_size: int | tuple[int, int] = 128,
    seed: int = 0,
    *,
    max_objects: int = 5,
    what: str = "root",
) -> dict[str, list[dict[str, Any]]]:
    """Render and write the synthetic twin under ``root`` (see the module docstring).

    Args:
        num_train, num_val: images per split (a split with 0 images is not written).
        image_size: side, or (height, width), in pixels.
        seed: the output is a deterministic function of all arguments.
        max_objects: at most this many things per image (at least 2).
        what: the flag or argument that named ``root``, for messages (``"--root"``).
    Raises:
        mask2former.utils.outputs.OutputError: ``root`` is empty, or an output name holds a
            file (or link) the generator did not write; nothing is written then.
        mask2former.engine.lock.RunLockError: another run writes into ``root``.
    Returns:
        ``{"train": [...], "val": [...]}``, the ground truth per image: ``image_id`` and
        ``segments`` in ``segments_info`` order, each ``{id, iscrowd, category_id, z,
        thickness, occludes}`` (``z`` None for stuff and crowd; ``occludes`` = segment ids of the
        things it hides part of).
    """
    if max_objects < 2:
        raise ValueError(f"max_objects must be >= 2, got {max_objects}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if min(size) < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    rng = np.random.default_rng(seed)
    counts = {split: n for split, n in (("train", num_train), ("val", num_val)) if n > 0}
    truth = {}
    with OutputFolder(root, what=what, tool=_TOOL) as out:
        out.check(name for split, n in counts.items() for name in _output_names(split, n))
        for split, count in counts.items():
            truth[split] = _write_split(out, split, count, size, rng, max_objects)
    return truth


def register_synthetic_instaorder(root: str) -> None:
    """Register ``synthetic_instaorder_{train,val}`` (InstaOrder Panoptic, InstaFormer) and
    ``synthetic_instaorder_{train,val}_instances`` (InstaOrder + COCO instances, InstaOrderNet)
    for the twin written under ``root``; earlier registrations of these names are replaced."""
    for split in ("train", "val"):
        register_instaorder_panoptic(
            f"synthetic_instaorder_{split}", split=split, root=root, replace=True
        )
        register_instaorder(
            f"synthetic_instaorder_{split}_instances", split=split, root=root, replace=True
        )
