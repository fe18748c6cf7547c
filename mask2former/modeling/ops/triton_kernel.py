"""Triton implementation of multi-scale deformable attention, forward and backward.

Shape shorthand: B batch, S total flattened value length (sum of h*w over levels),
M heads, Dh channels per head, L levels, P sampling points, Lq queries.

Triton ships with PyTorch's CUDA wheels on Linux, so this path needs no CUDA compiler and no
build step. It computes exactly what the compiled kernels (``csrc/``) and the PyTorch path
compute (see ``dispatch.ms_deform_attn``), for float32, float16 and bfloat16 inputs, reading
and writing the inputs' dtype and computing and accumulating in float32 (float64 inputs, for
``gradcheck``, compute in float64).

Work split: one program per (image b, block of ``BLOCK_Q`` queries, head m); it holds a
``BLOCK_Q x Dh`` tile in registers and loops over the L levels and P points, reading the four
bilinear corners of each sample as ``Dh``-vectors (contiguous in ``value``). The backward
program recomputes the samples, writes the gradients of the sampling locations and attention
weights of its own queries (no other program touches them) and scatters the gradient of
``value`` with ``tl.atomic_add`` into a float32 buffer (float64 for float64 inputs), cast to
``value``'s dtype at the end.

The ops are registered with ``torch.library.triton_op`` (``instaformer_triton::forward`` /
``backward``) with fake kernels, an autograd formula and a CUDA autocast rule (float32, as the
compiled op), so FakeTensor, ``torch.compile`` and AMP treat this path like the compiled one.

Triton's interpreter runs the same kernels on CPU tensors, slowly; the tests use it. Triton
reads ``TRITON_INTERPRET=1`` when it is first imported, so the variable must be in the
environment before that (:func:`device_status` says so when it was set too late).
Interpreter limits seen with triton 3.8: ``tl.atomic_add`` accepts float32 but not bfloat16
(hence the float32 gradient buffer, which the GPU path uses too), and
``torch.library.opcheck``'s ``aot_dispatch`` checks cannot run (the interpreter reads the data
pointers of the fake tensors that AOTAutograd traces with).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton
from triton.runtime.interpreter import InterpretedFunction

# Largest tile of one program, in elements of the BLOCK_Q x BLOCK_D accumulator.
_MAX_TILE = 2048
_MAX_BLOCK_Q = 64


def _forward_kernel(
    value_ptr,  # [B, S, M, Dh]
    shapes_ptr,  # int64 [L, 2], (h, w) per level
    starts_ptr,  # int64 [L]
    loc_ptr,  # [B, Lq, M, L, P, 2]
    attn_ptr,  # [B, Lq, M, L, P]
    out_ptr,  # [B, Lq, M * Dh]
    S,
    M,
    Lq,
    num_q_blocks,
    L: tl.constexpr,
    P: tl.constexpr,
    DH: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
    COMPUTE: tl.constexpr,  # tl.float32, or tl.float64 for float64 inputs
):
    # program -> (b, query block, m), heads innermost so that neighbours read neighbouring rows
    pid = tl.program_id(0)
    m = pid % M
    b = pid // M // num_q_blocks
    q = (pid // M % num_q_blocks) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d = tl.arange(0, BLOCK_D)
    q_in = q < Lq
    tile_in = q_in[:, None] & (d < DH)[None, :]
    row_stride = M * DH  # elements between value rows s and s + 1 of one head
    value_bm = value_ptr + b.to(tl.int64) * S * row_stride + m * DH
    qm = (b * Lq + q) * M + m  # index of (b, q, m): BLOCK_Q
    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=COMPUTE)
    for lvl in tl.static_range(L):
        h = tl.load(shapes_ptr + 2 * lvl).to(tl.int32)
        w = tl.load(shapes_ptr + 2 * lvl + 1).to(tl.int32)
        value_l = value_bm + tl.load(starts_ptr + lvl) * row_stride
        for pt in tl.static_range(P):
            lp = qm * (L * P) + lvl * P + pt
            a = tl.load(attn_ptr + lp, mask=q_in, other=0.0).to(COMPUTE)
            # normalised (x, y) -> pixel coordinates, pixel centres at integers
            x = tl.load(loc_ptr + 2 * lp, mask=q_in, other=0.0).to(COMPUTE) * w - 0.5
            y = tl.load(loc_ptr + 2 * lp + 1, mask=q_in, other=0.0).to(COMPUTE) * h - 0.5
            x0f = tl.floor(x)
            y0f = tl.floor(y)
            fx = x - x0f
            fy = y - y0f
            x0 = x0f.to(tl.int32)
            y0 = y0f.to(tl.int32)
            # corners outside the level read zeros
            in_x0 = (x0 >= 0) & (x0 < w)
            in_x1 = (x0 >= -1) & (x0 < w - 1)
            in_y0 = q_in & (y0 >= 0) & (y0 < h)
            in_y1 = q_in & (y0 >= -1) & (y0 < h - 1)
            off00 = (y0 * w + x0) * row_stride  # BLOCK_Q
            ptr00 = value_l + off00[:, None] + d[None, :]  # BLOCK_Q x BLOCK_D
            v00 = tl.load(ptr00, mask=tile_in & (in_y0 & in_x0)[:, None], other=0.0)
            v01 = tl.load(ptr00 + row_stride, mask=tile_in & (in_y0 & in_x1)[:, None], other=0.0)
            ptr10 = ptr00 + w * row_stride
            v10 = tl.load(ptr10, mask=tile_in & (in_y1 & in_x0)[:, None], other=0.0)
            v11 = tl.load(ptr10 + row_stride, mask=tile_in & (in_y1 & in_x1)[:, None], other=0.0)
            top = v00.to(COMPUTE) * (1 - fx)[:, None] + v01.to(COMPUTE) * fx[:, None]
            bottom = v10.to(COMPUTE) * (1 - fx)[:, None] + v11.to(COMPUTE) * fx[:, None]
            sample = top * (1 - fy)[:, None] + bottom * fy[:, None]
            acc += a[:, None] * sample
    out = out_ptr + ((b * Lq + q) * row_stride + m * DH)[:, None] + d[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=tile_in)


def _backward_kernel(
    grad_out_ptr,  # [B, Lq, M * Dh]
    value_ptr,  # [B, S, M, Dh]
    shapes_ptr,
    starts_ptr,
    loc_ptr,
    attn_ptr,
    grad_value_ptr,  # float32 (float64) [B, S, M, Dh], accumulated with atomic adds
    grad_loc_ptr,  # [B, Lq, M, L, P, 2]
    grad_attn_ptr,  # [B, Lq, M, L, P]
    S,
    M,
    Lq,
    num_q_blocks,
    L: tl.constexpr,
    P: tl.constexpr,
    DH: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
    COMPUTE: tl.constexpr,  # tl.float32, or tl.float64 for float64 inputs
):
    pid = tl.program_id(0)
    m = pid % M
    b = pid // M // num_q_blocks
    q = (pid // M % num_q_blocks) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d = tl.arange(0, BLOCK_D)
    q_in = q < Lq
    tile_in = q_in[:, None] & (d < DH)[None, :]
    row_stride = M * DH
    image_offset = b.to(tl.int64) * S * row_stride + m * DH
    value_bm = value_ptr + image_offset
    grad_value_bm = grad_value_ptr + image_offset
    qm = (b * Lq + q) * M + m
    go_ptr = grad_out_ptr + ((b * Lq + q) * row_stride + m * DH)[:, None] + d[None, :]
    go = tl.load(go_ptr, mask=tile_in, other=0.0).to(COMPUTE)
    for lvl in tl.static_range(L):
        h = tl.load(shapes_ptr + 2 * lvl).to(tl.int32)
        w = tl.load(shapes_ptr + 2 * lvl + 1).to(tl.int32)
        level_offset = tl.load(starts_ptr + lvl) * row_stride
        value_l = value_bm + level_offset
        grad_value_l = grad_value_bm + level_offset
        for pt in tl.static_range(P):
            lp = qm * (L * P) + lvl * P + pt
            a = tl.load(attn_ptr + lp, mask=q_in, other=0.0).to(COMPUTE)
            x = tl.load(loc_ptr + 2 * lp, mask=q_in, other=0.0).to(COMPUTE) * w - 0.5
            y = tl.load(loc_ptr + 2 * lp + 1, mask=q_in, other=0.0).to(COMPUTE) * h - 0.5
            x0f = tl.floor(x)
            y0f = tl.floor(y)
            fx = x - x0f
            fy = y - y0f
            x0 = x0f.to(tl.int32)
            y0 = y0f.to(tl.int32)
            in_x0 = (x0 >= 0) & (x0 < w)
            in_x1 = (x0 >= -1) & (x0 < w - 1)
            in_y0 = q_in & (y0 >= 0) & (y0 < h)
            in_y1 = q_in & (y0 >= -1) & (y0 < h - 1)
            m00 = tile_in & (in_y0 & in_x0)[:, None]
            m01 = tile_in & (in_y0 & in_x1)[:, None]
            m10 = tile_in & (in_y1 & in_x0)[:, None]
            m11 = tile_in & (in_y1 & in_x1)[:, None]
            off00 = ((y0 * w + x0) * row_stride)[:, None] + d[None, :]
            off10 = off00 + w * row_stride
            v00 = tl.load(value_l + off00, mask=m00, other=0.0).to(COMPUTE)
            v01 = tl.load(value_l + off00 + row_stride, mask=m01, other=0.0).to(COMPUTE)
            v10 = tl.load(value_l + off10, mask=m10, other=0.0).to(COMPUTE)
            v11 = tl.load(value_l + off10 + row_stride, mask=m11, other=0.0).to(COMPUTE)
            gx = fx[:, None]
            gy = fy[:, None]
            top = v00 * (1 - gx) + v01 * gx
            bottom = v10 * (1 - gx) + v11 * gx
            # d out / d attention weight = <grad_out, sample>
            grad_a = tl.sum(go * (top * (1 - gy) + bottom * gy), axis=1)
            tl.store(grad_attn_ptr + lp, grad_a.to(grad_attn_ptr.dtype.element_ty), mask=q_in)
            # d sample / d x and d y (pixel units), times d pixel / d normalised = w, h
            ds_dx = (v01 - v00) * (1 - gy) + (v11 - v10) * gy
            ds_dy = bottom - top
            grad_x = a * tl.sum(go * ds_dx, axis=1) * w
            grad_y = a * tl.sum(go * ds_dy, axis=1) * h
            grad_loc_ty = grad_loc_ptr.dtype.element_ty
            tl.store(grad_loc_ptr + 2 * lp, grad_x.to(grad_loc_ty), mask=q_in)
            tl.store(grad_loc_ptr + 2 * lp + 1, grad_y.to(grad_loc_ty), mask=q_in)
            # d out / d value at each corner = attention weight x bilinear weight x grad_out
            ga = go * a[:, None]
            tl.atomic_add(grad_value_l + off00, ga * ((1 - gx) * (1 - gy)), mask=m00)
            tl.atomic_add(grad_value_l + off00 + row_stride, ga * (gx * (1 - gy)), mask=m01)
            tl.atomic_add(grad_value_l + off10, ga * ((1 - gx) * gy), mask=m10)
            tl.atomic_add(grad_value_l + off10 + row_stride, ga * (gx * gy), mask=m11)


@functools.cache
def _kernels(interpret: bool) -> tuple[Any, Any]:
    """The two kernels jitted for the GPU, or for Triton's interpreter when ``interpret``
    (``triton.jit`` reads ``TRITON_INTERPRET`` when it wraps a function)."""
    return triton.jit(_forward_kernel), triton.jit(_backward_kernel)


def _imported_for_interpreter() -> bool:
    """Whether Triton was first imported with ``TRITON_INTERPRET=1``: its own library functions
    (``tl.zeros``, ``tl.sum``, ...) are wrapped for the interpreter or for the GPU then."""
    return isinstance(tl.zeros, InterpretedFunction)


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``)."""
    return bool(triton.knobs.runtime.interpret)


def device_status(device: torch.device) -> tuple[bool, str]:
    """Whether the Triton kernels can run on ``device`` in this process, and why (not).

    CUDA tensors run compiled kernels; CPU tensors need the interpreter, which Triton sets up
    when it is first imported: ``TRITON_INTERPRET=1`` must be in the environment before Python
    starts (or at least before anything imports Triton).
    """
    requested, imported = interpreting(), _imported_for_interpreter()
    if requested != imported:
        return False, (
            f"TRITON_INTERPRET is {int(requested)} now but was {int(imported)} when Triton was "
            "first imported (Triton reads it then): set it before Python starts"
        )
    where = " in the interpreter (TRITON_INTERPRET=1)" if requested else ""
    if device.type == "cuda" or (device.type == "cpu" and requested):
        return True, f"Triton {triton.__version__} kernels{where}"
    return False, (
        "the Triton kernels run on CUDA tensors, or on CPU tensors in Triton's interpreter "
        f"(TRITON_INTERPRET=1 set before Python starts); the inputs are on {device.type}"
    )


def _blocks(dh: int) -> tuple[int, int]:
    """``(BLOCK_Q, BLOCK_D)``: all Dh channels of up to 64 queries per program. Independent of
    Lq, so that one compilation serves every image size."""
    block_d = triton.next_power_of_2(max(dh, 1))
    return max(1, min(_MAX_BLOCK_Q, _MAX_TILE // block_d)), block_d


def _launch_args(value: Tensor, sampling_locations: Tensor) -> tuple[tuple[int], dict[str, Any]]:
    b, s, m, dh = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    block_q, block_d = _blocks(dh)
    num_q_blocks = triton.cdiv(lq, block_q)
    meta = {
        "S": s,
        "M": m,
        "Lq": lq,
        "num_q_blocks": num_q_blocks,
        "L": num_levels,
        "P": num_points,
        "DH": dh,
        "BLOCK_Q": block_q,
        "BLOCK_D": block_d,
        "COMPUTE": tl.float64 if value.dtype == torch.float64 else tl.float32,
    }
    return (b * num_q_blocks * m,), meta


def _nothing_to_do(value: Tensor, sampling_locations: Tensor) -> bool:
    return value.numel() == 0 or sampling_locations.numel() == 0


@triton_op("instaformer_triton::forward", mutates_args=())
def triton_forward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The forward kernel; contiguous inputs of one dtype on one device, shapes as
    ``ms_deform_attn`` (``spatial_shapes`` and ``level_start_index`` int64 on that device).

    Returns:
        Tensor[B, Lq, M * Dh] in ``value``'s dtype.
    """
    b, _, m, dh = value.shape
    lq = sampling_locations.shape[1]
    if _nothing_to_do(value, sampling_locations):
        return value.new_zeros(b, lq, m * dh)
    out = value.new_empty(b, lq, m * dh)
    grid, meta = _launch_args(value, sampling_locations)
    forward_kernel = _kernels(interpreting())[0]
    wrap_triton(forward_kernel)[grid](
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, out, **meta
    )
    return out


@triton_forward.register_fake
def _fake_forward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    b, _, m, dh = value.shape
    return value.new_empty(b, sampling_locations.shape[1], m * dh)


@triton_op("instaformer_triton::backward", mutates_args=())
def triton_backward(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """The backward kernel: gradients of ``value``, ``sampling_locations`` and
    ``attention_weights`` (in their dtypes) given ``grad_output`` Tensor[B, Lq, M * Dh]."""
    grad_dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
    grad_value = torch.zeros(value.shape, dtype=grad_dtype, device=value.device)
    grad_locations = torch.zeros_like(sampling_locations)
    grad_weights = torch.zeros_like(attention_weights)
    if not _nothing_to_do(value, sampling_locations):
        grid, meta = _launch_args(value, sampling_locations)
        backward_kernel = _kernels(interpreting())[1]
        wrap_triton(backward_kernel)[grid](
            grad_output,
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            grad_value,
            grad_locations,
            grad_weights,
            **meta,
        )
    return grad_value.to(value.dtype), grad_locations, grad_weights


@triton_backward.register_fake
def _fake_backward(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    return (
        torch.empty_like(value, memory_format=torch.contiguous_format),
        torch.empty_like(sampling_locations, memory_format=torch.contiguous_format),
        torch.empty_like(attention_weights, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = (
        ctx.saved_tensors
    )
    grad_value, grad_locations, grad_weights = triton_backward(
        grad_output.contiguous(),
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
    )
    return grad_value, None, None, grad_locations, grad_weights


triton_forward.register_autograd(_backward, setup_context=_setup_context)
torch.library.register_autocast("instaformer_triton::forward", "cuda", torch.float32)


def ms_deform_attn_triton(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention with the Triton kernels; arguments and return as
    ``dispatch.ms_deform_attn`` (``spatial_shapes`` / ``level_start_index`` int64 tensors).

    Makes the inputs contiguous and moves the two index tensors to ``value``'s device.
    """
    device = value.device
    return triton_forward(
        value.contiguous(),
        spatial_shapes.to(device=device, dtype=torch.long).contiguous(),
        level_start_index.to(device=device, dtype=torch.long).contiguous(),
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
    )
