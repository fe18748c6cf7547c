"""Public multi-scale deformable attention op and its single dispatch point.

Shape shorthand: B batch, S total flattened value length (sum of h*w over levels),
M heads, Dh channels per head, L levels, P sampling points, Lq queries.

Three implementations compute the same function: the compiled CUDA kernels (``csrc/``, built
ahead of time by ``setup.py`` or just in time, see ``build.py``), the Triton kernels
(``triton_kernel.py``; Triton ships with PyTorch's CUDA wheels, no build step) and the PyTorch
path (``pytorch_impl.py``, any device). Dispatch, decided per call and logged once per distinct
decision:

* traced by ``torch.export`` (``torch.compiler.is_exporting()``; ``torch.onnx.export(...,
  dynamo=True)`` and ``tools/export_model.py`` go through it): the loop-free PyTorch formulation,
  one ``grid_sample`` per level, on any device, whatever the environment says. The kernels have
  no export support and the ``embedding_bag`` gather becomes ``Loop`` / ``SequenceEmpty`` /
  ``ConcatFromSequence`` nodes in ONNX, about 100x slower in ONNX Runtime;
* ``INSTAFORMER_MSDA_BACKEND=cuda|triton|pytorch`` in the environment forces that
  implementation; when it cannot run (no compiled build and no CUDA toolkit to build one, Triton
  not importable, inputs on a device it does not support) the call raises an error that names
  the reason, instead of quietly running another path;
* otherwise, automatically: tensors not on a CUDA device take the PyTorch path; CUDA tensors
  take the compiled kernels when they are loaded or built ahead of time (no just-in-time build
  is started unasked: that takes minutes), else the Triton kernels when Triton imports, else the
  PyTorch path.

Triton also runs on CPU tensors in its interpreter (``TRITON_INTERPRET=1``, slow: for tests),
when forced with ``INSTAFORMER_MSDA_BACKEND=triton``. A missing build never breaks import, and
errors raised while running a kernel propagate.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from types import ModuleType

import torch
from torch import Tensor

from mask2former.modeling.ops.kernel import kernel_prebuilt, kernel_status, ms_deform_attn_kernel
from mask2former.modeling.ops.pytorch_impl import grid_sample_path, ms_deform_attn_pytorch

logger = logging.getLogger(__name__)

BACKEND_ENV = "INSTAFORMER_MSDA_BACKEND"
BACKENDS = ("cuda", "triton", "pytorch")
TRITON_MODULE = "mask2former.modeling.ops.triton_kernel"

_logged: set[tuple[str, str]] = set()
_triton_import_error: str | None = None


def _forced_backend() -> str | None:
    """The backend named by ``INSTAFORMER_MSDA_BACKEND``, or None when it is unset or empty."""
    raw = os.environ.get(BACKEND_ENV, "").strip().lower()
    if not raw:
        return None
    if raw not in BACKENDS:
        raise ValueError(
            f"environment variable {BACKEND_ENV}={os.environ[BACKEND_ENV]!r} is not one of "
            f"{', '.join(BACKENDS)} (or empty for the automatic choice)"
        )
    return raw


def _triton_module() -> ModuleType | None:
    """``triton_kernel`` imported on first use (it imports Triton), or None with the reason
    kept in ``_triton_import_error`` when Triton does not import."""
    global _triton_import_error
    if _triton_import_error is not None:
        return None
    try:
        return importlib.import_module(TRITON_MODULE)
    except ImportError as exc:
        _triton_import_error = f"triton is not importable ({exc})"
        return None


def triton_status(device: torch.device) -> tuple[bool, str]:
    """Whether the Triton kernels can run on ``device``, and why (not).

    Returns:
        ``(available, reason)``: CUDA tensors need Triton to import; CPU tensors need Triton's
        interpreter as well (``TRITON_INTERPRET=1`` in the environment when Triton is imported).
    """
    module = _triton_module()
    if module is None:
        return False, str(_triton_import_error)
    return module.device_status(device)


def _forced(backend: str, device: torch.device) -> tuple[str, str]:
    why = f"{BACKEND_ENV}={backend}"
    if backend == "pytorch":
        return "pytorch", f"forced by {why}"
    if backend == "triton":
        available, reason = triton_status(device)
        if not available:
            raise RuntimeError(f"{why} cannot run: {reason}")
        return "triton", f"forced by {why}: {reason}"
    if device.type != "cuda":
        raise RuntimeError(
            f"{why} cannot run: the compiled kernels run on CUDA tensors only, the inputs are "
            f"on {device.type}"
        )
    available, reason = kernel_status()
    if not available:
        raise RuntimeError(f"{why} cannot run: {reason}")
    return "cuda", f"forced by {why}: {reason}"


def select_path(value: Tensor) -> tuple[str, str]:
    """Choose the implementation for ``value``'s device (see the module docstring).

    Returns:
        ``(path, reason)`` with ``path`` one of ``"cuda"`` (compiled kernels), ``"triton"``,
        ``"pytorch"`` and ``"pytorch_loop_free"`` (under ``torch.export``).

    Raises:
        ValueError: ``INSTAFORMER_MSDA_BACKEND`` names no backend.
        RuntimeError: the backend it names cannot run here; the message says why.
    """
    if torch.compiler.is_exporting():
        return "pytorch_loop_free", "traced by torch.export"
    backend = _forced_backend()
    if backend is not None:
        return _forced(backend, value.device)
    if value.device.type != "cuda":
        return "pytorch", f"inputs on {value.device.type}"
    if kernel_prebuilt():
        available, reason = kernel_status()
        if available:
            return "cuda", reason
    available, reason = triton_status(value.device)
    if available:
        return "triton", f"{reason}; no compiled build loaded"
    return "pytorch", f"no compiled build loaded and {reason}"


def _log_once(path: str, reason: str) -> None:
    if (path, reason) not in _logged:
        _logged.add((path, reason))
        logger.info("ms_deform_attn uses the %s path: %s", path, reason)


def _level_shapes(spatial_shapes: Tensor | Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """``(h, w)`` per level as Python ints (one host read when given a tensor)."""
    if isinstance(spatial_shapes, Tensor):
        if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
            raise ValueError(
                f"spatial_shapes must be [L, 2], got shape {tuple(spatial_shapes.shape)}"
            )
        if spatial_shapes.dtype != torch.long:
            raise ValueError(f"spatial_shapes must be int64, got {spatial_shapes.dtype}")
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    shapes = [tuple(hw) for hw in spatial_shapes]
    if not all(len(hw) == 2 and all(isinstance(v, int) for v in hw) for hw in shapes):
        raise ValueError(f"spatial_shapes must be (h, w) pairs of ints, got {spatial_shapes!r}")
    return shapes


def _check_shapes(
    value: Tensor,
    shapes: list[tuple[int, int]],
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int,
) -> None:
    if value.dim() != 4:
        raise ValueError(f"value must be [B, S, M, Dh], got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "sampling_locations must be [B, Lq, M, L, P, 2], got shape "
            f"{tuple(sampling_locations.shape)}"
        )
    b, s, m, _ = value.shape
    lb, _, lm, num_levels, _, _ = sampling_locations.shape
    if (lb, lm) != (b, m):
        raise ValueError(
            f"sampling_locations {tuple(sampling_locations.shape)} does not match value "
            f"{tuple(value.shape)} in batch or heads"
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f"attention_weights must be {tuple(sampling_locations.shape[:-1])}, got "
            f"{tuple(attention_weights.shape)}"
        )
    if len(shapes) != num_levels or level_start_index.shape != (num_levels,):
        raise ValueError(
            f"spatial_shapes must have {num_levels} levels and level_start_index shape "
            f"[{num_levels}], got {len(shapes)} levels and {tuple(level_start_index.shape)}"
        )
    if level_start_index.dtype != torch.long:
        raise ValueError(f"level_start_index must be int64, got {level_start_index.dtype}")
    if sum(h * w for h, w in shapes) != s:
        raise ValueError(
            f"spatial_shapes {shapes} cover {sum(h * w for h, w in shapes)} positions but "
            f"value has S = {s}"
        )
    if not isinstance(im2col_step, int) or im2col_step < 1:
        raise ValueError(f"im2col_step must be a positive int, got {im2col_step!r}")


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor | Sequence[tuple[int, int]],
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int = 64,
) -> Tensor:
    """Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, Eq. 3).

    ``out[b, q, m] = sum_{l, p} attention_weights[b, q, m, l, p] *
    bilinear(value_l[b, :, m], sampling_locations[b, q, m, l, p])``, where ``bilinear`` reads
    level ``l`` like ``grid_sample(align_corners=False, padding_mode="zeros")``.

    Args:
        value: Tensor[B, S, M, Dh], multi-level features flattened level by level, row-major.
        spatial_shapes: ``(h, w)`` of each level, as LongTensor[L, 2] or as L pairs of Python
            ints (preferred: the PyTorch path then reads nothing back from the device, and
            ``torch.export`` traces it without data-dependent shapes); ``sum(h * w) == S``.
        level_start_index: LongTensor[L], offset of each level in ``S``
            (``[0, h0 * w0, h0 * w0 + h1 * w1, ...]``).
        sampling_locations: Tensor[B, Lq, M, L, P, 2], normalised ``(x, y)``: ``(0, 0)`` is
            the top-left corner of a level, ``(1, 1)`` its bottom-right corner; samples
            outside the level read zeros.
        attention_weights: Tensor[B, Lq, M, L, P], weight of each sampled point (usually a
            softmax over ``L * P``).
        im2col_step: number of images per kernel launch of the compiled path (the batch is
            processed in chunks of this size; the Triton path launches once); the result does
            not depend on it.

    Returns:
        Tensor[B, Lq, M * Dh], heads concatenated, in the promoted dtype of the floating
        inputs (float32 under CUDA autocast on the compiled and Triton paths).
    """
    shapes = _level_shapes(spatial_shapes)
    _check_shapes(
        value, shapes, level_start_index, sampling_locations, attention_weights, im2col_step
    )
    dtype = torch.promote_types(
        torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype
    )
    value = value.to(dtype)
    sampling_locations = sampling_locations.to(dtype)
    attention_weights = attention_weights.to(dtype)
    path, reason = select_path(value)
    _log_once(path, reason)
    if path in ("cuda", "triton") and not isinstance(spatial_shapes, Tensor):
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long)
    if path == "triton":
        module = _triton_module()
        assert module is not None  # select_path chose it
        return module.ms_deform_attn_triton(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    if path == "cuda":
        return ms_deform_attn_kernel(
            value,
            spatial_shapes.to(value.device),
            level_start_index.to(value.device),
            sampling_locations,
            attention_weights,
            im2col_step,
        )
    if path == "pytorch_loop_free":
        return grid_sample_path(value, shapes, sampling_locations, attention_weights)
    return ms_deform_attn_pytorch(value, shapes, sampling_locations, attention_weights)
