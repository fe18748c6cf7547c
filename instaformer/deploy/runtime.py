"""ONNX Runtime inference: the exported network and order head, the PyTorch post-processing.

Shape shorthand: Q queries, K classes (+1 = no object), C mask-embedding width, Hp x Wp the
padded input, h x w = Hp/4 x Wp/4, k thing segments of the panoptic output.

:class:`OnnxRuntimeModel` is called like a blind-inference ``InstaFormer`` (a list of input
dicts in, a list of result dicts out) and returns the same results: the network and the order
head run in ONNX Runtime, then the model's own ``inference`` (panoptic merge), query selection
(``select_segment_queries``) and ``order_results`` run on their outputs, exactly as in
``InstaFormer.forward``. Images go through one at a time, each padded to its own multiple of
``SIZE_DIVISIBILITY`` (the PyTorch path pads a batch to its largest image).

The ONNX graphs have a static input size: one pair is exported per padded size and cached on
disk in the project's cache folder (``$INSTAFORMER_CACHE/onnx``, default
``$XDG_CACHE_HOME/instaformer/onnx`` or ``~/.cache/instaformer/onnx``,
:func:`mask2former.utils.download.cache_dir`), never beside the user's weights. File names
carry a key of the config, the weights (a hash of the model's state dict), the padded size and
the torch version, so a changed config or checkpoint never reuses a stale graph.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from instaformer.deploy.export import (
    NETWORK_OUTPUTS,
    ORDER_HEAD_INPUTS,
    find_order_head,
    onnx_export_network,
    onnx_export_order_head,
    pad_like_model,
)
from instaformer.vocabulary import TASK_CLASSES
from mask2former.utils import download

if TYPE_CHECKING:
    from instaformer.modeling.order.geometric_transformer import GeometricTransformer
    from mask2former.modeling.meta_arch import MaskFormer

__all__ = [
    "OnnxRuntimeModel",
    "cpu_session",
    "state_dict_digest",
]

logger = logging.getLogger(__name__)

MAX_INSTANCES = 256
"""Largest instance count the exported order head is traced for (at least Q is used); ONNX
Runtime itself sets no upper bound on the dynamic dimension."""


def state_dict_digest(model: nn.Module) -> str:
    """SHA-256 (hex) of a model's state dict: names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            "the onnxruntime backend needs onnx, onnxscript and onnxruntime: "
            "pip install 'instaformer[export]'"
        ) from err
    return onnxruntime


def cpu_session(path: str | os.PathLike, threads: int, *, profile_prefix: str | None = None) -> Any:
    """An ONNX Runtime CPU session of the graph ``path``: ``threads`` intra-op threads, one
    inter-op thread, errors-only logging; with ``profile_prefix``, profiling on and its JSON
    written at that path prefix (``InferenceSession.end_profiling()`` returns the file)."""
    ort = _require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxRuntimeModel:
    """A blind-inference model whose network and order head run in ONNX Runtime.

    Args:
        model: the built PyTorch model (``MaskFormer`` or ``InstaFormer`` with a
            ``GeometricTransformer`` head); exported per input size and used for its
            post-processing. Its order rows are always the thing segments (as
            ``order_rows="segments"``); inputs' ground truth is ignored.
        config_text: the full config as text (``cfg.dump()``), part of the cache key.
        cache_dir: folder of the graph cache (default: ``onnx`` in
            :func:`mask2former.utils.download.cache_dir`).
        threads: ONNX Runtime intra-op threads (default ``torch.get_num_threads()``).

    Raises:
        ValueError: an order head other than ``GeometricTransformer``.
        ImportError: onnxruntime (or the exporter's onnx / onnxscript) is not installed.
    """

    def __init__(
        self,
        model: MaskFormer,
        *,
        config_text: str,
        cache_dir: str | os.PathLike | None = None,
        threads: int | None = None,
    ) -> None:
        _require_onnxruntime()  # fail before any export work
        self.model = model.eval()
        self.head = find_order_head(model)
        self.tasks = tuple(getattr(model, "output_tasks", ()))
        self.threads = threads or torch.get_num_threads()
        self.folder = Path(cache_dir) if cache_dir is not None else download.cache_dir() / "onnx"
        key = hashlib.sha256()
        key.update(config_text.encode())
        key.update(state_dict_digest(model).encode())
        key.update(f"torch {torch.__version__}".encode())
        self.key = key.hexdigest()[:16]
        self._sessions: dict[tuple[str, int, int], Any] = {}

    def paths(self, height: int, width: int) -> tuple[Path, Path | None]:
        """Cache files of the network and the order head (None without one) for a padded
        ``height x width`` input."""
        head = None if self.head is None else self._file("order_head", height, width)
        return self._file("network", height, width), head

    def _file(self, graph: str, height: int, width: int) -> Path:
        return self.folder / f"{graph}-{height}x{width}-{self.key}.onnx"

    def _order_head(self) -> GeometricTransformer:
        if self.head is None:
            raise ValueError("the model has no order head (MODEL.GEOMETRIC_PREDICTOR.NAME)")
        return self.head

    def _network_session(self, height: int, width: int) -> Any:
        """Session of the network for a padded ``height x width`` input (exported on first
        use, read from the cache afterwards)."""
        key = ("network", height, width)
        if key not in self._sessions:
            path, _ = self.paths(height, width)
            if not path.is_file():
                logger.info("exporting the network for %dx%d inputs to %s", height, width, path)
                onnx_export_network(self.model, height, width, path)
            self._sessions[key] = cpu_session(path, self.threads)
        return self._sessions[key]

    def _head_session(self, mask_dim: int, height: int, width: int) -> Any:
        """Session of the order head for a padded ``height x width`` input."""
        key = ("order_head", height, width)
        if key not in self._sessions:
            head = self._order_head()
            path = self._file("order_head", height, width)
            if not path.is_file():
                logger.info("exporting the order head for %dx%d inputs to %s", height, width, path)
                onnx_export_order_head(
                    head,
                    mask_dim,
                    (height // 4, width // 4),
                    path,
                    max_instances=max(self.model.num_queries, MAX_INSTANCES),
                )
            self._sessions[key] = cpu_session(path, self.threads)
        return self._sessions[key]

    def run_network(self, image: Tensor) -> dict[str, Tensor]:
        """float32 Tensor[1, 3, Hp, Wp] raw padded image -> the network's outputs by name
        (:data:`NETWORK_OUTPUTS`), as CPU tensors."""
        network = self._network_session(*image.shape[-2:])
        values = network.run(list(NETWORK_OUTPUTS), {"image": image.cpu().numpy()})
        return {k: torch.from_numpy(v) for k, v in zip(NETWORK_OUTPUTS, values, strict=True)}

    def run_order_head(
        self, mask_embed: Tensor, masks: Tensor, mask_features: Tensor
    ) -> dict[str, list[Tensor]]:
        """Tensor[k, C], bool Tensor[k, h, w], Tensor[C, h, w] -> ``{task: [Tensor[k, k, K]]}``
        (the last layer only, as ``order_results`` reads it). With k < 2 the graph is not run:
        every cell is then a diagonal one, which ``order_results`` overwrites."""
        tasks = self._order_head().tasks
        k = mask_embed.shape[0]
        if k < 2:
            return {t: [mask_embed.new_zeros(k, k, TASK_CLASSES[t])] for t in tasks}
        c, h, w = mask_features.shape
        head = self._head_session(c, 4 * h, 4 * w)
        feeds = dict(
            zip(
                ORDER_HEAD_INPUTS,
                (mask_embed.numpy(), masks.float().numpy(), mask_features.numpy()),
                strict=True,
            )
        )
        values = head.run(list(tasks), feeds)
        return {t: [torch.from_numpy(v)] for t, v in zip(tasks, values, strict=True)}

    @torch.inference_mode()
    def __call__(
        self, batched_inputs: list[dict[str, Any]], results: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Input dicts (``image`` uint8 Tensor[3, H, W], optional ``height`` / ``width``) ->
        result dicts as the PyTorch model returns them in blind inference; ``results`` as the
        model's (segmentation results to compute, None: those of its config)."""
        from instaformer.modeling.meta_arch import order_results
        from instaformer.modeling.order import select_segment_queries

        per_image = []
        divisor = self.model.size_divisibility
        for x in batched_inputs:
            image = pad_like_model(x["image"], self.model.pixel_mean.cpu(), divisor)
            outputs = self.run_network(image)
            size = tuple(x["image"].shape[-2:])
            padded = (image.shape[-2], image.shape[-1])
            result = self.model.inference(outputs, [x], [size], padded, results)[0]
            if self.head is not None and self.tasks:
                queries, segment_ids = select_segment_queries(result["panoptic_seg"][1])
                masks = outputs["pred_masks"][0][queries] > 0
                head_out = self.run_order_head(
                    outputs["mask_embed"][0][queries], masks, outputs["mask_features"][0]
                )
                result.update(order_results(head_out, self.tasks))
                result["order_segment_ids"] = torch.tensor(segment_ids, dtype=torch.int64)
            per_image.append(result)
        return per_image
