"""Python side of the compiled op: loading once, fake kernels, autograd and autocast rules.

Shape shorthand: B batch, S total flattened value length, M heads, Dh channels per head,
L levels, P sampling points, Lq queries.

The schemas and CUDA kernels live in ``csrc/``; this module registers, once the library is
loaded, what ``torch.compile`` / ``torch.export`` (fake kernels), autograd (backward formula
calling ``instaformer::ms_deform_attn_backward``) and AMP (the op computes in float32 under
CUDA autocast) need.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from mask2former.modeling.ops import build

logger = logging.getLogger(__name__)

FORWARD = "instaformer::ms_deform_attn_forward"
BACKWARD = "instaformer::ms_deform_attn_backward"

_status: tuple[bool, str] | None = None


def kernel_status() -> tuple[bool, str]:
    """Load the compiled kernels on first call (building them just in time if needed).

    Returns:
        ``(available, reason)``; the result is cached for the process. A failed build or
        load is reported here (and logged as a warning), not raised, so that the caller can
        fall back to the PyTorch path; errors while *running* the kernels always propagate.
    """
    global _status
    if _status is None:
        try:
            origin = build.load_library()
        except (RuntimeError, OSError) as exc:
            logger.warning("ms_deform_attn CUDA kernels unavailable: %s", exc)
            _status = (False, f"CUDA kernels unavailable ({exc})")
        else:
            _register_python_rules()
            _status = (True, f"CUDA kernels from {origin}")
    return _status


def kernel_prebuilt() -> bool:
    """Whether the compiled kernels are usable without a just-in-time build: loaded in this
    process already, or built ahead of time (``setup.py``) and not yet tried."""
    if _status is not None:
        return _status[0]
    return build.aot_library_path() is not None


def _fake_forward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int,
) -> Tensor:
    b, _, m, dh = value.shape
    return value.new_empty(b, sampling_locations.shape[1], m * dh)


def _fake_backward(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int,
) -> tuple[Tensor, Tensor, Tensor]:
    return (
        torch.empty_like(value, memory_format=torch.contiguous_format),
        torch.empty_like(sampling_locations, memory_format=torch.contiguous_format),
        torch.empty_like(attention_weights, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, step = inputs
    ctx.save_for_backward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    ctx.im2col_step = step


def _backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = (
        ctx.saved_tensors
    )
    grad_value, grad_locations, grad_weights = torch.ops.instaformer.ms_deform_attn_backward(
        grad_output.contiguous(),
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        ctx.im2col_step,
    )
    return grad_value, None, None, grad_locations, grad_weights, None


def _register_python_rules() -> None:
    torch.library.register_fake(FORWARD)(_fake_forward)
    torch.library.register_fake(BACKWARD)(_fake_backward)
    torch.library.register_autograd(FORWARD, _backward, setup_context=_setup_context)
    torch.library.register_autocast(FORWARD, "cuda", torch.float32)


def ms_deform_attn_kernel(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int,
) -> Tensor:
    """Run the compiled op (call :func:`kernel_status` first). Shapes as ``ms_deform_attn``."""
    return torch.ops.instaformer.ms_deform_attn_forward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step
    )
