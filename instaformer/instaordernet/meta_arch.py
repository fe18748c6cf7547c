"""InstaOrderNet as a meta-architecture: pair losses in training, order matrices at test time.

Shape shorthand: B pair items of a training batch, K instances of a test image,
P = K(K-1)/2 unordered pairs, S network input side, H x W image.

docs/reference.md [ION 5] (losses, both input orders per step), [ION 8] (inference over every pair,
both orders, symmetrised). Registered in ``META_ARCH_REGISTRY`` as "InstaOrderNet"
(``MODEL.META_ARCHITECTURE``); the pair classifier itself is
:class:`instaformer.instaordernet.network.InstaOrderResNet` (or, with
``MODEL.INSTAORDERNET.BACKBONE`` "timm", :class:`~instaformer.instaordernet.network.TimmOrderNet`),
held as ``self.net`` (so released weights load into ``model.net``, see
:func:`load_instaordernet_weights`).

Test outputs per image, in the project's matrix convention ([IF 0]), over the
instances of ``input["instances"].gt_masks`` in their order:

* ``"occlusion"``: Tensor[K, K] int64, ``[i, j] = 1`` iff P(i occludes j) > 0.5 (both, one or no
  direction can fire); diagonal 0. ``"occlusion_prob"``: Tensor[K, K] float, P(i occludes j).
* ``"depth"``: Tensor[K, K] int64, ``[i, j]`` 1 = i closer than j, 0 = farther, 2 = same depth;
  diagonal -1. ``"depth_prob"``: Tensor[K, K, 3] float, (P(i farther), P(i closer), P(same)).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from instaformer import model_zoo
from instaformer.instaordernet import network
from instaformer.instaordernet.data import INPUT_MODES
from instaformer.instaordernet.inputs import PatchModeInputs, ResizeModeInputs
from instaformer.instaordernet.losses import depth_loss, occlusion_loss, swap_targets
from instaformer.instaordernet.symmetrisation import (
    all_pairs,
    depth_matrix_from_pairs,
    occlusion_matrix_from_pairs,
    symmetrise_depth,
    symmetrise_occlusion,
)
from instaformer.vocabulary import (
    TASK_CLASSES,
    depth_classes_to_instaordernet,
    depth_labels_from_instaordernet,
    tasks_from_code,
    transpose_depth_labels,
)
from mask2former.checkpoint import load_torch_file
from mask2former.config import CfgNode, ConfigError
from mask2former.modeling.configurable import configurable
from mask2former.modeling.registry import META_ARCH_REGISTRY
from mask2former.structures import masks_to_xywh

__all__ = ["InstaOrderNet", "load_instaordernet_weights"]


@META_ARCH_REGISTRY.register()
class InstaOrderNet(nn.Module):
    """Pairwise order network over all instance pairs of an image (module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        net: nn.Module,
        input_mode: str,
        input_size: int,
        image_format: str = "RGB",
        pairs_per_forward: int = 64,
        test_box_enlarge: float | None = None,
        occlusion_weight: float = 1.0,
        depth_overlap_weight: float = 0.1,
        depth_distinct_weight: float = 0.9,
        depth_double_softmax: bool = False,
    ) -> None:
        """
        Args:
            net: the pair classifier, ``Tensor[B, 5, S, S] -> {task: logits}`` (its ``tasks``
                decide the outputs and losses): InstaOrderResNet or TimmOrderNet.
            input_mode: "patch" (window around each pair, o) or "resize" (whole image, d/od).
            input_size: network input side S (pixels).
            image_format: channel order of ``input["image"]`` at test time, "RGB" or "BGR".
            pairs_per_forward: network inputs per forward pass at test time (each unordered
                pair needs two: (i, j) and (j, i)); 1 reproduces the reference's one-at-a-time.
            test_box_enlarge: patch mode at test time: None crops as in training; k > 0 first
                enlarges each box to a square of side ``max(sqrt(k*w*h), 1.1w, 1.1h)``
                (reference: 3, [ION 3.1] / [ION 15.1]).
            occlusion_weight: weight of the occlusion loss.
            depth_overlap_weight, depth_distinct_weight: weights of the depth CE over pairs with
                overlapping / distinct depth extents ([ION 5]).
            depth_double_softmax: reference defect of the depth loss ([ION 15.2]).
        """
        super().__init__()
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if pairs_per_forward < 1:
            raise ValueError(f"pairs_per_forward must be >= 1, got {pairs_per_forward}")
        self.net = net
        self.input_mode = input_mode
        self.input_size = int(input_size)
        self.image_format = image_format
        self.pairs_per_forward = int(pairs_per_forward)
        self.test_box_enlarge = test_box_enlarge
        self.occlusion_weight = occlusion_weight
        self.depth_overlap_weight = depth_overlap_weight
        self.depth_distinct_weight = depth_distinct_weight
        self.depth_double_softmax = depth_double_softmax

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        net_cfg = cfg.MODEL.INSTAORDERNET
        tasks = tasks_from_code(net_cfg.TASK, "MODEL.INSTAORDERNET.TASK")
        if net_cfg.TEST_BOX_ENLARGE < 0:
            raise ValueError(
                f"MODEL.INSTAORDERNET.TEST_BOX_ENLARGE must be >= 0, got {net_cfg.TEST_BOX_ENLARGE}"
            )
        if net_cfg.BACKBONE == "InstaOrderResNet":
            net: nn.Module = network.InstaOrderResNet(tasks=tasks)
        elif net_cfg.BACKBONE == "timm":
            net = network.build_timm_order_net(cfg, tasks)
        else:
            raise ConfigError(
                f"MODEL.INSTAORDERNET.BACKBONE must be 'InstaOrderResNet' or 'timm', got "
                f"{net_cfg.BACKBONE!r}"
            )
        return {
            "net": net,
            "input_mode": net_cfg.INPUT_MODE,
            "input_size": net_cfg.INPUT_SIZE,
            "image_format": cfg.INPUT.FORMAT,
            "pairs_per_forward": net_cfg.PAIRS_PER_FORWARD,
            "test_box_enlarge": net_cfg.TEST_BOX_ENLARGE or None,
            "occlusion_weight": net_cfg.OCCLUSION_WEIGHT,
            "depth_overlap_weight": net_cfg.DEPTH_OVERLAP_WEIGHT,
            "depth_distinct_weight": net_cfg.DEPTH_DISTINCT_WEIGHT,
            "depth_double_softmax": net_cfg.DEPTH_DOUBLE_SOFTMAX,
        }

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.net.tasks

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def forward(self, batched_inputs: Sequence[dict[str, Any]]) -> Any:
        """Training: ``{"loss_occlusion", "loss_depth"}`` (the task's ones) from the mapper's
        pair items. Evaluation: one output dict per image (module docstring)."""
        if self.training:
            return self.losses(batched_inputs)
        outputs = []
        for inp in batched_inputs:
            image = inp["image"]
            if self.image_format == "BGR":
                image = image.flip(0)
            instances = inp["instances"]
            boxes = None
            if self.input_mode == "patch" and instances.has("gt_bbox_xywh"):
                boxes = instances.gt_bbox_xywh  # the annotation's boxes, exact (float64)
            elif self.input_mode == "patch" and instances.has("gt_boxes"):
                boxes = box_convert(instances.gt_boxes.double(), "xyxy", "xywh")
            outputs.append(self.predict(image, instances.gt_masks, boxes))
        return outputs

    # -- training --------------------------------------------------------------------------------
    def losses(self, batched_inputs: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        """Both input orders of every pair item, each pass supervised with its targets ([ION 5])."""
        x = torch.stack([b["pair_input"] for b in batched_inputs]).to(self.device)  # B x 5 x S x S
        out_ab = self.net(x)
        out_ba = self.net(x[:, [1, 0, 2, 3, 4]])  # masks A and B exchanged
        occ_t = dep_t = overlap = None
        if "occlusion" in self.tasks:
            occ_t = torch.stack([b["occlusion_target"] for b in batched_inputs]).to(self.device)
        if "depth" in self.tasks:
            dep_t = torch.stack([b["depth_target"] for b in batched_inputs]).to(self.device)
            overlap = torch.stack([b["overlap"] for b in batched_inputs]).to(self.device)
        occ_sw, dep_sw = swap_targets(occ_t, dep_t)
        losses = {}
        if occ_t is not None:
            losses["loss_occlusion"] = self.occlusion_weight * (
                occlusion_loss(out_ab["occlusion"], occ_t)
                + occlusion_loss(out_ba["occlusion"], occ_sw)
            )
        if dep_t is not None:
            kwargs = {
                "overlap_weight": self.depth_overlap_weight,
                "distinct_weight": self.depth_distinct_weight,
                "double_softmax": self.depth_double_softmax,
            }
            losses["loss_depth"] = depth_loss(out_ab["depth"], dep_t, overlap, **kwargs) + (
                depth_loss(out_ba["depth"], dep_sw, overlap, **kwargs)
            )
        return losses

    # -- inference -------------------------------------------------------------------------------
    def pair_logits(
        self, image: Tensor, masks: Tensor, boxes: Tensor | None, ordered: Tensor
    ) -> dict[str, Tensor]:
        """Network logits of ordered pairs, ``pairs_per_forward`` inputs per forward pass.

        The inputs are the original's, value for value, however the pairs are batched
        ([ION 3.4], :mod:`instaformer.instaordernet.inputs`).

        Args:
            image: Tensor[3, H, W] RGB, uint8 or float in [0, 1] (quantised to 8 bits).
            masks: Tensor[K, H, W] bool.
            boxes: Tensor[K, 4] xywh (patch mode; float64 keeps annotation boxes exact) or None.
            ordered: Tensor[M, 2] int64 (A, B) instance indices.
        Returns:
            ``{task: Tensor[M, C_task]}`` logits in the InstaOrderNet convention.
        """
        inputs: PatchModeInputs | ResizeModeInputs
        if self.input_mode == "patch":
            if boxes is None:
                raise ValueError("patch mode needs the instances' boxes")
            inputs = PatchModeInputs(
                image, masks, boxes, self.input_size, self.test_box_enlarge, device=self.device
            )
        else:
            inputs = ResizeModeInputs(image, masks, self.input_size, device=self.device)
        chunks: dict[str, list[Tensor]] = {t: [] for t in self.tasks}
        for start in range(0, ordered.shape[0], self.pairs_per_forward):
            x = inputs(ordered[start : start + self.pairs_per_forward])
            out = self.net(x.to(self.dtype))
            for task in self.tasks:
                chunks[task].append(out[task])
        return {t: torch.cat(v) for t, v in chunks.items()}

    @torch.no_grad()
    def predict(
        self, image: Tensor, masks: Tensor, boxes: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Orders between all instances of one image (module docstring for the outputs).

        Args:
            image: Tensor[3, H, W] RGB, uint8 (0-255) or float in [0, 1] (quantised to 8 bits,
                ``round(255 x)``, as the network inputs are built from 8-bit images).
            masks: Tensor[K, H, W] bool instance masks.
            boxes: Tensor[K, 4] xywh boxes (patch mode only; None = tight mask boxes; float64
                keeps annotation boxes exact).
        """
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be Tensor[3, H, W], got shape {tuple(image.shape)}")
        if masks.dim() != 3 or masks.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"masks must be Tensor[K, H, W] at the image size {tuple(image.shape[-2:])}, "
                f"got shape {tuple(masks.shape)}"
            )
        device = self.device
        masks = masks.bool()
        k = masks.shape[0]
        if self.input_mode == "patch" and boxes is None:
            boxes = masks_to_xywh(masks)
        pairs = all_pairs(k, device=device)  # P x 2, i < j
        # (i, j) and (j, i) of a pair are adjacent, so a forward pass of 2 inputs is one pair.
        ordered = torch.stack([pairs, pairs.flip(1)], dim=1).reshape(-1, 2)  # 2P x 2
        logits = (
            self.pair_logits(image, masks, boxes, ordered)
            if len(pairs)
            else {t: torch.zeros(0, TASK_CLASSES[t], device=device) for t in self.tasks}
        )
        out: dict[str, Tensor] = {}
        if "occlusion" in logits:
            z = logits["occlusion"].reshape(-1, 2, 2)  # P x (ab, ba) x 2
            probs = symmetrise_occlusion(z[:, 0], z[:, 1])  # P x 2
            prob_matrix = occlusion_matrix_from_pairs(pairs, probs, k)
            out["occlusion"] = (prob_matrix > 0.5).long()
            out["occlusion_prob"] = prob_matrix
        if "depth" in logits:
            z = logits["depth"].reshape(-1, 2, 3)
            probs = symmetrise_depth(z[:, 0], z[:, 1])  # P x 3: farther, closer, equal
            # arg-max in InstaOrderNet's class order, ties to the first ([ION 8]).
            choice = depth_classes_to_instaordernet(probs).argmax(dim=1)
            row_value = depth_labels_from_instaordernet(choice)  # D[i, j]
            col_value = transpose_depth_labels(row_value)  # D[j, i]
            depth = torch.full((k, k), -1, dtype=torch.int64, device=device)
            depth[pairs[:, 0], pairs[:, 1]] = row_value
            depth[pairs[:, 1], pairs[:, 0]] = col_value
            out["depth"] = depth
            out["depth_prob"] = depth_matrix_from_pairs(pairs, probs, k)
        return out


def load_instaordernet_weights(cfg: CfgNode, model: nn.Module, path: str | os.PathLike) -> None:
    """Initial weights for an InstaOrderNet meta-architecture built from ``cfg``
    (``MODEL.WEIGHTS``); config first, in the shape of the training loop's weight loaders.

    Accepts a released ``InstaOrder_InstaOrderNet_{o,d,od}.pth.tar`` (or a bare network state
    dict, with or without ``module.``), loaded into ``model.net`` with every mismatch listed;
    or a checkpoint of this project (``{"model": state_dict}``), loaded into ``model``.
    ``path`` may be remote (``https://``, ``zoo://NAME``): it is downloaded once and cached.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DownloadError: a remote ``path`` could not be fetched.
        ValueError: keys or shapes do not fit (all listed).
    """
    if not isinstance(model, InstaOrderNet):
        raise TypeError(f"expected an InstaOrderNet meta-architecture, got {type(model).__name__}")
    path = model_zoo.fetch(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.WEIGHTS not found: {path}")
    checkpoint = load_torch_file(path)  # names an empty, truncated or unsafe file
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        result = model.load_state_dict(checkpoint["model"], strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{path} does not fit the InstaOrderNet model: missing {result.missing_keys}, "
                f"unexpected {result.unexpected_keys}"
            )
        return
    network.load_instaordernet_checkpoint(model.net, path)
