"""Your own dataset in the InstaOrder Panoptic format: registration by function or by config.

A dataset is one InstaOrder Panoptic JSON (docs/reference.md [DS 5.3]: COCO panoptic keys plus an
``instaorder`` record per annotation), a folder of images and a folder of panoptic PNGs. Its
categories come from the JSON's ``categories`` list (or an explicit list): each
``{"id", "name", "isthing"}`` with an optional ``"color"`` ``[R, G, B]``. The contiguous id of a
category, the class index the model predicts, is its position in that list; things and stuff
share this one index space, so ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` must equal the list's length.

Two ways to register, one per use:

* Python: :func:`register_panoptic_order_dataset`.
* Config only: ``DATASETS.CUSTOM`` maps each dataset name to ``IMAGE_ROOT``, ``PANOPTIC_ROOT``
  and ``JSON``; relative paths are under the dataset root (``$DETECTRON2_DATASETS``, default
  ``datasets``) like the built-in datasets. ``train_net.py``, ``tools/check_dataset.py`` and the
  predictor call :func:`register_custom_datasets` when they set up the config.

See docs/custom_data.md.
"""

from __future__ import annotations

import colorsys
import functools
import os
from collections.abc import Sequence
from typing import Any

from instaformer.data.datasets import (
    _replace,
    datasets_root,
    instaorder_panoptic_source,
    load_json_object,
)
from instaformer.data.io import DataError
from mask2former.config import CfgNode, ConfigError
from mask2former.data.cache import CachedLoader
from mask2former.data.catalog import DatasetCatalog, Deferred, MetadataCatalog
from mask2former.data.coco_categories import panoptic_metadata

__all__ = [
    "CUSTOM_KEYS",
    "categories_metadata",
    "check_num_classes",
    "register_custom_datasets",
    "register_panoptic_order_dataset",
]

CUSTOM_KEYS = ("IMAGE_ROOT", "PANOPTIC_ROOT", "JSON")
"""Keys of one ``DATASETS.CUSTOM`` entry: image folder, panoptic PNG folder, annotation JSON."""

_METADATA_KEYS = (
    "thing_classes",
    "thing_colors",
    "stuff_classes",
    "stuff_colors",
    "thing_dataset_id_to_contiguous_id",
    "stuff_dataset_id_to_contiguous_id",
    "categories",
)


def _default_color(index: int) -> list[int]:
    """A distinct RGB colour per category index (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.65, 0.9)
    return [round(255 * r), round(255 * g), round(255 * b)]


def categories_metadata(categories: Sequence[dict[str, Any]], where: str) -> dict[str, Any]:
    """Dataset metadata from a category list, in the layout of ``coco_panoptic_metadata``.

    Args:
        categories: ``{"id": int, "name": str, "isthing": 0/1, "color": [R, G, B] (optional)}``
            per category; the contiguous id is the position in this list.
        where: what the list comes from (a file name), for error messages.
    Returns:
        ``thing_classes`` / ``thing_colors`` (things only), ``stuff_classes`` /
        ``stuff_colors`` (all categories, as Mask2Former's panoptic models read them),
        ``thing_dataset_id_to_contiguous_id`` (things), ``stuff_dataset_id_to_contiguous_id``
        (all), ``categories`` (the list with colours filled in), ``label_divisor`` 1000 and
        ``ignore_label`` 255.
    Raises:
        DataError: an empty list, a category without an integer ``id``, a ``name`` or an
            ``isthing`` of 0/1, a repeated id or name, or a colour that is not 3 values 0-255.
    """
    if not categories:
        raise DataError(f"{where}: the category list is empty")
    cats, seen_ids, seen_names = [], set(), set()
    for index, cat in enumerate(categories):
        what = f"{where}: category {index} ({cat!r})"
        if not isinstance(cat, dict) or not {"id", "name", "isthing"} <= set(cat):
            raise DataError(f"{what} needs 'id', 'name' and 'isthing'")
        if not isinstance(cat["id"], int) or isinstance(cat["id"], bool):
            raise DataError(f"{what}: 'id' must be an integer")
        if cat["isthing"] not in (0, 1):
            raise DataError(f"{what}: 'isthing' must be 0 or 1")
        if cat["id"] in seen_ids or cat["name"] in seen_names:
            raise DataError(f"{what}: the id or the name is used by an earlier category")
        seen_ids.add(cat["id"])
        seen_names.add(cat["name"])
        color = cat.get("color", _default_color(index))
        if len(color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in color):
            raise DataError(f"{what}: 'color' must be three integers 0-255")
        cats.append({**cat, "isthing": int(cat["isthing"]), "color": list(color)})
    return {**panoptic_metadata(cats), "categories": cats}


def _json_categories(json_file: str) -> list[dict[str, Any]]:
    what = "InstaOrder Panoptic annotation file (see docs/custom_data.md)"
    return load_json_object(json_file, what, list_keys=("categories",))["categories"]


def register_panoptic_order_dataset(
    name: str,
    *,
    image_root: str,
    panoptic_root: str,
    json_file: str,
    categories: Sequence[dict[str, Any]] | None = None,
    replace: bool = False,
) -> None:
    """Register an InstaOrder Panoptic dataset with any layout and any categories.

    Nothing is read here: the JSON is read when the metadata or the data is first used; the
    data through a record file beside it, built once per node (:mod:`mask2former.data.cache`).

    Args:
        name: dataset name for ``DATASETS.TRAIN`` / ``DATASETS.TEST``.
        image_root: folder of the images (``file_name`` of each ``images`` entry is relative
            to it).
        panoptic_root: folder of the panoptic PNGs (``file_name`` of each annotation).
        json_file: the InstaOrder Panoptic JSON.
        categories: the category list (see :func:`categories_metadata`); None = the JSON's
            ``categories``.
        replace: drop an existing registration of ``name`` first.
    Raises:
        KeyError: ``name`` is already registered and ``replace`` is False.
    """
    if replace:
        _replace(name)
    elif name in DatasetCatalog:
        raise KeyError(f"dataset '{name}' is already registered (pass replace=True)")

    @functools.cache
    def metadata() -> dict[str, Any]:
        if categories is not None:
            return categories_metadata(categories, f"categories of dataset '{name}'")
        return categories_metadata(_json_categories(json_file), json_file)

    DatasetCatalog.register(
        name,
        CachedLoader(
            lambda: instaorder_panoptic_source(
                json_file,
                image_root,
                panoptic_root,
                categories="json" if categories is None else list(categories),
                metadata=metadata,
            )
        ),
    )

    def field(key: str) -> Any:
        return metadata()[key]

    fields = {key: Deferred(functools.partial(field, key)) for key in _METADATA_KEYS}
    MetadataCatalog.get(name).set(
        **fields,
        label_divisor=1000,
        ignore_label=255,
        evaluator_type="instaorder",
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=json_file,
        json_file=json_file,
    )


_FROM_CONFIG: set[str] = set()  # names registered by register_custom_datasets


def _under_root(path: str) -> str:
    return os.path.join(datasets_root(), path)


def register_custom_datasets(cfg: CfgNode) -> list[str]:
    """Register every ``DATASETS.CUSTOM`` entry (replacing earlier registrations of its name).

    Relative paths are joined to the dataset root (``$DETECTRON2_DATASETS``, default
    ``datasets``) now; absolute paths are kept.

    Returns:
        The registered names.
    Raises:
        ConfigError: an entry that is not a mapping, misses one of :data:`CUSTOM_KEYS` or has
            another key, or whose name belongs to a dataset registered otherwise (built in or
            in code); the message names the entry.
    """
    names = []
    for name, entry in cfg.DATASETS.get("CUSTOM", {}).items():
        key = f"DATASETS.CUSTOM.{name}"
        if name in DatasetCatalog and name not in _FROM_CONFIG:
            raise ConfigError(
                f"{key}: '{name}' is already a registered dataset (built in or registered in "
                "code); give the custom dataset another name"
            )
        if not isinstance(entry, dict):
            raise ConfigError(f"{key} must map {', '.join(CUSTOM_KEYS)} to paths; got {entry!r}")
        unknown = sorted(set(entry) - set(CUSTOM_KEYS))
        missing = [k for k in CUSTOM_KEYS if not entry.get(k)]
        if unknown or missing:
            raise ConfigError(
                f"{key}: unknown keys {unknown}, missing keys {missing}; an entry needs exactly "
                f"{', '.join(CUSTOM_KEYS)}"
            )
        register_panoptic_order_dataset(
            name,
            image_root=_under_root(entry["IMAGE_ROOT"]),
            panoptic_root=_under_root(entry["PANOPTIC_ROOT"]),
            json_file=_under_root(entry["JSON"]),
            replace=True,
        )
        _FROM_CONFIG.add(name)
        names.append(name)
    return names


def check_num_classes(cfg: CfgNode) -> None:
    """Check ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` against every dataset of ``DATASETS.TRAIN``
    and ``DATASETS.TEST`` registered with a category list (``stuff_classes``).

    Raises:
        ConfigError: a dataset has a different number of categories (the message names the key,
            both numbers and the dataset), or two datasets have different category lists.
    """
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    first: tuple[str, list[str]] | None = None
    for name in dict.fromkeys([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]):
        if name not in MetadataCatalog.list():
            continue
        meta = MetadataCatalog.get(name)
        classes = meta.get("stuff_classes")
        if classes is None:
            continue
        if len(classes) != num_classes:
            things = len(meta.get("thing_classes", []))
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes} but dataset '{name}' has "
                f"{len(classes)} categories ({things} things, {len(classes) - things} stuff); "
                f"set MODEL.SEM_SEG_HEAD.NUM_CLASSES {len(classes)}"
            )
        if first is None:
            first = (name, list(classes))
        elif list(classes) != first[1]:
            raise ConfigError(
                f"datasets '{first[0]}' and '{name}' have different category lists "
                f"({first[1]} and {list(classes)}); one model predicts one list"
            )
