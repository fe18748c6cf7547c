"""Training-step cost of config variants side by side, and where one step's time goes.

Writes a small synthetic twin to a temporary folder, builds one trainer per variant (the config
plus that variant's ``KEY VALUE`` overrides, the trainer and data loader of ``train_net.py``) and
times ``Trainer.run_step`` one step of each variant in turn (each variant sees the same batches
in the same order), so that a changing machine load hits every variant alike::

    python tools/benchmark.py training --threads 1 --iters 40 \\
        --variant base --variant points512 MODEL.MASK_FORMER.TRAIN_NUM_POINTS 512

Each step's wall time and the CPU time of this process are measured; with ``--threads 1`` the
CPU time hardly depends on what else the machine runs. With ``--profile`` the first variant
then runs ``--iters`` more steps, their CPU time split into the exclusive times of the step's
parts (backbone, pixel decoder, transformer decoder, matcher, Mask2Former losses, order head
and losses, backward, gradient clipping, optimizer, weight check, the rest with the data), and
``--iters`` more under ``torch.profiler`` for the operators with the most self CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch

from instaformer.config import setup_cfg
from instaformer.data import make_synthetic_dataset, register_synthetic_instaorder
from instaformer.train import build_trainer
from mask2former.engine import trainer as trainer_module
from mask2former.engine.trainer import Trainer
from mask2former.utils.argtypes import int_range

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "configs" / "synthetic" / "instaformer_od_tiny.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-file", default=str(DEFAULT_CONFIG), help="config every variant starts from"
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        metavar="NAME [KEY VALUE ...]",
        help="a variant: its name, then config overrides (repeat; default: the config alone)",
    )
    parser.add_argument("--iters", type=int_range(1), default=30, help="timed steps per variant")
    parser.add_argument(
        "--warmup", type=int_range(0), default=5, help="untimed steps per variant at the start"
    )
    parser.add_argument(
        "--num-images", type=int_range(1), default=200, help="synthetic training images"
    )
    parser.add_argument(
        "--image-size", type=int_range(32), default=96, help="synthetic image side (px)"
    )
    parser.add_argument("--threads", type=int_range(1), default=1, help="torch intra-op threads")
    parser.add_argument(
        "--profile", action="store_true", help="split the steps into parts (first variant)"
    )
    parser.add_argument(
        "--top-ops", type=int_range(0), default=15, help="operators listed with --profile"
    )


class RegionTimer:
    """Exclusive CPU time (of this process) of nested regions: a region's time excludes its
    timed sub-regions."""

    def __init__(self) -> None:
        self.exclusive: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []  # [name, start, time of timed children]

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append([name, time.process_time(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                _, start, children = self._stack.pop()
                elapsed = time.process_time() - start
                self.exclusive[name] += elapsed - children
                if self._stack:
                    self._stack[-1][2] += elapsed

        return timed


class _TimedCall:
    """``obj`` whose calls go through ``timed`` (for plain callable objects, whose ``__call__``
    cannot be replaced on the instance)."""

    def __init__(self, obj: Any, timed: Callable) -> None:
        self._obj = obj
        self._timed = timed

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._obj, name)


def _instrument(trainer: Trainer, timer: RegionTimer) -> None:
    """Time the parts of ``trainer``'s steps (instance attributes and the trainer module's
    ``clip_gradients``; ``Tensor.backward`` for the whole process)."""
    model = trainer.model_without_ddp
    parts = {
        "backbone": model.backbone,
        "transformer decoder": model.sem_seg_head.predictor,
        "matcher": model.criterion.matcher,
    }
    for name, module in parts.items():
        module.forward = timer.wrap(name, module.forward)  # type: ignore[method-assign]
    decoder = model.sem_seg_head.pixel_decoder
    decoder.forward_features = timer.wrap("pixel decoder", decoder.forward_features)
    model.compute_losses = timer.wrap("mask2former losses", model.compute_losses)
    model._image_log_probs = timer.wrap("order head", model._image_log_probs)
    if model.order_criterion is not None:
        model.order_criterion = _TimedCall(
            model.order_criterion, timer.wrap("order losses", model.order_criterion)
        )
    model.forward = timer.wrap("forward, rest", model.forward)  # type: ignore[method-assign]
    torch.Tensor.backward = timer.wrap("backward", torch.Tensor.backward)  # type: ignore
    trainer_module.clip_gradients = timer.wrap("gradient clipping", trainer_module.clip_gradients)
    optimizer = trainer.optimizer
    optimizer.step = timer.wrap("optimizer", optimizer.step)  # type: ignore[method-assign]
    trainer._check_parameters_finite = timer.wrap(  # type: ignore[method-assign]
        "weight check", trainer._check_parameters_finite
    )


def _build(args: argparse.Namespace, name: str, opts: list[str], out: Path) -> Trainer:
    overrides = ["OUTPUT_DIR", str(out / name), "DATASETS.TEST", "()", "MODEL.DEVICE", "cpu"]
    cfg = setup_cfg(args.config_file, [*opts, *overrides])
    (out / name).mkdir()
    torch.manual_seed(0)
    return build_trainer(cfg)


class Step(NamedTuple):
    """Costs of one training step, in seconds."""

    wall: float
    cpu: float  # CPU time of this process (all its threads; not the loader's workers)
    data: float  # wall time waiting for the batch


def _steps(trainer: Trainer, data: Iterator[list[dict]], n: int) -> list[Step]:
    """``n`` training steps of ``trainer``; the costs of each."""
    steps = []
    for _ in range(n):
        wall, cpu = time.perf_counter(), time.process_time()
        scalars = trainer.run_step(data)
        steps.append(
            Step(time.perf_counter() - wall, time.process_time() - cpu, scalars["data_time"])
        )
        trainer.iteration += 1
    return steps


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    variants = args.variant or [["config"]]
    names = [v[0] for v in variants]
    if len(set(names)) != len(names):
        raise SystemExit(f"variant names must differ, got {names}")
    for name, *opts in variants:
        if len(opts) % 2:
            raise SystemExit(f"variant {name!r}: overrides come in KEY VALUE pairs, got {opts}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_synthetic_dataset(
            str(root / "data"),
            num_train=args.num_images,
            num_val=0,
            image_size=args.image_size,
            seed=0,
        )
        register_synthetic_instaorder(str(root / "data"))
        trainers, loaders = {}, {}
        for name, *opts in variants:
            trainer = _build(args, name, opts, root)
            trainer.model.train()
            trainers[name] = trainer
            loaders[name] = iter(trainer.build_train_loader(trainer.cfg, 0))
            _steps(trainer, loaders[name], args.warmup)
        # one step of each variant in turn: a load change hits the neighbouring steps alike
        steps: dict[str, list[Step]] = {name: [] for name in names}
        for _ in range(args.iters):
            for name in names:
                steps[name] += _steps(trainers[name], loaders[name], 1)
        _report(args, names, steps)
        if args.profile:
            first = names[0]
            timer = RegionTimer()
            _instrument(trainers[first], timer)
            profiled = _steps(trainers[first], loaders[first], args.iters)
            _report_profile(trainers[first], timer, profiled)
            if args.top_ops:
                _report_ops(args, trainers[first], loaders[first])


def _ratios(steps: list[float], base: list[float]) -> str:
    """Median (quartiles) of the ratios of neighbouring steps."""
    ratios = [t / b for t, b in zip(steps, base, strict=True)]
    q1, q2, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return f"{q2:.2f} ({q1:.2f}-{q3:.2f})"


def _report(args: argparse.Namespace, names: list[str], steps: dict[str, list[Step]]) -> None:
    print(
        f"train step, {args.image_size} px synthetic, {args.threads} thread(s), {args.iters} "
        f"steps per variant, one of each in turn. Medians; ratios to {names[0]}: median "
        "(quartiles) of the ratios of neighbouring steps"
    )
    print(f"  {'variant':20s} {'wall s':>7s} {'CPU s':>7s}  {'wall ratio':17s}  CPU ratio")
    base = steps[names[0]]
    for name in names:
        wall, cpu = [s.wall for s in steps[name]], [s.cpu for s in steps[name]]
        print(
            f"  {name:20s} {statistics.median(wall):7.3f} {statistics.median(cpu):7.3f}  "
            f"{_ratios(wall, [s.wall for s in base]):17s}  {_ratios(cpu, [s.cpu for s in base])}"
        )


def _report_profile(trainer: Trainer, timer: RegionTimer, steps: list[Step]) -> None:
    n = len(steps)
    total = sum(s.cpu for s in steps)
    shares = dict(timer.exclusive)
    shares["rest of the step (data included)"] = total - sum(shares.values())
    print(
        f"\nwhere the process CPU time of a step of {_describe(trainer)} goes ({n} steps, "
        f"{total / n:.3f} CPU s/step, {sum(s.wall for s in steps) / n:.3f} s/step wall, of "
        f"which {sum(s.data for s in steps) / n:.3f} s waiting for data):"
    )
    for name, seconds in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {name:32s} {1000 * seconds / n:7.1f} ms  {100 * seconds / total:5.1f} %")


def _report_ops(args: argparse.Namespace, trainer: Trainer, data: Iterator[list[dict]]) -> None:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _steps(trainer, data, args.iters)
    print(f"\noperators by self CPU time ({args.iters} steps, torch.profiler):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top_ops))


def _describe(trainer: Trainer) -> str:
    """Short description of the trainer's model for the profile heading."""
    cfg = trainer.cfg
    return (
        f"{cfg.MODEL.META_ARCHITECTURE} (batch {cfg.SOLVER.IMS_PER_BATCH}, "
        f"{cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS} points, {cfg.MODEL.MASK_FORMER.DEC_LAYERS} "
        "decoder layers)"
    )
