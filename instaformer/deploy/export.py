"""Export of the inference network and the order head (``torch.export``, ONNX).

Shape shorthand: B images, Q queries, K classes (+1 = no object), C mask-embedding width, Hp x Wp
the padded input (multiple of ``SIZE_DIVISIBILITY``), h x w = Hp/4 x Wp/4, n selected instances.

Two programs, because panoptic post-processing picks a data-dependent number of queries:

* network: :class:`NetworkWrapper`, ``image`` float32[1, 3, Hp, Wp] (0-255, channels in
  ``INPUT.FORMAT``; padding filled with ``PIXEL_MEAN``, see :func:`pad_like_model`) ->
  ``pred_logits`` [1, Q, K+1], ``pred_masks`` [1, Q, h, w], ``mask_embed`` [1, Q, C],
  ``mask_features`` [1, C, h, w]; static input size.
* order head (models with a ``GeometricTransformer`` head, the model's ``geometric_predictor``):
  :class:`OrderHeadWrapper`, ``mask_embed`` [n, C], ``masks`` [n, h, w] (0/1 float),
  ``mask_features`` [C, h, w] -> the last head layer's logits per task (``occlusion``
  [n, n, 2], ``depth`` [n, n, 3]); ``n`` is dynamic (2..``max_instances``) and named ``n`` in
  the ONNX graph.

Every data-dependent piece takes its loop-free formulation under ``torch.export`` (which the
ONNX exporter runs first): the deformable attention switches to one ``grid_sample`` per level
at its dispatch point (``mask2former.modeling.ops.dispatch.select_path``); the order head
is exported with dense feature attention (same values as the sparse path, whose gathers have
data-dependent shapes). :data:`LOOP_OPS` lists the ONNX ops that must not appear.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mask2former.utils.atomic import atomic_write_path

if TYPE_CHECKING:
    from instaformer.modeling.order.geometric_transformer import GeometricTransformer

__all__ = [
    "LOOP_OPS",
    "NETWORK_OUTPUTS",
    "NetworkWrapper",
    "OrderHeadWrapper",
    "export_network",
    "export_order_head",
    "find_order_head",
    "max_abs_diff",
    "onnx_op_counts",
    "onnx_export_network",
    "onnx_export_order_head",
    "pad_like_model",
    "quiet_exporter_logs",
]

logger = logging.getLogger(__name__)

NETWORK_OUTPUTS = ("pred_logits", "pred_masks", "mask_embed", "mask_features")
"""Output names of the exported network, in order."""
ORDER_HEAD_INPUTS = ("mask_embed", "masks", "mask_features")
"""Input names of the exported order head, in order."""
LOOP_OPS = frozenset(
    {"Loop", "Scan", "If", "SequenceEmpty", "SequenceConstruct", "SequenceInsert",
     "SequenceAt", "ConcatFromSequence", "SplitToSequence"}
)  # fmt: skip
"""ONNX control-flow and sequence ops: slow in ONNX Runtime and unsupported by TensorRT."""
_EXPORTER_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export")


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


def pad_like_model(image: Tensor, pixel_mean: Tensor, divisor: int) -> Tensor:
    """Pad a raw image bottom/right to a multiple of ``divisor`` with ``pixel_mean``.

    After the network's normalisation the padding is exactly 0, as in the model's own
    ``preprocess_image`` (which pads the normalised image with zeros).

    Args:
        image: Tensor[3, H, W], 0-255 (any dtype), channels in ``INPUT.FORMAT``.
        pixel_mean: Tensor[3, 1, 1], the model's ``pixel_mean``.
        divisor: ``SIZE_DIVISIBILITY`` (<= 1: no padding).

    Returns:
        float32 Tensor[1, 3, Hp, Wp].
    """
    x = image.to(pixel_mean.device, torch.float32)
    h, w = x.shape[-2:]
    d = max(divisor, 1)
    hp, wp = -(-h // d) * d, -(-w // d) * d
    mean = pixel_mean.to(torch.float32).view(3, 1, 1)
    x = F.pad(x - mean, (0, wp - w, 0, hp - h)) + mean
    return x[None]


@contextlib.contextmanager
def dense_feature_attention(head: nn.Module) -> Iterator[None]:
    """Run ``head`` with dense feature attention inside the block (restored afterwards)."""
    dense = head.dense_feature_attention
    head.dense_feature_attention = True
    try:
        yield
    finally:
        head.dense_feature_attention = dense


@contextlib.contextmanager
def quiet_exporter_logs() -> Iterator[None]:
    """Silence the exporter's third-party loggers (hundreds of INFO/WARNING lines of graph
    passes) and its shape-naming warning inside the block; errors still show."""
    saved = {name: logging.getLogger(name).level for name in _EXPORTER_LOGGERS}
    for name in _EXPORTER_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*axis name.*will not be used")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _network_example(model: nn.Module, height: int, width: int) -> tuple[Tensor]:
    return (torch.rand(1, 3, height, width, device=model.pixel_mean.device) * 255,)


def _order_head_example(
    head: nn.Module, mask_dim: int, mask_size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    device = next(head.parameters()).device
    h, w = mask_size
    n = 3
    return (
        torch.randn(n, mask_dim, device=device),
        (torch.rand(n, h, w, device=device) > 0.5).float(),
        torch.randn(mask_dim, h, w, device=device),
    )


def export_network(model: nn.Module, height: int, width: int) -> torch.export.ExportedProgram:
    """``torch.export`` of :class:`NetworkWrapper` for one ``[1, 3, height, width]`` input."""
    wrapper = NetworkWrapper(model).eval()
    with torch.no_grad():
        return torch.export.export(wrapper, _network_example(model, height, width))


def export_order_head(
    head: nn.Module, mask_dim: int, mask_size: tuple[int, int], max_instances: int = 256
) -> torch.export.ExportedProgram:
    """``torch.export`` of :class:`OrderHeadWrapper` with a dynamic instance count ``n``.

    Args:
        head: the order head (run with dense feature attention during the export).
        mask_dim: C, width of the mask embeddings and mask features.
        mask_size: ``(h, w)`` of the mask features.
        max_instances: largest n the program accepts.
    """
    wrapper = OrderHeadWrapper(head).eval()
    instances = torch.export.Dim("n", min=2, max=max_instances)
    with dense_feature_attention(head), torch.no_grad():
        return torch.export.export(
            wrapper,
            _order_head_example(head, mask_dim, mask_size),
            dynamic_shapes=({0: instances}, {0: instances}, None),
        )


def _onnx_export(
    module: nn.Module,
    example: tuple[Tensor, ...],
    path: Path,
    *,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    dynamic_shapes: tuple | None = None,
) -> Path:
    """``torch.onnx.export`` (dynamo) of ``module`` to ``path``, weights inline, written
    atomically (:func:`mask2former.utils.atomic.atomic_write_path`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_exporter_logs(), torch.no_grad():
        program = torch.onnx.export(
            module.eval(),
            example,
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
        atomic_write_path(path, lambda tmp: program.save(tmp, external_data=False))
    logger.info("wrote %s", path)
    return path


def onnx_export_network(model: nn.Module, height: int, width: int, path: str | os.PathLike) -> Path:
    """Write the ONNX graph of :class:`NetworkWrapper` for a ``[1, 3, height, width]`` input.

    Inputs ``image``; outputs :data:`NETWORK_OUTPUTS`. Returns the path written.
    """
    return _onnx_export(
        NetworkWrapper(model),
        _network_example(model, height, width),
        Path(path),
        input_names=("image",),
        output_names=NETWORK_OUTPUTS,
    )


def onnx_export_order_head(
    head: nn.Module,
    mask_dim: int,
    mask_size: tuple[int, int],
    path: str | os.PathLike,
    max_instances: int = 256,
) -> Path:
    """Write the ONNX graph of :class:`OrderHeadWrapper`; arguments as
    :func:`export_order_head`.

    Inputs :data:`ORDER_HEAD_INPUTS` (``masks`` float 0/1); outputs the head's tasks
    (``occlusion``, ``depth``), each ``[n, n, K]`` with the dynamic dimension named ``n``.
    Returns the path written.
    """
    instances = torch.export.Dim("n", min=2, max=max_instances)
    with dense_feature_attention(head):
        return _onnx_export(
            OrderHeadWrapper(head),
            _order_head_example(head, mask_dim, mask_size),
            Path(path),
            input_names=ORDER_HEAD_INPUTS,
            output_names=tuple(head.tasks),
            dynamic_shapes=({0: instances}, {0: instances}, None),
        )


def onnx_op_counts(path: str | os.PathLike) -> dict[str, int]:
    """Number of nodes per op type in an ONNX file (main graph and subgraphs)."""
    import onnx

    counts: dict[str, int] = {}

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for g in attr.graphs:
                    visit(g)

    visit(onnx.load(str(path), load_external_data=False).graph)
    return dict(sorted(counts.items()))


def max_abs_diff(a: tuple, b: tuple) -> float:
    """Largest absolute difference over matching tensors (or NumPy arrays) of two tuples."""
    if len(a) != len(b):
        raise ValueError(f"outputs differ in count: {len(a)} vs {len(b)}")
    diffs = [0.0]
    for x, y in zip(a, b, strict=True):
        x, y = torch.as_tensor(x).detach(), torch.as_tensor(y).detach()
        if x.shape != y.shape:
            raise ValueError(f"outputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        if x.numel():
            diffs.append(float((x.float() - y.float()).abs().max()))
    return max(diffs)


def find_order_head(model: nn.Module) -> GeometricTransformer | None:
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
