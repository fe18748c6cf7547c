"""``MaskFormer``: detectron2-convention meta-architecture around backbone + mask head.

Shape shorthand: B images, Q queries, K classes (+1 = no object), E mask-embedding width,
H, W image size, Hp, Wp padded size (multiple of ``size_divisibility``), h, w = Hp/4, Wp/4,
M ground-truth segments of one image.

``model(batched_inputs)`` takes a list of dicts ``{"image": uint8 Tensor[3, H, W] in
INPUT.FORMAT channel order, "height": int, "width": int, "instances": Instances (training)}``.
Training returns ``{loss_name: scalar}`` (already weighted); evaluation returns one dict per
image with the requested results (``sem_seg`` Tensor[K, height, width], ``panoptic_seg``
``(int32 Tensor[height, width], segments_info)``, ``instances``), resized to ``height x width``.
Which results an evaluation call computes is chosen per call, ``model(batched_inputs,
results=("panoptic_seg",))``; None (the default) means those ``MODEL.MASK_FORMER.TEST.*_ON``
enable (``default_results``).

The forward is split into overridable steps (``preprocess_image``, ``run_network``,
``prepare_targets``, ``compute_losses``, ``inference``, ``postprocess_image``) so that a
subclass adding an order head reuses them without copying.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mask2former.config import CfgNode
from mask2former.data.catalog import MetadataCatalog
from mask2former.modeling.backbone.base import Backbone
from mask2former.modeling.configurable import configurable
from mask2former.modeling.criterion import SetCriterion
from mask2former.modeling.heads import build_sem_seg_head
from mask2former.modeling.matcher import HungarianMatcher
from mask2former.modeling.postprocessing import (
    instance_inference,
    panoptic_inference,
    sem_seg_postprocess,
    semantic_inference,
)
from mask2former.modeling.registry import BACKBONE_REGISTRY, META_ARCH_REGISTRY

# Results an evaluation call can compute, in the order they are computed.
RESULT_NAMES = ("sem_seg", "panoptic_seg", "instances")

__all__ = ["MASK_LOSSES", "RESULT_NAMES", "MaskFormer", "build_backbone", "thing_class_ids"]

# Losses of :class:`SetCriterion` that MaskFormer trains unless told otherwise.
MASK_LOSSES = ("labels", "masks")
# COCO panoptic: contiguous ids 0..79 are the thing classes, 80..132 stuff.
_COCO_PANOPTIC_NUM_CLASSES, _COCO_PANOPTIC_NUM_THINGS = 133, 80


def build_backbone(cfg: CfgNode) -> Backbone:
    """Backbone named by ``MODEL.BACKBONE.NAME`` for 3-channel input."""
    from mask2former.modeling.backbone.base import ShapeSpec

    backbone = BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg, ShapeSpec(channels=3))
    if not isinstance(backbone, Backbone):
        raise TypeError(f"backbone {cfg.MODEL.BACKBONE.NAME!r} must subclass Backbone")
    return backbone


def thing_class_ids(num_classes: int, dataset_names: Sequence[str] = ()) -> frozenset[int]:
    """Contiguous ids of the thing classes.

    From the metadata of the first of ``dataset_names`` that is registered with a
    ``thing_dataset_id_to_contiguous_id`` mapping (and, where it lists ``stuff_classes``, with
    ``num_classes`` of them): the mapping's values. Else COCO panoptic's first 80 for 133
    classes, else every class. :meth:`MaskFormer.from_config` passes ``DATASETS.TRAIN`` then
    ``DATASETS.TEST``, so the training set's metadata decides, as in the reference.
    """
    registered = set(MetadataCatalog.list())
    for name in dataset_names:
        if name not in registered:
            continue
        meta = MetadataCatalog.get(name)
        mapping = meta.get("thing_dataset_id_to_contiguous_id")
        stuff = meta.get("stuff_classes")
        if mapping is not None and (stuff is None or len(stuff) == num_classes):
            return frozenset(int(v) for v in mapping.values())
    if num_classes == _COCO_PANOPTIC_NUM_CLASSES:
        return frozenset(range(_COCO_PANOPTIC_NUM_THINGS))
    return frozenset(range(num_classes))


def pad_images(
    images: list[Tensor], size_divisibility: int
) -> tuple[Tensor, list[tuple[int, int]]]:
    """Stack Tensor[3, H_i, W_i] into Tensor[B, 3, Hp, Wp], zero-padded bottom/right.

    Hp, Wp = the largest H, W rounded up to a multiple of ``size_divisibility`` (if > 1).
    Returns the batch and the unpadded ``(H_i, W_i)``.
    """
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    hp = max(s[0] for s in sizes)
    wp = max(s[1] for s in sizes)
    if size_divisibility > 1:
        hp = -(-hp // size_divisibility) * size_divisibility
        wp = -(-wp // size_divisibility) * size_divisibility
    batch = images[0].new_zeros((len(images), images[0].shape[0], hp, wp))
    for b, im in enumerate(images):
        batch[b, :, : im.shape[-2], : im.shape[-1]].copy_(im)
    return batch, sizes


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Mask2Former: backbone -> pixel decoder -> masked transformer decoder -> losses / results."""

    # Buffers (``register_buffer``): float Tensor[3, 1, 1] normalisation statistics.
    pixel_mean: Tensor
    pixel_std: Tensor

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: SetCriterion,
        num_queries: int,
        object_mask_threshold: float,
        overlap_threshold: float,
        thing_ids: frozenset[int],
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: tuple[float, float, float],
        pixel_std: tuple[float, float, float],
        semantic_on: bool,
        panoptic_on: bool,
        instance_on: bool,
        test_topk_per_image: int,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.thing_ids = frozenset(thing_ids)
        if size_divisibility < 0:
            size_divisibility = backbone.size_divisibility
        self.size_divisibility = size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.semantic_on = semantic_on
        self.panoptic_on = panoptic_on
        self.instance_on = instance_on
        self.test_topk_per_image = test_topk_per_image

    @classmethod
    def from_config(cls, cfg: CfgNode, *, losses: Sequence[str] = MASK_LOSSES) -> dict:
        """Keyword arguments from Mask2Former's keys; ``losses``: the criterion's trained
        losses, a subset of :data:`MASK_LOSSES` (a subclass passes its own selection)."""
        mf = cfg.MODEL.MASK_FORMER
        unknown = [n for n in losses if n not in MASK_LOSSES]
        if unknown:
            raise ValueError(f"unknown Mask2Former losses {unknown}; known: {list(MASK_LOSSES)}")
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        matcher = HungarianMatcher(
            cost_class=mf.CLASS_WEIGHT,
            cost_mask=mf.MASK_WEIGHT,
            cost_dice=mf.DICE_WEIGHT,
            num_points=mf.TRAIN_NUM_POINTS,
        )
        weight_dict = {
            "loss_ce": mf.CLASS_WEIGHT,
            "loss_mask": mf.MASK_WEIGHT,
            "loss_dice": mf.DICE_WEIGHT,
        }
        if mf.DEEP_SUPERVISION:
            aux = {}
            for i in range(mf.DEC_LAYERS - 1):
                aux.update({f"{k}_{i}": v for k, v in weight_dict.items()})
            weight_dict.update(aux)
        criterion = SetCriterion(
            num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            matcher=matcher,
            weight_dict=weight_dict,
            eos_coef=mf.NO_OBJECT_WEIGHT,
            losses=list(losses),
            num_points=mf.TRAIN_NUM_POINTS,
            oversample_ratio=mf.OVERSAMPLE_RATIO,
            importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
        )
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": criterion,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "object_mask_threshold": mf.TEST.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": mf.TEST.OVERLAP_THRESHOLD,
            "thing_ids": thing_class_ids(
                cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
            ),
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE,
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
            "semantic_on": mf.TEST.SEMANTIC_ON,
            "instance_on": mf.TEST.INSTANCE_ON,
            "panoptic_on": mf.TEST.PANOPTIC_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def default_results(self) -> tuple[str, ...]:
        """The results an evaluation call computes when it names none (the ``TEST.*_ON`` keys)."""
        on = {
            "sem_seg": self.semantic_on,
            "panoptic_seg": self.panoptic_on,
            "instances": self.instance_on,
        }
        return tuple(name for name in RESULT_NAMES if on[name])

    def check_results(self, results: Sequence[str] | None) -> tuple[str, ...]:
        """``results`` as a tuple in :data:`RESULT_NAMES` order (None: :attr:`default_results`);
        an unknown name is refused."""
        if results is None:
            return self.default_results
        unknown = [r for r in results if r not in RESULT_NAMES]
        if unknown:
            raise ValueError(f"unknown results {unknown}; known: {list(RESULT_NAMES)}")
        return tuple(name for name in RESULT_NAMES if name in results)

    def preprocess_image(self, batched_inputs: list[dict]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Normalise each image with PIXEL_MEAN/STD and pad the batch.

        Returns:
            Tensor[B, 3, Hp, Wp] (padding = 0 after normalisation) and the ``(H, W)`` sizes.
        """
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return pad_images(images, self.size_divisibility)

    def run_network(self, images: Tensor) -> tuple[dict, Tensor, Tensor]:
        """Tensor[B, 3, Hp, Wp] -> (outputs, mask_embed Tensor[B, Q, E], mask_features
        Tensor[B, E, h, w]); ``outputs`` as :class:`MaskFormerHead` returns it."""
        features = self.backbone(images)
        return self.sem_seg_head(features)

    def prepare_targets(self, batched_inputs: list[dict], images: Tensor) -> list[dict]:
        """Per image ``{"labels": LongTensor[M], "masks": bool Tensor[M, Hp, Wp]}``.

        An input without ``"instances"`` (no non-crowd segment) gives M = 0.
        """
        hp, wp = images.shape[-2:]
        targets = []
        for x in batched_inputs:
            inst = x.get("instances")
            if inst is None or len(inst) == 0:
                labels = torch.zeros((0,), dtype=torch.int64, device=self.device)
                masks = torch.zeros((0, hp, wp), dtype=torch.bool, device=self.device)
            else:
                gt_masks = inst.gt_masks.to(self.device)
                labels = inst.gt_classes.to(self.device)
                masks = torch.zeros(
                    (gt_masks.shape[0], hp, wp), dtype=gt_masks.dtype, device=self.device
                )
                masks[:, : gt_masks.shape[1], : gt_masks.shape[2]] = gt_masks
            targets.append({"labels": labels, "masks": masks})
        return targets

    def compute_losses(
        self, outputs: dict, targets: list[dict], indices: list | None = None
    ) -> dict[str, Tensor]:
        """Criterion losses multiplied by their weights; losses without a weight are dropped."""
        losses = self.criterion(outputs, targets, indices)
        weights = self.criterion.weight_dict
        return {k: v * weights[k] for k, v in losses.items() if k in weights}

    def forward(
        self, batched_inputs: list[dict], results: Sequence[str] | None = None
    ) -> dict[str, Tensor] | list[dict]:
        """See the module docstring; ``results``: names among :data:`RESULT_NAMES` that an
        evaluation call computes (None: :attr:`default_results`)."""
        images, image_sizes = self.preprocess_image(batched_inputs)
        outputs, _, _ = self.run_network(images)
        if self.training:
            return self.compute_losses(outputs, self.prepare_targets(batched_inputs, images))
        padded_size = (images.shape[-2], images.shape[-1])
        return self.inference(outputs, batched_inputs, image_sizes, padded_size, results)

    def upsample_masks(self, pred_masks: Tensor, padded_size: tuple[int, int]) -> Tensor:
        """Tensor[B, Q, h, w] -> Tensor[B, Q, Hp, Wp], bilinear (align_corners=False)."""
        return F.interpolate(pred_masks, size=padded_size, mode="bilinear", align_corners=False)

    def inference(
        self,
        outputs: dict,
        batched_inputs: list[dict],
        image_sizes: list[tuple[int, int]],
        padded_size: tuple[int, int],
        results: Sequence[str] | None = None,
    ) -> list[dict]:
        """Per image results (see :meth:`postprocess_image`), computed in float32 also under
        autocast: the results hold float32 scores and probabilities."""
        wanted = self.check_results(results)
        logits = outputs["pred_logits"]
        with torch.autocast(logits.device.type, enabled=False):
            mask_pred_results = self.upsample_masks(outputs["pred_masks"].float(), padded_size)
            per_image = []
            for mask_cls, mask_pred, x, size in zip(
                logits.float(), mask_pred_results, batched_inputs, image_sizes, strict=True
            ):
                height = x.get("height", size[0])
                width = x.get("width", size[1])
                per_image.append(
                    self.postprocess_image(mask_cls, mask_pred, size, height, width, wanted)
                )
        return per_image

    def postprocess_image(
        self,
        mask_cls: Tensor,
        mask_pred: Tensor,
        image_size: tuple[int, int],
        height: int,
        width: int,
        results: Sequence[str] | None = None,
    ) -> dict:
        """One image's results from Tensor[Q, K+1] logits and Tensor[Q, Hp, Wp] mask logits.

        ``results``: names among :data:`RESULT_NAMES` to compute (None: :attr:`default_results`).
        Masks are resized to ``height x width`` before inference when panoptic or instance
        results are computed or ``SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE`` asks for it.

        Returns:
            dict with (as requested) ``sem_seg`` Tensor[K, height, width], ``panoptic_seg``
            ``(int32 Tensor[height, width], segments_info)`` and ``instances``; with panoptic,
            also ``panoptic_keep`` bool Tensor[Q] (queries passing the class test).
        """
        wanted = self.check_results(results)
        panoptic = "panoptic_seg" in wanted
        before = self.sem_seg_postprocess_before_inference or panoptic or "instances" in wanted
        result: dict = {}
        if before:
            mask_pred = sem_seg_postprocess(mask_pred, image_size, height, width)
            mask_cls = mask_cls.to(mask_pred)
        if "sem_seg" in wanted:
            r = semantic_inference(mask_cls, mask_pred)
            if not before:
                r = sem_seg_postprocess(r, image_size, height, width)
            result["sem_seg"] = r
        # Any registered head (``SEM_SEG_HEAD_REGISTRY``) has an int ``num_classes``.
        num_classes = cast(int, self.sem_seg_head.num_classes)
        if panoptic:
            seg, segments_info, keep = panoptic_inference(
                mask_cls,
                mask_pred,
                num_classes=num_classes,
                thing_ids=self.thing_ids,
                object_mask_threshold=self.object_mask_threshold,
                overlap_threshold=self.overlap_threshold,
            )
            result["panoptic_seg"] = (seg, segments_info)
            result["panoptic_keep"] = keep
        if "instances" in wanted:
            result["instances"] = instance_inference(
                mask_cls,
                mask_pred,
                num_classes=num_classes,
                test_topk_per_image=self.test_topk_per_image,
                thing_ids=self.thing_ids if panoptic else None,
            )
        return result
