"""Order head alone (GeometricTransformer): time and peak memory, fast vs released attention.

Inputs are synthetic but shaped like inference: mask features at 1/4 of the input size, n disjoint
panoptic-like instance masks (cells of a random Voronoi map whose remaining cells play the stuff
regions), random mask embeddings, randomly initialised head with the released sizes. Each case runs
in a fresh process so that its peak resident memory can be read; the figure reported is the growth
of the peak over the resident size just before the first forward.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch

from instaformer.modeling.order.geometric_transformer import GeometricTransformer
from instaformer.vocabulary import TASK_CODES
from mask2former.utils.argtypes import int_range


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int_range(1), default=512, help="input image side in pixels")
    parser.add_argument(
        "--instances", type=int_range(1), nargs="+", default=[10, 50], help="values of n"
    )
    parser.add_argument("--stuff", type=int_range(0), default=8, help="Voronoi cells left to stuff")
    parser.add_argument("--task", choices=sorted(TASK_CODES), default="od")
    parser.add_argument("--d-model", type=int_range(1), default=512)
    parser.add_argument("--num-layers", type=int_range(1), default=8)
    parser.add_argument("--mask-dim", type=int_range(1), default=256)
    parser.add_argument("--threads", type=int_range(1), default=2, help="torch intra-op threads")
    parser.add_argument(
        "--repeats", type=int_range(1), default=3, help="timed forwards (median reported)"
    )
    parser.add_argument(
        "--dense",
        choices=["yes", "no", "only"],
        default="yes",
        help="also time the released O(n*h*w) attention ('only': nothing else)",
    )
    parser.add_argument("--grad", action="store_true", help="forward + backward (training)")


def voronoi_masks(n: int, stuff: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """Tensor[n, h, w] uint8: n disjoint cells of a random Voronoi map with n + stuff seeds."""
    seeds = torch.rand(n + stuff, 2, generator=generator) * torch.tensor([h, w])
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    grid = torch.stack([ys, xs], -1).reshape(-1, 1, 2).float()  # hw x 1 x 2
    label = ((grid - seeds[None]) ** 2).sum(-1).argmin(-1).reshape(h, w)
    return (label[None] == torch.arange(n)[:, None, None]).to(torch.uint8)


def _current_rss_kb() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() // 1024


def _case(args: argparse.Namespace, n: int, dense: bool, queue: mp.Queue) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(n)
    side = args.size // 4
    head = GeometricTransformer(
        tasks=TASK_CODES[args.task],
        mask_dim=args.mask_dim,
        d_model=args.d_model,
        num_layers=args.num_layers,
        dense_feature_attention=dense,
    )
    masks = voronoi_masks(n, args.stuff, side, side, g)
    feats = torch.randn(args.mask_dim, side, side, generator=g, requires_grad=args.grad)
    embed = torch.randn(n, args.mask_dim, generator=g, requires_grad=args.grad)
    times = []
    rss0 = _current_rss_kb()
    for _ in range(args.repeats):
        start = time.perf_counter()
        with torch.set_grad_enabled(args.grad):
            out = head(embed, masks, feats)
            if args.grad:
                sum(x.sum() for layers in out.values() for x in layers).backward()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    coverage = masks.any(0).float().mean().item()
    queue.put((sorted(times)[len(times) // 2], (peak - rss0) / 1024, coverage))


def run(args: argparse.Namespace) -> None:
    ctx = mp.get_context("fork")  # the module is loaded by path: children cannot re-import it
    modes = {"yes": [False, True], "no": [False], "only": [True]}[args.dense]
    print(
        f"order head {args.task}, input {args.size}x{args.size} (masks {args.size // 4}^2), "
        f"D={args.d_model}, layers={args.num_layers}, threads={args.threads}, "
        f"{'forward+backward' if args.grad else 'inference'}"
    )
    print(f"{'n':>4} {'attention':>10} {'coverage':>9} {'time (s)':>9} {'peak (MiB)':>11}")
    for n in args.instances:
        for dense in modes:
            queue = ctx.Queue()
            proc = ctx.Process(target=_case, args=(args, n, dense, queue))
            proc.start()
            proc.join()
            if proc.exitcode != 0:
                print(
                    f"{n:>4} {'dense' if dense else 'covered':>10}  failed (exit {proc.exitcode})"
                )
                continue
            seconds, mib, coverage = queue.get()
            name = "dense" if dense else "covered"
            print(f"{n:>4} {name:>10} {coverage:>9.2f} {seconds:>9.3f} {mib:>11.0f}")
