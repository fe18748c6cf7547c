"""InstaOrder data for InstaOrderNet: training pairs, dataset mapper and loaders.

Shape shorthand: K annotated instances of an image, H x W image, S network input side.

docs/reference.md [ION 3] (inputs), [ION 4] (targets), [ION 6] (pair drawing); [DS 2-4]
(records, COCO masks, matrices). Dataset dicts come from
:func:`instaformer.data.datasets.load_instaorder_json` (registered as
``instaorder_2017_{train,val}``): ``file_name``, ``image_id``, ``height``, ``width``,
``annotations`` (COCO instances of ``instance_ids``, in order) and ``instaorder`` (the record).

Training items (one network input pair each, drawn in the mapper):

* task ``o``: one item per image that has at least one occlusion; the mapper draws an occluding
  cell with probability ``POSITIVE_RATIO`` (else a non-occluding ordered cell) and swaps A/B with
  probability 0.5. The reference redraws a uniformly random image when the drawn image has no
  occlusion; dropping those images up front gives the same distribution over images.
* tasks ``d`` / ``od``: one item per depth entry (``depth_entry`` index added to the dict), so an
  epoch is the number of labelled depth pairs, as in the reference; A/B as written in the entry,
  then swapped with probability 0.5.

Training mapper output: ``pair_input`` Tensor[5, S, S] (mask A, mask B, normalised RGB),
``occlusion_target`` Tensor[2] float ``(O[B, A], O[A, B])`` (-1 = ignored), ``depth_target``
Tensor[] int64 (0 = A closer, 1 = A farther, 2 = same, -1 = no label), ``overlap`` Tensor[] bool.

Test mapper output: ``image`` Tensor[3, H, W] uint8 (``INPUT.FORMAT`` channel order),
``instances`` (``gt_masks`` Tensor[K, H, W] bool, ``gt_boxes`` Tensor[K, 4] float x0, y0, x1, y1
from the COCO ``bbox``, ``gt_bbox_xywh`` Tensor[K, 4] float64, the COCO ``bbox`` itself, from
which patch-mode windows are computed exactly, ``gt_classes`` Tensor[K] COCO category ids), the
ground truth in the project convention (``occlusion_matrix``, ``depth_matrix``,
``overlap_matrix``, ``count_matrix``, each Tensor[K, K] int64, -1 for unlabelled depth pairs),
``height``, ``width``, ``image_id``, ``file_name``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from instaformer.data.datasets import register_all_instaorder
from instaformer.data.io import DataError, read_image
from instaformer.data.relations import build_order_matrices, parse_order
from instaformer.evaluation import DepthEvaluator, OcclusionEvaluator
from instaformer.instaordernet.inputs import normalize_rgb, patch_input
from instaformer.vocabulary import TASK_CODES, depth_labels_to_instaordernet, tasks_from_code
from mask2former import structures
from mask2former.config import CfgNode
from mask2former.data.build import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from mask2former.structures import Instances

__all__ = [
    "MAPPER_NAME",
    "DepthPairItems",
    "InstaOrderNetMapper",
    "build_evaluators",
    "build_test_loader",
    "build_train_loader",
    "decode_segmentation",
    "training_items",
]

MAPPER_NAME = "instaordernet_pairs"  # INPUT.DATASET_MAPPER_NAME of the InstaOrderNet configs
INPUT_MODES = ("patch", "resize")
# Training jitter of the patch window ([ION 3.1] step 4).
SHIFT_JITTER = 0.2  # centre shift, fraction of the window side
SCALE_JITTER = (0.8, 1.2)  # the side is divided by a factor drawn uniformly from this range
SWAP_PROBABILITY = 0.5  # [ION 6]: A and B swapped with this probability


def decode_segmentation(
    segmentation: Any, height: int, width: int, *, where: str = ""
) -> np.ndarray:
    """COCO ``segmentation`` (polygons, uncompressed or compressed RLE) -> uint8 array[H, W] in
    {0, 1}; polygon parts are merged into one mask ([DS 3]). Errors name ``where``."""
    try:
        return structures.decode_segmentation(segmentation, height, width).astype(np.uint8)
    except ValueError as err:
        raise DataError(f"{where}: {err}") from err


def _where(record: dict) -> str:
    return f"{record.get('file_name', '?')} (image_id {record.get('image_id')})"


def _matrices(record: dict, rm_bidirec: bool, rm_overlap: bool) -> dict[str, np.ndarray]:
    return build_order_matrices(
        record["instaorder"], rm_bidirec=rm_bidirec, rm_overlap=rm_overlap, where=_where(record)
    )


class DepthPairItems(Sequence):
    """One item per depth entry of ``records``: ``{**record, "depth_entry": k}`` (lazy)."""

    def __init__(self, records: Sequence[dict]) -> None:
        counts = np.array([len(r["instaorder"]["depth"]) for r in records], dtype=np.int64)
        self._records = records
        self._record_index = np.repeat(np.arange(len(records)), counts)
        starts = np.cumsum(counts) - counts
        self._entry_index = np.arange(int(counts.sum())) - np.repeat(starts, counts)

    def __len__(self) -> int:
        return len(self._record_index)

    def __getitem__(self, index: int) -> dict:  # type: ignore[override]
        record = self._records[int(self._record_index[index])]
        return {**record, "depth_entry": int(self._entry_index[index])}


def training_items(
    records: Sequence[dict], task: str, *, rm_bidirec: bool = False
) -> Sequence[dict]:
    """Training items of [ION 6] (module docstring): images with an occlusion for ``o``,
    depth entries for ``d`` / ``od``.

    Raises:
        ValueError: unknown task, or no usable item.
    """
    by_depth_pair = "depth" in tasks_from_code(task, "MODEL.INSTAORDERNET.TASK")
    if by_depth_pair:
        items: Sequence[dict] = DepthPairItems(records)
    else:
        items = [r for r in records if (_matrices(r, rm_bidirec, False)["occlusion"] == 1).any()]
    if len(items) == 0:
        what = "depth-labelled pair" if by_depth_pair else "image with an occlusion label"
        raise ValueError(f"InstaOrderNet task {task!r}: the training data has no {what}")
    return items


def _union_window(box_a: np.ndarray, box_b: np.ndarray) -> tuple[float, float, float]:
    """Centre and side of the square around the union of two xywh boxes ([ION 3.1] steps 2-3)."""
    left, top = min(box_a[0], box_b[0]), min(box_a[1], box_b[1])
    right = max(box_a[0] + box_a[2], box_b[0] + box_b[2])
    bottom = max(box_a[1] + box_a[3], box_b[1] + box_b[3])
    w, h = right - left, bottom - top
    side = max(math.sqrt(2 * w * h), 1.1 * w, 1.1 * h)
    return left + w / 2, top + h / 2, side


class InstaOrderNetMapper:
    """Dataset dict -> InstaOrderNet training item or test image (module docstring)."""

    def __init__(
        self,
        *,
        is_train: bool,
        task: str,
        input_mode: str,
        input_size: int,
        positive_ratio: float = 0.7,
        random_flip: bool = True,
        train_interpolation: str = "bicubic",
        rm_bidirec: bool = False,
        rm_overlap: bool = False,
        image_format: str = "RGB",
    ) -> None:
        """
        Args:
            is_train: draw a pair and build its network input, or map a whole test image.
            task: "o", "d" or "od".
            input_mode: "patch" (window around the pair) or "resize" (whole image).
            input_size: network input side S (pixels).
            positive_ratio: task o, probability of drawing an occluding cell.
            random_flip: horizontal flip of the training input with probability 0.5.
            train_interpolation: RGB resize at training, "bicubic" or "bilinear" (reference).
            rm_bidirec, rm_overlap: ``INPUT.RM_BIDIREC`` / ``INPUT.RM_OVERLAP`` ([DS 4]).
            image_format: "RGB" or "BGR", channel order of the test ``image``.
        """
        tasks_from_code(task, "task")
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input mode must be one of {INPUT_MODES}, got {input_mode!r}")
        if train_interpolation not in ("bicubic", "bilinear"):
            raise ValueError(
                f"train interpolation must be 'bicubic' or 'bilinear', got {train_interpolation!r}"
            )
        if not 0.0 <= positive_ratio <= 1.0:
            raise ValueError(f"positive ratio must be in [0, 1], got {positive_ratio}")
        self.is_train = is_train
        self.task = task
        self.input_mode = input_mode
        self.input_size = int(input_size)
        self.positive_ratio = positive_ratio
        self.random_flip = random_flip
        self.train_interpolation = train_interpolation
        self.rm_bidirec = rm_bidirec
        self.rm_overlap = rm_overlap
        self.image_format = image_format

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool) -> dict[str, Any]:
        """Constructor keyword arguments from ``cfg`` (the data package's mapper convention)."""
        if cfg.INPUT.DATASET_MAPPER_NAME != MAPPER_NAME:
            raise ValueError(
                f"INPUT.DATASET_MAPPER_NAME is {cfg.INPUT.DATASET_MAPPER_NAME!r}; InstaOrderNet "
                f"configs use {MAPPER_NAME!r}"
            )
        if cfg.INPUT.RANDOM_FLIP not in ("horizontal", "none"):
            raise ValueError(
                f"INPUT.RANDOM_FLIP must be 'horizontal' or 'none' for InstaOrderNet, got "
                f"{cfg.INPUT.RANDOM_FLIP!r}"
            )
        net = cfg.MODEL.INSTAORDERNET
        return {
            "is_train": is_train,
            "task": net.TASK,
            "input_mode": net.INPUT_MODE,
            "input_size": net.INPUT_SIZE,
            "positive_ratio": net.POSITIVE_RATIO,
            "random_flip": cfg.INPUT.RANDOM_FLIP == "horizontal",
            "train_interpolation": net.TRAIN_INTERPOLATION,
            "rm_bidirec": bool(cfg.INPUT.RM_BIDIREC),
            "rm_overlap": bool(cfg.INPUT.RM_OVERLAP),
            "image_format": cfg.INPUT.FORMAT,
        }

    def __call__(self, record: dict) -> dict[str, Any]:
        if "instaorder" not in record or "annotations" not in record:
            raise DataError(
                f"{_where(record)}: an InstaOrderNet dataset dict needs 'instaorder' and "
                "'annotations' (register it with instaformer.data.datasets.register_instaorder)"
            )
        n = len(record["instaorder"]["instance_ids"])
        if len(record["annotations"]) != n:
            raise DataError(
                f"{_where(record)}: {len(record['annotations'])} annotations for {n} instance_ids"
            )
        return self._train_item(record) if self.is_train else self._test_image(record)

    # -- test ------------------------------------------------------------------------------------
    def _test_image(self, record: dict) -> dict[str, Any]:
        image = read_image(record["file_name"], self.image_format)
        height, width = image.shape[:2]
        where = _where(record)
        anns = record["annotations"]
        masks = (
            np.stack(
                [decode_segmentation(a["segmentation"], height, width, where=where) for a in anns]
            )
            if anns
            else np.zeros((0, height, width), dtype=np.uint8)
        )
        bbox = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        boxes = bbox.float()
        boxes[:, 2:] += boxes[:, :2]  # xywh -> x0, y0, x1, y1
        instances = Instances(
            (height, width),
            gt_masks=torch.from_numpy(masks).bool(),
            gt_boxes=boxes,
            gt_bbox_xywh=bbox,
            gt_classes=torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
        )
        mats = _matrices(record, self.rm_bidirec, self.rm_overlap)
        out = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "instances": instances,
            "height": height,
            "width": width,
            "image_id": record.get("image_id"),
            "file_name": record["file_name"],
        }
        for key in ("occlusion", "depth", "overlap", "count"):
            out[f"{key}_matrix"] = torch.from_numpy(mats[key]).long()
        return out

    # -- training --------------------------------------------------------------------------------
    def _draw_pair(self, record: dict, occ: np.ndarray) -> tuple[int, int]:
        if "depth" not in TASK_CODES[self.task]:
            cells = occ.copy()
            np.fill_diagonal(cells, -1)
            positives = np.argwhere(cells == 1)
            negatives = np.argwhere(cells == 0)
            if len(positives) == 0:
                raise DataError(f"{_where(record)}: no occlusion to draw a training pair from")
            pool = positives
            if len(negatives) > 0 and np.random.random() >= self.positive_ratio:
                pool = negatives
            a, b = pool[np.random.randint(len(pool))]
            return int(a), int(b)
        entries = record["instaorder"]["depth"]
        k = record.get("depth_entry")
        if k is None or not 0 <= k < len(entries):
            raise DataError(
                f"{_where(record)}: depth/od training items need a valid 'depth_entry' "
                "(build them with instaformer.instaordernet.data.training_items)"
            )
        a, _, b, _ = parse_order(entries[k]["order"], len(occ), where=_where(record))
        return a, b

    def _train_item(self, record: dict) -> dict[str, Any]:
        mats = _matrices(record, self.rm_bidirec, self.rm_overlap)
        occ, depth, overlap = mats["occlusion"], mats["depth"], mats["overlap"]
        a, b = self._draw_pair(record, occ)
        if np.random.random() < SWAP_PROBABILITY:
            a, b = b, a
        image = read_image(record["file_name"], "RGB")
        height, width = image.shape[:2]
        anns = record["annotations"]
        where = _where(record)
        masks = torch.from_numpy(
            np.stack(
                [
                    decode_segmentation(anns[k]["segmentation"], height, width, where=where)
                    for k in (a, b)
                ]
            )
        ).float()
        rgb = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255.0
        if self.input_mode == "patch":
            boxes = [np.asarray(anns[k]["bbox"], dtype=np.float64) for k in (a, b)]
            pair_input = self._patch_input(rgb, masks, boxes[0], boxes[1])
        else:
            pair_input = self._resize_input(rgb, masks)
        if self.random_flip and np.random.random() < 0.5:
            pair_input = pair_input.flip(-1)
        return {
            "pair_input": pair_input,
            "occlusion_target": torch.tensor([occ[b, a], occ[a, b]], dtype=torch.float32),
            "depth_target": depth_labels_to_instaordernet(torch.tensor(int(depth[a, b]))),
            "overlap": torch.tensor(overlap[a, b] == 1),
            "image_id": record.get("image_id"),
            "pair": (a, b),
        }

    def _resize_input(self, rgb: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Whole image and masks to S x S, aspect ratio not kept ([ION 3.2])."""
        size = (self.input_size, self.input_size)
        rgb = F.interpolate(
            rgb[None], size=size, mode=self.train_interpolation, align_corners=False
        )
        small = F.interpolate(masks[None], size=size, mode="nearest")[0]
        return torch.cat([small, normalize_rgb(rgb[0])], dim=0)

    def _patch_input(
        self, rgb: torch.Tensor, masks: torch.Tensor, box_a: np.ndarray, box_b: np.ndarray
    ) -> torch.Tensor:
        """Jittered square window around the pair's union box ([ION 3.1] steps 1-6)."""
        cx, cy, side = _union_window(box_a, box_b)
        cx += np.random.uniform(-SHIFT_JITTER, SHIFT_JITTER) * side
        cy += np.random.uniform(-SHIFT_JITTER, SHIFT_JITTER) * side
        side = side / np.random.uniform(*SCALE_JITTER)
        x0, y0, s = int(cx - side / 2), int(cy - side / 2), max(int(side), 1)
        return patch_input(rgb, masks, x0, y0, s, self.input_size)


def build_train_loader(cfg: CfgNode, start_iter: int = 0) -> Iterable[list[dict]]:
    """Infinite training batches of ``SOLVER.IMS_PER_BATCH`` pair items (over all processes)
    drawn from ``DATASETS.TRAIN`` (InstaOrder splits, e.g. ``instaorder_2017_train``)."""
    register_all_instaorder()
    records = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
    items = training_items(
        records, cfg.MODEL.INSTAORDERNET.TASK, rm_bidirec=bool(cfg.INPUT.RM_BIDIREC)
    )
    return build_detection_train_loader(
        cfg,
        mapper=InstaOrderNetMapper(**InstaOrderNetMapper.from_config(cfg, is_train=True)),
        dataset=items,
        start_iter=start_iter,
    )


def build_test_loader(cfg: CfgNode, dataset_name: str) -> Iterable[list[dict]]:
    """One pass over ``dataset_name`` (an InstaOrder split), one test image per batch."""
    register_all_instaorder()
    return build_detection_test_loader(
        cfg,
        dataset_name,
        mapper=InstaOrderNetMapper(**InstaOrderNetMapper.from_config(cfg, is_train=False)),
    )


def build_evaluators(cfg: CfgNode, dataset_name: str, output_dir: str | None = None) -> list[Any]:
    """The project's order evaluators for ``MODEL.INSTAORDERNET.TASK``: occlusion P/R/F1 (o,
    od) and depth WHDR (d, od). Same shape as InstaFormer's evaluator builder; the pair
    evaluators read everything from the inputs and outputs, not from ``dataset_name``."""
    tasks = tasks_from_code(cfg.MODEL.INSTAORDERNET.TASK, "MODEL.INSTAORDERNET.TASK")
    evaluators: list[Any] = []
    if "occlusion" in tasks:
        evaluators.append(
            OcclusionEvaluator(
                zero_division=cfg.TEST.OCCLUSION_ZERO_DIV,
                multi_scale_evaluation=cfg.TEST.MULTI_SCALE_EVALUATION,
                output_dir=output_dir,
            )
        )
    if "depth" in tasks:
        evaluators.append(
            DepthEvaluator(
                multi_scale_evaluation=cfg.TEST.MULTI_SCALE_EVALUATION, output_dir=output_dir
            )
        )
    return evaluators
