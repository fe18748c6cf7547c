"""Whole InstaFormer (Swin-T od), ground-truth order rows: time and peak memory, model vs head.

One 512x512 input with n annotated thing instances: disjoint, panoptic-like masks (cells of a
random Voronoi map; the remaining cells are stuff segments), random initial weights, float32.
A random network predicts masks covering most of the image for every query, which a trained one
does not; so that the order head sees realistic masks, the final-layer mask logits of the first
queries are replaced by +-10 from the ground-truth cells (``--raw-masks`` keeps the random ones).
The model runs with ``order_rows="ground_truth"`` (full-mask matching to the ground truth, order
head over the n instances, semantic/panoptic/instance post-processing); the order head alone is
timed on the same selected queries (``InstaFormer.run_order_head``), the network alone
(``run_network``) too.
Each n runs in a fresh process so that its peak resident memory can be read: the figure is the
process's peak RSS (and its growth over the RSS after building the model). Median of
``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time

import torch

from mask2former.utils.argtypes import int_range

CONFIG = "configs/instaorder/occlusion_depth/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=CONFIG, help="InstaFormer config file")
    parser.add_argument("--size", type=int_range(1), default=512, help="square input side (pixels)")
    parser.add_argument(
        "--instances", type=int_range(1), nargs="+", default=[10, 50], help="values of n"
    )
    parser.add_argument("--stuff", type=int_range(0), default=8, help="Voronoi cells left to stuff")
    parser.add_argument("--threads", type=int_range(1), default=2, help="torch intra-op threads")
    parser.add_argument(
        "--repeats", type=int_range(1), default=3, help="timed runs (median reported)"
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time summed over its threads (stable on "
        "a shared machine; with T threads the wall time of an idle machine is at least cpu / T)",
    )
    parser.add_argument(
        "--raw-masks", action="store_true", help="keep the random network's mask logits"
    )
    parser.add_argument(
        "--dense", action="store_true", help="the order head's released O(n*h*w) attention"
    )


def voronoi_labels(cells: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """Tensor[h, w] int64: label of the nearest of ``cells`` random seeds (a Voronoi map)."""
    seeds = torch.rand(cells, 2, generator=generator) * torch.tensor([h, w])
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    grid = torch.stack([ys, xs], -1).reshape(-1, 1, 2).float()  # hw x 1 x 2
    return ((grid - seeds[None]) ** 2).sum(-1).argmin(-1).reshape(h, w)


def make_input(n: int, stuff: int, height: int, width: int, generator: torch.Generator) -> dict:
    """Input with ground truth, for evaluation mode and training steps: n thing cells (annotated,
    classes 0..79) then ``stuff`` cells (classes 80..132), random occlusion and depth targets
    (``occlusion_matrix``, ``depth_matrix`` int32 Tensor[n, n]; no overlapping pair, count 2)."""
    from mask2former.structures import Instances

    labels = voronoi_labels(n + stuff, height, width, generator)
    masks = labels[None] == torch.arange(n + stuff)[:, None, None]
    classes = torch.cat(
        [torch.randint(0, 80, (n,), generator=generator), 80 + torch.arange(stuff) % 53]
    )
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    occlusion = torch.randint(0, 2, (n, n), dtype=torch.int32, generator=generator)
    occlusion.fill_diagonal_(0)
    depth = torch.randint(0, 2, (n, n), dtype=torch.int32, generator=generator).triu(1)
    depth = depth + (1 - depth.t()).tril(-1)  # depth[j, i] = 1 - depth[i, j]
    depth.fill_diagonal_(-1)
    return {
        "image": image,
        "height": height,
        "width": width,
        "instances": Instances((height, width), gt_classes=classes, gt_masks=masks),
        "tgt_pan_idx": torch.arange(n),
        "occlusion_matrix": occlusion,
        "depth_matrix": depth,
        "overlap_matrix": torch.zeros((n, n), dtype=torch.int32),
        "count_matrix": torch.full((n, n), 2, dtype=torch.int32),
    }


def realistic_masks(model, masks: torch.Tensor) -> None:
    """Make ``model.run_network`` predict logits +-10 from ``masks`` (bool Tensor[M, H, W],
    at the padded input size) for queries 0..M-1 of the final layer (benchmark only)."""
    run_network = model.run_network

    def patched(images: torch.Tensor):
        outputs, embed, feats = run_network(images)
        small = torch.nn.functional.interpolate(
            masks[None].float(), size=outputs["pred_masks"].shape[-2:], mode="nearest"
        )[0]
        outputs["pred_masks"][:, : masks.shape[0]] = small * 20 - 10
        return outputs, embed, feats

    model.run_network = patched


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _median_time(fn, repeats: int, clock) -> float:
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def _case(args: argparse.Namespace, n: int, queue: mp.Queue) -> None:
    from instaformer.config import get_cfg
    from instaformer.modeling import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file(args.config)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    model = build_model(cfg).eval()
    model.geometric_predictor.dense_feature_attention = args.dense
    x = make_input(n, args.stuff, args.size, args.size, torch.Generator().manual_seed(n))
    if not args.raw_masks:
        realistic_masks(model, x["instances"].gt_masks)
    rss0 = _rss_mib()
    with torch.inference_mode():
        images, _ = model.preprocess_image([x])
        outputs, embed, feats = model.run_network(images)
        queries = torch.arange(n)  # matched to the n annotated cells with realistic masks

        def head() -> None:
            model.run_order_head(queries, embed[0], outputs["pred_masks"][0], feats[0])

        def whole() -> None:
            out = model([x], order_rows="ground_truth")[0]
            assert out["occlusion"].shape == (n, n)

        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        head()  # warm-up
        head_s = _median_time(head, args.repeats, clock)
        whole()
        model_s = _median_time(whole, args.repeats, clock)
        network_s = _median_time(lambda: model.run_network(images), args.repeats, clock)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    coverage = x["instances"].gt_masks[:n].any(0).float().mean().item()
    queue.put((model_s, network_s, head_s, peak, peak - rss0, coverage))


def run(args: argparse.Namespace) -> None:
    ctx = mp.get_context("fork")  # the module is loaded by path: children cannot re-import it
    print(
        f"InstaFormer {args.config}\nground-truth order rows, input {args.size}x{args.size}, "
        f"float32, cpu x{args.threads}, {args.clock} clock, median of {args.repeats}, "
        f"{'released dense' if args.dense else 'covered-pixel'} feature attention, "
        f"{'random' if args.raw_masks else 'ground-truth-like'} masks"
    )
    print(
        f"{'n':>4} {'coverage':>9} {'model (s)':>10} {'network (s)':>12} {'head (s)':>9} "
        f"{'head/rest':>10} {'peak RSS (MiB)':>15} {'growth (MiB)':>13}"
    )
    for n in args.instances:
        queue = ctx.Queue()
        proc = ctx.Process(target=_case, args=(args, n, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            print(f"{n:>4}  failed (exit {proc.exitcode})")
            continue
        model_s, network_s, head_s, peak, growth, coverage = queue.get()
        share = head_s / max(model_s - head_s, 1e-9)
        print(
            f"{n:>4} {coverage:>9.2f} {model_s:>10.3f} {network_s:>12.3f} {head_s:>9.3f} "
            f"{share:>9.1%} {peak:>15.0f} {growth:>13.0f}"
        )
