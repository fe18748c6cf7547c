"""Multi-scale deformable attention op: forward and forward+backward time per implementation.

Implementations: ``per_level`` (the released per-level grid_sample formulation,
``reference.ms_deform_attn_grid_sample``), ``pytorch`` (our PyTorch path), ``triton`` (the Triton
kernels: on CUDA, or on the CPU in Triton's interpreter with ``TRITON_INTERPRET=1``, which is for
checking, not timing) and, on CUDA when the kernels build, ``kernel``. Inputs are random and
shaped like Mask2Former's pixel decoder: levels at 1/8, 1/16 and 1/32 of a square input, one
query per value position (Lq = S).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from mask2former.modeling.ops.dispatch import triton_status
from mask2former.modeling.ops.kernel import kernel_status, ms_deform_attn_kernel
from mask2former.modeling.ops.pytorch_impl import ms_deform_attn_pytorch
from mask2former.modeling.ops.reference import ms_deform_attn_grid_sample, random_inputs
from mask2former.utils.argtypes import int_range

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--size", type=int_range(1), nargs="+", default=[1024], help="input sides (px)"
    )
    parser.add_argument("--batch", type=int_range(1), default=2)
    parser.add_argument("--heads", type=int_range(1), default=8)
    parser.add_argument("--head-dim", type=int_range(1), default=32, help="channels per head")
    parser.add_argument("--points", type=int_range(1), default=4, help="sampling points per level")
    parser.add_argument("--strides", type=int_range(1), nargs="+", default=[8, 16, 32])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument(
        "--threads", type=int_range(1), default=2, help="torch intra-op threads (CPU)"
    )
    parser.add_argument(
        "--repeats", type=int_range(1), default=5, help="timed runs (median reported)"
    )
    parser.add_argument("--warmup", type=int_range(0), default=2)
    parser.add_argument("--im2col-step", type=int_range(1), default=64)
    parser.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="wall time, or CPU time of this process (steadier on a shared CPU machine)",
    )


def _implementations(device: torch.device, im2col_step: int) -> dict[str, Callable]:
    impls: dict[str, Callable] = {
        "per_level": lambda v, s, i, loc, w: ms_deform_attn_grid_sample(v, s, loc, w),
        "pytorch": lambda v, s, i, loc, w: ms_deform_attn_pytorch(v, s, loc, w),
    }
    available, reason = triton_status(device)
    if available:
        from mask2former.modeling.ops.triton_kernel import ms_deform_attn_triton

        impls["triton"] = lambda v, s, i, loc, w: ms_deform_attn_triton(v, s, i, loc, w)
    else:
        print(f"triton skipped: {reason}")
    if device.type == "cuda":
        available, reason = kernel_status()
        if available:
            impls["kernel"] = lambda *a: ms_deform_attn_kernel(*a, im2col_step)
        else:
            print(f"kernel skipped: {reason}")
    return impls


def _closures(
    fn: Callable, inputs: tuple, grad_inputs: list
) -> tuple[Callable[[], None], Callable[[], None]]:
    def forward() -> None:
        with torch.no_grad():
            fn(*inputs)

    def forward_backward() -> None:
        fn(*grad_inputs).sum().backward()

    return forward, forward_backward


def _time(
    fn: Callable[[], None], device: torch.device, repeats: int, warmup: int, clock: str
) -> float:
    now = time.process_time if clock == "process" else time.perf_counter
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = now()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(now() - start)
    return statistics.median(times) * 1e3


def run(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    if device.type == "cuda" and args.clock == "process":
        raise ValueError("--clock process measures CPU time; use --clock wall with --device cuda")
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {name}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"clock {args.clock}"
    )
    impls = _implementations(device, args.im2col_step)
    for size in args.size:
        shapes = [(size // s, size // s) for s in args.strides]
        num_queries = sum(h * w for h, w in shapes)
        inputs = random_inputs(
            batch=args.batch,
            spatial_shapes=shapes,
            num_queries=num_queries,
            num_heads=args.heads,
            head_dim=args.head_dim,
            num_points=args.points,
            dtype=DTYPES[args.dtype],
            device=device,
            generator=torch.Generator().manual_seed(0),
        )
        print(
            f"\ninput {size}x{size}: levels {shapes}, B={args.batch}, Lq=S={num_queries}, "
            f"M={args.heads}, Dh={args.head_dim}, P={args.points}, {args.dtype}"
        )
        print(f"{'impl':10s} {'forward ms':>12s} {'fwd+bwd ms':>12s}")
        grad_inputs = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
        for impl, fn in impls.items():
            forward, forward_backward = _closures(fn, inputs, grad_inputs)
            fwd = _time(forward, device, args.repeats, args.warmup, args.clock)
            fwd_bwd = _time(forward_backward, device, args.repeats, args.warmup, args.clock)
            print(f"{impl:10s} {fwd:12.2f} {fwd_bwd:12.2f}")
