"""``InstaFormer``: Mask2Former plus an order head (docs/reference.md [IF 1.2-1.5, 2, 3.1-3.3]).

Shape shorthand: B images, Q queries, C mask-embedding width, Hp x Wp padded image, h x w mask
logits / mask features (Hp/4 x Wp/4), n annotated ground-truth instances of one image, k thing
segments of one panoptic prediction, K classes of an order task, L order-head layers.

Building. The released configs name ``MODEL.META_ARCHITECTURE: "MaskFormer"`` (the reference
edited Mask2Former's class in place). Here Mask2Former's :class:`MaskFormer` stays unchanged and
``InstaFormer`` subclasses it under its own registry name; :func:`instaformer.modeling.build_model`
maps the config name "MaskFormer" to "InstaFormer" (``META_ARCH_ALIASES``). With
``GEOMETRIC_PREDICTOR.NAME = ""`` there is no order head and the model is exactly MaskFormer: same
forward, same state-dict keys. With a head, the state dict holds ``geometric_predictor.*`` between
``sem_seg_head.*`` and ``criterion.*``, in the reference's order.

Training (``model.train()``; inputs from the ``instaorder_panoptic`` mapper). The point-sampled
Hungarian matcher runs once on the final decoder layer; its matching feeds both the Mask2Former
losses and the query selection of the order head: per image the queries matched to the
annotated instances ``tgt_pan_idx`` (indices into the non-crowd ``instances``), in that order, so
head row r lines up with row r of ``occlusion_matrix`` / ``depth_matrix``. Their
:class:`~instaformer.modeling.order.OrderInputs` (mask embeddings, binarised mask logits
(logit > 0), the image's mask features, the input image and its valid part of the mask map) go to
the head's ``log_probs`` (the order-head contract, ``instaformer/modeling/order/contract.py``).
Order losses (:class:`OrderCriterion`) on those log-probabilities: mean over the labelled
off-diagonal pairs of an image (-1 cells ignored), mean over images with such a pair, every head
layer supervised when ``MASK_FORMER.DEEP_SUPERVISION``, weights ``OCCLUSION_WEIGHT`` /
``DEPTH_WEIGHT``. Images with fewer than 2 annotated instances skip the head; a batch without
any gives zero order losses. Loss keys: ``loss_ce``, ``loss_mask``, ``loss_dice`` (+ ``_<i>``),
``loss_occlusion`` / ``loss_depth`` (+ ``_<l>`` per earlier head layer).

* Heads with ``uses_class_prior`` (holistic head): Balanced Softmax with
  ``INPUT.OCC_SAMPLES_PER_CLASS`` / ``INPUT.DEPTH_SAMPLES_PER_CLASS`` (``DEPTH_LOSS = "ce"``:
  plain cross-entropy for depth).
* Heads without (pairwise ``PairwiseResNet``; o, d and od; the reference could only train o, on
  one sampled pair): negative log-likelihood of its symmetrised probabilities (InstaOrderNet was
  trained without a prior), over every labelled ordered pair.

Inference (``model.eval()``). The usual Mask2Former results (``sem_seg``, ``panoptic_seg``,
``instances``, ``panoptic_keep`` as ``MODEL.MASK_FORMER.TEST.*_ON`` enable) plus, for each task
with ``OCCLUSION_ON`` / ``DEPTH_ON``:

* ``"occlusion"``: Tensor[k, k] int64, 1 = row occludes column, 0 = not, diagonal -1;
  ``"occlusion_prob"``: Tensor[k, k] float, probability that row occludes column, diagonal 0;
* ``"depth"``: Tensor[k, k] int64, 1 = row closer, 0 = row farther, 2 = same depth, diagonal -1;
  ``"depth_prob"``: Tensor[k, k, 3] float (farther, closer, same), diagonal 0;

from the last head layer (labels = argmax of the log-probabilities, probabilities = their exp).
The rows are chosen per call, ``model(batched_inputs, order_rows=...)``:

* ``"ground_truth"`` (default when every input carries ``tgt_pan_idx``, as the
  ``instaorder_panoptic`` mapper's do): queries are matched to the input's ground truth with the
  deterministic full-mask matching and row r is annotated instance ``tgt_pan_idx[r]`` (k = n,
  aligned with the input matrices); the inputs need ``instances`` too;
* ``"segments"`` (default when no input carries ``tgt_pan_idx``; blind inference): row r is the
  r-th thing segment of ``panoptic_seg``'s ``segments_info``, and ``"order_segment_ids"``
  Tensor[k] int64 gives its segment id. No thing segment gives empty Tensor[0, 0] matrices.

A batch mixing inputs with and without ``tgt_pan_idx`` needs an explicit ``order_rows``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from instaformer.config import REMOVABLE_LOSSES
from instaformer.modeling.matching import full_mask_matching
from instaformer.modeling.order import (
    OrderCriterion,
    OrderHead,
    OrderInputs,
    build_order_head,
    select_matched_queries,
    select_segment_queries,
)
from instaformer.vocabulary import GT_MATRIX_KEYS, TASK_CLASSES
from mask2former.config import CfgNode
from mask2former.modeling.adapters import ADAPTER_TYPES
from mask2former.modeling.configurable import configurable
from mask2former.modeling.meta_arch import MASK_LOSSES, MaskFormer
from mask2former.modeling.registry import META_ARCH_REGISTRY

__all__ = ["ORDER_ROWS", "InstaFormer", "NetworkOutputs", "order_results"]

# Output flag of each order task.
_ON_KEYS = {"occlusion": "OCCLUSION_ON", "depth": "DEPTH_ON"}
_DEPTH_LOSSES = ("balanced_softmax", "ce")
# Values of ``InstaFormer.forward``'s ``order_rows``: whose relations the order matrices hold.
ORDER_ROWS = ("ground_truth", "segments")


@dataclass(frozen=True)
class NetworkOutputs:
    """One batch's network outputs, as the order steps read them (one field per output).

    Attributes:
        outputs: the decoder's dict: ``pred_logits`` Tensor[B, Q, K+1], ``pred_masks``
            Tensor[B, Q, h, w] (final layer), ``aux_outputs`` (earlier layers).
        mask_embed: Tensor[B, Q, C] final-layer mask embeddings.
        mask_features: Tensor[B, C, h, w] pixel-decoder mask features.
        image_sizes: ``(H, W)`` of each unpadded image.
        padded_size: ``(Hp, Wp)`` of the padded batch.
    """

    outputs: dict
    mask_embed: Tensor
    mask_features: Tensor
    image_sizes: list[tuple[int, int]]
    padded_size: tuple[int, int]

    def valid_size(self, b: int) -> tuple[int, int]:
        """Part ``(h', w')`` of image ``b``'s h x w maps that covers the unpadded image."""
        (height, width), (hp, wp) = self.image_sizes[b], self.padded_size
        h, w = self.mask_features.shape[-2:]
        return math.ceil(height * h / hp), math.ceil(width * w / wp)


def order_results(
    head_outputs: dict[str, list[Tensor]], tasks: Sequence[str], *, normalised: bool = False
) -> dict:
    """Final order matrices from one image's head output (see the module docstring).

    Args:
        head_outputs: ``{task: [Tensor[k, k, K] per head layer]}``, ``[i, j]`` = row instance i
            vs column instance j: log-probabilities (``normalised``) or logits
            (``OrderHead.scores``, exported graphs).
        tasks: tasks to report, each a key of ``head_outputs``.
        normalised: the outputs are log-probabilities: probabilities are their exp (no second
            softmax); else the softmax of the logits.

    Returns:
        ``{task: Tensor[k, k] int64, task + "_prob": Tensor[k, k] (occlusion) or
        Tensor[k, k, 3] (depth)}``.
    """
    out = {}
    for task in tasks:
        scores = head_outputs[task][-1]
        k = scores.shape[0]
        eye = torch.eye(k, dtype=torch.bool, device=scores.device)
        labels = scores.argmax(-1).masked_fill(eye, -1)
        prob = scores.float().exp() if normalised else scores.float().softmax(-1)
        prob = prob.masked_fill(eye[..., None], 0.0)
        out[task] = labels
        out[f"{task}_prob"] = prob[..., 1] if task == "occlusion" else prob
    return out


@META_ARCH_REGISTRY.register()
class InstaFormer(MaskFormer):
    """Mask2Former with an optional order head ``geometric_predictor`` (module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        geometric_predictor: OrderHead | None = None,
        order_criterion: OrderCriterion | None = None,
        output_tasks: Sequence[str] = (),
        match_costs: tuple[float, float, float] = (2.0, 5.0, 5.0),
        input_format: str = "RGB",
        freeze_backbone: bool = False,
        freeze_sem_seg_head: bool = False,
        **maskformer_kwargs,
    ) -> None:
        """
        Args:
            geometric_predictor: the order head (:class:`OrderHead`: ``tasks``, ``num_layers``,
                ``log_probs(OrderInputs)``), or None for plain Mask2Former.
            order_criterion: order losses (its ``weights`` name the trained tasks), or None.
            output_tasks: tasks whose matrices inference returns (subset of the head's tasks).
            match_costs: (class, mask, dice) weights of the ground-truth rows' full-mask matching.
            input_format: "RGB" or "BGR", channel order of the inputs' ``image`` (told to the
                head in :class:`OrderInputs`).
            freeze_backbone, freeze_sem_seg_head: stop the gradients of the backbone / the
                decoders, the adapters excepted (:meth:`freeze`).
            maskformer_kwargs: the arguments of :class:`MaskFormer`.
        """
        super().__init__(**maskformer_kwargs)
        head_tasks = () if geometric_predictor is None else tuple(geometric_predictor.tasks)
        missing = [t for t in output_tasks if t not in head_tasks]
        if missing:
            raise ValueError(
                f"order outputs {missing} requested (MODEL.GEOMETRIC_PREDICTOR.OCCLUSION_ON / "
                f"DEPTH_ON) but the order head predicts {head_tasks}"
            )
        if order_criterion is not None:
            untrained = [t for t in order_criterion.weights if t not in head_tasks]
            if untrained:
                raise ValueError(f"order losses {untrained} but the order head has {head_tasks}")
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got {input_format!r}")
        # Register the head before the criterion: the reference's state-dict order.
        criterion = self.criterion
        del self.criterion
        self.geometric_predictor = geometric_predictor
        self.criterion = criterion
        self.order_criterion = order_criterion
        self.output_tasks = tuple(output_tasks)
        self.match_costs = tuple(match_costs)
        self.input_format = input_format
        self.freeze(backbone=freeze_backbone, sem_seg_head=freeze_sem_seg_head)

    @classmethod
    # The kept Mask2Former losses come from MODEL.REMOVE_LOSSES, not from a ``losses`` argument
    # (``configurable`` calls ``from_config(cfg)`` only).
    def from_config(cls, cfg: CfgNode) -> dict:  # type: ignore[override]
        unknown = [n for n in cfg.MODEL.REMOVE_LOSSES if n not in REMOVABLE_LOSSES]
        if unknown:
            raise ValueError(
                f"MODEL.REMOVE_LOSSES has unknown names {unknown}; known: {list(REMOVABLE_LOSSES)}"
            )
        kept = [n for n in MASK_LOSSES if n not in cfg.MODEL.REMOVE_LOSSES]
        kwargs = super().from_config(cfg, losses=kept)
        kwargs["freeze_backbone"] = cfg.MODEL.BACKBONE.FREEZE
        kwargs["freeze_sem_seg_head"] = cfg.MODEL.SEM_SEG_HEAD.FREEZE
        gp = cfg.MODEL.GEOMETRIC_PREDICTOR
        mf = cfg.MODEL.MASK_FORMER
        head = build_order_head(cfg)
        kwargs["geometric_predictor"] = head
        kwargs["match_costs"] = (mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT)
        kwargs["input_format"] = cfg.INPUT.FORMAT
        if head is None:
            return kwargs
        kwargs["output_tasks"] = tuple(t for t in _ON_KEYS if getattr(gp, _ON_KEYS[t]))
        trained = [t for t in head.tasks if t not in cfg.MODEL.REMOVE_LOSSES]
        if trained:
            kwargs["order_criterion"] = _build_order_criterion(cfg, trained, head)
        return kwargs

    def freeze(self, *, backbone: bool, sem_seg_head: bool) -> None:
        """Stop gradients of the backbone / head; adapters stay trainable ([IF 1.2.3]).

        Frozen modules keep their train/eval mode (drop-path stays active, as the reference).
        """
        parts = ((self.backbone, backbone), (self.sem_seg_head, sem_seg_head))
        frozen = [module for module, freeze in parts if freeze]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad = False
        for module in frozen:
            for m in module.modules():
                if isinstance(m, ADAPTER_TYPES):
                    for p in m.parameters():
                        p.requires_grad = True

    @property
    def _order_head(self) -> OrderHead:
        """The order head ``geometric_predictor``; ValueError when the model has none."""
        if self.geometric_predictor is None:
            raise ValueError(
                "this model has no order head (MODEL.GEOMETRIC_PREDICTOR.NAME is empty)"
            )
        return self.geometric_predictor

    @property
    def num_order_layers(self) -> int:
        """Predictions per task of the order head (its ``num_layers``)."""
        return int(self._order_head.num_layers)

    def forward(
        self,
        batched_inputs: list[dict],
        results: Sequence[str] | None = None,
        *,
        order_rows: str | None = None,
    ) -> dict[str, Tensor] | list[dict]:
        """See the module docstring (and :class:`MaskFormer` for the input dicts).

        Args:
            batched_inputs: one dict per image. Training and ``"ground_truth"`` rows need
                ``instances``, ``tgt_pan_idx`` LongTensor[n] and, for training, the GT matrices
                of the trained tasks (``occlusion_matrix`` / ``depth_matrix`` int Tensor[n, n]).
            results: inference only: the segmentation results to compute, names among
                ``mask2former.modeling.meta_arch.RESULT_NAMES`` (None: those the config's
                ``TEST.*_ON`` enable); segment rows need ``"panoptic_seg"`` among them.
            order_rows: inference only, keyword: ``"ground_truth"``, ``"segments"`` or None
                (ground truth when every input has ``tgt_pan_idx``, segments when none has).
        """
        if order_rows is not None and order_rows not in ORDER_ROWS:
            raise ValueError(f"order_rows must be one of {ORDER_ROWS} or None, got {order_rows!r}")
        if self.geometric_predictor is None:
            return super().forward(batched_inputs, results)
        images, image_sizes = self.preprocess_image(batched_inputs)
        outputs, mask_embed, mask_features = self.run_network(images)
        net = NetworkOutputs(
            outputs, mask_embed, mask_features, image_sizes, (images.shape[-2], images.shape[-1])
        )
        if self.training:
            targets = self.prepare_targets(batched_inputs, images)
            return self.training_losses(net, targets, batched_inputs)
        wanted = self.check_results(results)
        rows = order_rows or _default_rows(batched_inputs)
        if self.output_tasks and rows == "segments" and "panoptic_seg" not in wanted:
            raise ValueError(
                "order rows 'segments' (inference without ground truth) order panoptic "
                "segments: set MODEL.MASK_FORMER.TEST.PANOPTIC_ON True or pass "
                "results=('panoptic_seg', ...)"
            )
        per_image = self.inference(outputs, batched_inputs, image_sizes, net.padded_size, wanted)
        if not self.output_tasks:
            return per_image
        if rows == "ground_truth":
            targets = self.prepare_targets(batched_inputs, images)
            self.attach_gt_orders(per_image, net, targets, batched_inputs)
        else:
            self.attach_blind_orders(per_image, net, batched_inputs)
        return per_image

    def order_inputs(
        self,
        queries: Tensor,
        mask_embed: Tensor,
        mask_logits: Tensor,
        mask_features: Tensor,
        *,
        image: Tensor | None = None,
        valid_size: tuple[int, int] | None = None,
    ) -> OrderInputs:
        """The order head's bundle for the given queries of one image.

        Args:
            queries: LongTensor[n] query indices; row r of the head's output is ``queries[r]``.
            mask_embed: Tensor[Q, C] final-layer mask embeddings of the image.
            mask_logits: Tensor[Q, h, w] final-layer mask logits (binarised here at 0).
            mask_features: Tensor[C, h, w] pixel-decoder mask features.
            image: uint8 Tensor[3, H, W] the input image (``INPUT.FORMAT`` channel order), or None.
            valid_size: ``(h', w')`` part of the h x w map inside the unpadded image; None = all.
        """
        queries = queries.to(mask_embed.device)
        return OrderInputs(
            mask_embed=mask_embed[queries],
            masks=mask_logits[queries] > 0,  # n x h x w, no gradient
            mask_features=mask_features,
            image=image,
            image_format=self.input_format,
            valid_size=(
                (mask_features.shape[-2], mask_features.shape[-1])
                if valid_size is None
                else valid_size
            ),
        )

    def run_order_head(
        self,
        queries: Tensor,
        mask_embed: Tensor,
        mask_logits: Tensor,
        mask_features: Tensor,
        *,
        image: Tensor | None = None,
        valid_size: tuple[int, int] | None = None,
    ) -> dict[str, list[Tensor]]:
        """The head's raw ``scores`` (logits) for the given queries of one image (arguments as
        :meth:`order_inputs`): the numbers the reference fixtures and benchmarks compare.

        Returns:
            ``{task: [Tensor[n, n, K] per head layer]}``, ``[i, j]`` = query ``queries[i]`` vs
            query ``queries[j]``; ``order_results`` turns them into matrices.
        """
        bundle = self.order_inputs(
            queries, mask_embed, mask_logits, mask_features, image=image, valid_size=valid_size
        )
        return self._order_head.scores(bundle)

    def _image_log_probs(
        self, net: NetworkOutputs, b: int, queries: Tensor, batched_input: dict
    ) -> dict[str, list[Tensor]]:
        """The head's log-probabilities for the ``queries`` of image ``b`` of the batch."""
        bundle = self.order_inputs(
            queries,
            net.mask_embed[b],
            net.outputs["pred_masks"][b],
            net.mask_features[b],
            image=batched_input["image"],
            valid_size=net.valid_size(b),
        )
        return self._order_head.log_probs(bundle)

    def training_losses(
        self, net: NetworkOutputs, targets: list[dict], batched_inputs: list[dict]
    ) -> dict[str, Tensor]:
        """Weighted Mask2Former and order losses; one matching for both (module docstring)."""
        outputs = net.outputs
        main = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        indices = self.criterion.matcher(main, targets)
        losses = self.compute_losses(outputs, targets, indices) if self.criterion.losses else {}
        if self.order_criterion is None:
            return losses
        head_outputs, order_targets = [], []
        for b, x in enumerate(batched_inputs):
            tgt_pan_idx = _tgt_pan_idx(x, len(targets[b]["labels"]))
            n = len(tgt_pan_idx)
            if n < 2:  # no pair to supervise
                continue
            order_targets.append({t: _gt_matrix(x, t, n) for t in self.order_criterion.weights})
            query_idx, gt_idx = indices[b]
            queries = select_matched_queries(query_idx, gt_idx, tgt_pan_idx)
            head_outputs.append(self._image_log_probs(net, b, queries, x))
        weights = self.order_criterion.weight_dict(self.num_order_layers)
        if not head_outputs:
            zero = net.mask_embed.new_zeros(())
            losses.update(dict.fromkeys(weights, zero))
            return losses
        raw = self.order_criterion(head_outputs, order_targets)
        losses.update({k: v * weights[k] for k, v in raw.items()})
        return losses

    def attach_gt_orders(
        self,
        results: list[dict],
        net: NetworkOutputs,
        targets: list[dict],
        batched_inputs: list[dict],
    ) -> None:
        """Ground-truth rows: add the order matrices over each input's annotated instances."""
        main = {k: v for k, v in net.outputs.items() if k != "aux_outputs"}
        cost_class, cost_mask, cost_dice = self.match_costs
        indices = full_mask_matching(
            main, targets, cost_class=cost_class, cost_mask=cost_mask, cost_dice=cost_dice
        )
        for b, (x, result) in enumerate(zip(batched_inputs, results, strict=True)):
            tgt_pan_idx = _tgt_pan_idx(x, len(targets[b]["labels"]))
            queries = select_matched_queries(*indices[b], tgt_pan_idx)
            log_probs = self._image_log_probs(net, b, queries, x)
            result.update(order_results(log_probs, self.output_tasks, normalised=True))

    def attach_blind_orders(
        self, results: list[dict], net: NetworkOutputs, batched_inputs: list[dict]
    ) -> None:
        """Segment rows: add the order matrices over the thing segments of each panoptic result
        (``results`` hold ``panoptic_seg``)."""
        for b, (x, result) in enumerate(zip(batched_inputs, results, strict=True)):
            queries, segment_ids = select_segment_queries(result["panoptic_seg"][1])
            log_probs = self._image_log_probs(net, b, queries, x)
            result.update(order_results(log_probs, self.output_tasks, normalised=True))
            result["order_segment_ids"] = torch.tensor(
                segment_ids, dtype=torch.int64, device=net.mask_embed.device
            )


def _default_rows(batched_inputs: list[dict]) -> str:
    """``"ground_truth"`` when every input has ``tgt_pan_idx``, ``"segments"`` when none has."""
    with_gt = ["tgt_pan_idx" in x for x in batched_inputs]
    if all(with_gt):
        return "ground_truth"
    if not any(with_gt):
        return "segments"
    raise ValueError(
        f"{sum(with_gt)} of {len(with_gt)} inputs carry 'tgt_pan_idx': pass order_rows="
        "'ground_truth' or 'segments' to say whose relations the order matrices hold"
    )


def _tgt_pan_idx(batched_input: dict, num_instances: int) -> Tensor:
    """LongTensor[n] ``tgt_pan_idx`` of an input, checked against its M non-crowd instances."""
    if "tgt_pan_idx" not in batched_input:
        raise ValueError(
            "order training and order_rows='ground_truth' need the ground truth of every input: "
            "'instances', 'tgt_pan_idx' and the order matrices (instaorder_panoptic mapper); "
            "for inference without ground truth use order_rows='segments'"
        )
    idx = torch.as_tensor(batched_input["tgt_pan_idx"], dtype=torch.int64).flatten()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_instances):
        raise ValueError(
            f"tgt_pan_idx {idx.tolist()} of {batched_input.get('file_name', 'an input')} "
            f"points outside its {num_instances} non-crowd instances"
        )
    return idx


def _gt_matrix(batched_input: dict, task: str, n: int) -> Tensor:
    """int Tensor[n, n] GT matrix of ``task`` (-1 = unlabelled), checked against ``tgt_pan_idx``."""
    key = GT_MATRIX_KEYS[task]
    where = batched_input.get("file_name", "an input")
    if key not in batched_input:
        raise ValueError(f"{where} has no '{key}' although the {task} loss is trained")
    matrix = torch.as_tensor(batched_input[key])
    if tuple(matrix.shape) != (n, n):
        raise ValueError(
            f"{where}: '{key}' has shape {tuple(matrix.shape)} but tgt_pan_idx names {n} instances"
        )
    return matrix


def _build_order_criterion(cfg: CfgNode, tasks: Sequence[str], head: OrderHead) -> OrderCriterion:
    """Order losses of ``tasks`` from ``MODEL.GEOMETRIC_PREDICTOR.*`` and ``INPUT.*`` priors."""
    gp = cfg.MODEL.GEOMETRIC_PREDICTOR
    if gp.DEPTH_LOSS not in _DEPTH_LOSSES:
        raise ValueError(
            f"MODEL.GEOMETRIC_PREDICTOR.DEPTH_LOSS must be one of {_DEPTH_LOSSES}, "
            f"got {gp.DEPTH_LOSS!r}"
        )
    weights = {"occlusion": gp.OCCLUSION_WEIGHT, "depth": gp.DEPTH_WEIGHT}
    counts = {
        "occlusion": list(cfg.INPUT.OCC_SAMPLES_PER_CLASS),
        "depth": list(cfg.INPUT.DEPTH_SAMPLES_PER_CLASS) if gp.DEPTH_LOSS != "ce" else None,
    }
    for task, key in (("occlusion", "OCC_SAMPLES_PER_CLASS"), ("depth", "DEPTH_SAMPLES_PER_CLASS")):
        count = counts[task]
        if count is not None and len(count) != TASK_CLASSES[task]:
            raise ValueError(f"INPUT.{key} needs {TASK_CLASSES[task]} counts, got {count}")
    if not head.uses_class_prior:  # e.g. InstaOrderNet's probabilities, trained without one
        counts = dict.fromkeys(counts)
    # The class priors are CPU constants (moved to the logits' device when used), also when the
    # model is built under a device context such as ``torch.device("meta")``.
    with torch.device("cpu"):
        return OrderCriterion(
            weights={t: weights[t] for t in tasks},
            class_counts={t: counts[t] for t in tasks},
            deep_supervision=cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION,
        )
