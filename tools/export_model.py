"""Export the inference model with ``torch.export`` (and ONNX where the ops allow).

Shape shorthand: B images, Q queries, K classes (+1 = no object), C mask-embedding width, Hp x Wp
the padded input (multiple of ``SIZE_DIVISIBILITY``), h x w = Hp/4 x Wp/4, n selected instances.

Two programs, because panoptic post-processing picks a data-dependent number of queries:

* ``network.pt2``: :class:`NetworkWrapper`, image ``float32[B, 3, Hp, Wp]`` (0-255, channels in
  ``INPUT.FORMAT``) -> ``pred_logits [B, Q, K+1]``, ``pred_masks [B, Q, h, w]``, ``mask_embed
  [B, Q, C]``, ``mask_features [B, C, h, w]``; static input size (``--height/--width``).
* ``order_head.pt2`` (models with a ``GeometricTransformer`` order head, the model's
  ``geometric_predictor``): :class:`OrderHeadWrapper`, ``mask_embed [n, C]``,
  ``masks [n, h, w]`` (0/1), ``mask_features [C, h, w]`` -> the last head layer's logits per task
  (``[n, n, 2]`` occlusion, ``[n, n, 3]`` depth); ``n`` is dynamic (2..``--max-instances``).

Post-processing stays in Python: the panoptic merge (``mask2former.modeling.postprocessing``),
the rows of the head (the thing segments' queries, ``instaformer.modeling.order.selection.
select_segment_queries``; masks = their ``pred_masks`` > 0) and labels/probabilities from the
logits (``instaformer.modeling.meta_arch.order_results``); see
:class:`instaformer.predictor.Predictor`.
The deformable attention is exported on its pure-PyTorch path (``INSTAFORMER_MSDA_FORCE_PYTORCH``
is set by this script; the compiled kernel has no export support). The order head is exported
with dense feature attention (same numbers as the sparse path, no data-dependent shapes).

Usage::

    python tools/export_model.py --config-file CFG --output export/ [--onnx] \
        [--height 512 --width 512] MODEL.WEIGHTS model.pth
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

logger = logging.getLogger("instaformer.export")

__all__ = [
    "NetworkWrapper",
    "OrderHeadWrapper",
    "export_network",
    "export_order_head",
    "find_order_head",
    "max_abs_diff",
    "main",
]


class NetworkWrapper(nn.Module):
    """Tensor-only view of the segmentation network (normalisation included, no padding).

    Args:
        model: a built ``MaskFormer``-family model (``pixel_mean``, ``pixel_std``,
            ``run_network``).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """float32[B, 3, Hp, Wp] -> (pred_logits [B, Q, K+1], pred_masks [B, Q, h, w],
        mask_embed [B, Q, C], mask_features [B, C, h, w])."""
        x = (image - self.model.pixel_mean) / self.model.pixel_std
        outputs, mask_embed, mask_features = self.model.run_network(x)
        return outputs["pred_logits"], outputs["pred_masks"], mask_embed, mask_features


class OrderHeadWrapper(nn.Module):
    """Tensor-only view of an order head: the last layer's logits, one tensor per task.

    Args:
        head: a ``GeometricTransformer`` (its ``tasks`` give the output order).
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.tasks = tuple(head.tasks)

    def forward(
        self, mask_embed: Tensor, masks: Tensor, mask_features: Tensor
    ) -> tuple[Tensor, ...]:
        """[n, C], [n, h, w], [C, h, w] -> per task in ``self.tasks``: logits [n, n, K_task]."""
        outputs = self.head(mask_embed, masks, mask_features)
        return tuple(outputs[t][-1] for t in self.tasks)


def export_network(model: nn.Module, height: int, width: int) -> torch.export.ExportedProgram:
    """``torch.export`` of :class:`NetworkWrapper` for one ``[1, 3, height, width]`` input."""
    wrapper = NetworkWrapper(model).eval()
    example = (torch.rand(1, 3, height, width, device=model.pixel_mean.device) * 255,)
    with torch.no_grad():
        return torch.export.export(wrapper, example)


def export_order_head(
    head: nn.Module, mask_dim: int, mask_size: tuple[int, int], max_instances: int = 256
) -> torch.export.ExportedProgram:
    """``torch.export`` of :class:`OrderHeadWrapper` with a dynamic instance count ``n``.

    The head runs with dense feature attention during the export (attribute
    ``dense_feature_attention``, restored afterwards): same values as the sparse path, whose
    gathers have data-dependent shapes.

    Args:
        head: the order head.
        mask_dim: C, width of the mask embeddings and mask features.
        mask_size: ``(h, w)`` of the mask features.
        max_instances: largest n the program accepts.
    """
    wrapper = OrderHeadWrapper(head).eval()
    param = next(head.parameters())
    h, w = mask_size
    n = 3
    example = (
        torch.randn(n, mask_dim, device=param.device),
        (torch.rand(n, h, w, device=param.device) > 0.5).float(),
        torch.randn(mask_dim, h, w, device=param.device),
    )
    instances = torch.export.Dim("n", min=2, max=max_instances)
    dense = head.dense_feature_attention
    head.dense_feature_attention = True
    try:
        with torch.no_grad():
            return torch.export.export(
                wrapper, example, dynamic_shapes=({0: instances}, {0: instances}, None)
            )
    finally:
        head.dense_feature_attention = dense


def max_abs_diff(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> float:
    """Largest absolute difference over matching tensors of two output tuples."""
    if len(a) != len(b):
        raise ValueError(f"outputs differ in count: {len(a)} vs {len(b)}")
    return max(
        float((x.detach() - y.detach()).abs().max()) if x.numel() else 0.0
        for x, y in zip(a, b, strict=True)
    )


def find_order_head(model: nn.Module) -> nn.Module | None:
    """The order head of an ``InstaFormer`` (``geometric_predictor``), or None without one.

    Raises:
        ValueError: a head other than ``GeometricTransformer`` (the pairwise head also reads
            the image, which :class:`OrderHeadWrapper` does not pass).
    """
    from instaformer.modeling.order.geometric_transformer import GeometricTransformer

    head = getattr(model, "geometric_predictor", None)
    if head is not None and not isinstance(head, GeometricTransformer):
        raise ValueError(
            f"only the GeometricTransformer order head can be exported; the model has "
            f"{type(head).__name__} (MODEL.GEOMETRIC_PREDICTOR.NAME)"
        )
    return head


def _export_onnx(program: torch.export.ExportedProgram, path: Path) -> None:
    try:
        torch.onnx.export(program, (), str(path), dynamo=True)
    except ImportError as err:
        logger.warning("ONNX export of %s skipped: %s (pip install onnx onnxscript)", path, err)
        return
    logger.info("wrote %s", path)


def main(argv: list[str] | None = None) -> int:
    from instaformer.config import setup_cfg
    from instaformer.predictor import Predictor

    os.environ["INSTAFORMER_MSDA_FORCE_PYTORCH"] = "1"  # the compiled kernel cannot be exported
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--output", required=True, help="directory for the .pt2 (and .onnx) files")
    parser.add_argument("--height", type=int, default=512, help="padded input height (pixels)")
    parser.add_argument("--width", type=int, default=512, help="padded input width (pixels)")
    parser.add_argument("--max-instances", type=int, default=256, help="largest n of the head")
    parser.add_argument("--onnx", action="store_true", help="also write ONNX files")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)

    cfg = setup_cfg(args.config_file, args.opts)
    divisor = cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY
    if divisor > 1 and (args.height % divisor or args.width % divisor):
        parser.error(f"--height/--width must be multiples of SIZE_DIVISIBILITY={divisor}")
    model = Predictor(cfg).model
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    programs = {"network": export_network(model, args.height, args.width)}
    head = find_order_head(model)
    if head is None:
        logger.info("the model has no order head: exporting the segmentation network only")
    else:
        mask_size = (args.height // 4, args.width // 4)
        programs["order_head"] = export_order_head(
            head, cfg.MODEL.SEM_SEG_HEAD.MASK_DIM, mask_size, args.max_instances
        )
    for name, program in programs.items():
        path = out / f"{name}.pt2"
        torch.export.save(program, str(path))
        logger.info("wrote %s", path)
        if args.onnx:
            _export_onnx(program, out / f"{name}.onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
