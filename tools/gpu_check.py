"""One-call GPU check: kernels, op speed, inference, training step, InstaOrderNet, train_net.

    PYTHONPATH=. python tools/gpu_check.py --output-dir OUT [--dry-run] [--steps NAME ...]

Usually started through ``tools/gpu_check.sh`` (which also installs the wheels on a bare
machine); docs/benchmarks.md ("GPU") lists the wheels and the exact command. Steps, each in its
own process with its own timeout, so that a failure, a hang or an out-of-memory error in one
loses none of the others:

1. ``ops_triton``: ``pytest tests/test_ops_triton.py``, the Triton kernels of the
   deformable attention against the PyTorch path on CUDA tensors;
2. ``ops_cuda``: build the deformable-attention CUDA kernels just in time (ninja) and run
   ``pytest tests/test_ops_cuda.py``;
3. ``op_bench``: the op at 1024^2 input, forward and forward+backward, float32 and bfloat16,
   Triton and compiled kernels against the PyTorch path (``tools/benchmarks/op.py``);
4. ``inference_swin_t``, ``inference_r50``: InstaFormer^od at 800 x 1333 with ground-truth rows
   with n annotated instances (inputs of ``tools/benchmarks/instaformer.py``), float32,
   bfloat16 autocast and ``torch.compile`` (backbone and pixel decoder / transformer decoder)
   with the compiled kernels (when ``ops_cuda`` built them; else Triton), and float32 with the
   Triton kernels: images/s, peak GPU memory, share of the order head, Triton / compiled time;
5. ``train_step``: Swin-T od, batch 2 at 1024^2, bfloat16 autocast, the released frozen recipe
   (adapters and order head train) and everything trainable: step time and peak memory;
6. ``instaordernet``: InstaOrderNet^od, N = 10 instances, all pairs batched against one input
   per forward pass (``tools/benchmarks/instaordernet.py``);
7. ``train_net``: ``train_net.py --num-gpus 1`` with AMP on the synthetic twin for
   ``TRAIN_NET_ITERS`` iterations; passes when the logged loss falls (metrics are written every
   20 iterations, as medians over the last 20, so two windows are compared; a dry run trains
   two iterations and only checks that the loss is finite).

Outputs in ``--output-dir``: ``gpu_check.json`` (rewritten after every step: environment; per
step ``status`` passed / failed / timeout / skipped, ``seconds``, ``cpu_seconds``, ``reason``,
``results``; and the goals of :data:`GOALS`, met / missed / not measured),
``gpu_check.log`` (everything the steps print), ``steps/<name>.json`` (a step's own results,
kept when it times out half-way) and ``work/`` (synthetic data, training output). The folder
follows mask2former/utils/outputs.py: it is locked for the run, and it is the check's own once
it holds the ``gpu_check.json`` that a check wrote (its record says so): only then are those
files replaced. A folder without that report that already holds one of those names, an empty
``--output-dir``, or a folder another run holds, is refused with exit status 2, before any step.
Steps run in the order 1, 2, 3, 5, 6, 7, 4 (the compile-heavy inference last) within
``--budget-s``; each records the deformable-attention path it ran (``msda_path``). The goals
(:data:`GOALS`) are printed at the end with their ratios. ``--dry-run`` runs the same code on the
CPU with tiny models and shapes (about half a minute of CPU time, one thread per step; the
Triton rows only with ``TRITON_INTERPRET=1``, in Triton's interpreter); the steps that need CUDA
are recorded as skipped. Exit status: 0 when no step failed or timed out.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmark import load_benchmark

from mask2former.engine.lock import RunLockError
from mask2former.utils.argtypes import float_range
from mask2former.utils.atomic import atomic_write_bytes
from mask2former.utils.outputs import OutputError, OutputFolder

REPO = Path(__file__).resolve().parents[1]
SWIN_T_OD = "configs/instaorder/occlusion_depth/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml"
R50_OD = "configs/instaorder/occlusion_depth/all/occlusion_depth_config.yaml"
SYNTHETIC_OD = "configs/synthetic/instaformer_od_tiny.yaml"
TRAIN_NET_ITERS = 40  # two metric windows of 20 iterations (trainer LOG_PERIOD)
REPORT = "gpu_check.json"
LOG = "gpu_check.log"


def _report_bytes(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, _report_bytes(obj))


def _benchmark_output(name: str, argv: list[str]) -> str:
    """Run ``tools/benchmarks/<name>.py`` with ``argv``; returns what it printed (also echoed)."""
    module = load_benchmark(name)
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        module.run(parser.parse_args(argv))
    text = buffer.getvalue()
    print(text, end="")
    return text


class StepContext:
    """What a step process gets: its output folder, the device, dry-run flag, result sink."""

    def __init__(self, name: str, output_dir: Path, dry_run: bool) -> None:
        self.name = name
        self.output_dir = output_dir
        self.work_dir = output_dir / "work" / name
        self.dry_run = dry_run
        self.device = "cpu" if dry_run else "cuda"
        self.results: dict = {}
        self._path = output_dir / "steps" / f"{name}.json"

    def record(self, key: str, value: object) -> None:
        """Store one result and rewrite ``steps/<name>.json`` (kept if the step is killed)."""
        self.results[key] = value
        _atomic_write_json(self._path, self.results)


def _peak_memory_mib(device: str) -> float | None:
    import torch

    if device != "cuda":
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def _reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _timed(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` (after the caller's warm-up)."""
    import torch

    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# Steps (each runs in its own process: ``--run-step NAME``)


def _pytest(ctx: StepContext, test_file: str) -> None:
    """``pytest test_file`` in a fresh process; records its summary; raises when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file],
        cwd=REPO,
        text=True,
        capture_output=True,
    )
    print(result.stdout + result.stderr, end="")
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    ctx.record("pytest_summary", summary)
    ctx.record("pytest_exit_code", result.returncode)
    if result.returncode != 0:
        raise RuntimeError(f"pytest {test_file} exited with {result.returncode}")


def _msda_path(device: str) -> str:
    """The deformable-attention path ``ms_deform_attn`` takes for tensors on ``device`` now."""
    import torch

    from mask2former.modeling.ops.dispatch import select_path

    return select_path(torch.empty(0, device=device))[0]


def step_ops_triton(ctx: StepContext) -> None:
    """The Triton kernels against the PyTorch path, on CUDA tensors."""
    _pytest(ctx, "tests/test_ops_triton.py")


def step_ops_cuda(ctx: StepContext) -> None:
    """Just-in-time build of the kernels, then the kernel-against-PyTorch tests."""
    from mask2former.modeling.ops.kernel import kernel_status

    start = time.perf_counter()
    available, reason = kernel_status()
    ctx.record("kernel_build_s", round(time.perf_counter() - start, 1))
    ctx.record("kernel_available", available)
    if not available:
        raise RuntimeError(f"the CUDA kernels did not build or load: {reason}")
    _pytest(ctx, "tests/test_ops_cuda.py")


def step_op_bench(ctx: StepContext) -> None:
    """``tools/benchmarks/op.py`` forward and forward+backward, milliseconds per implementation."""
    size = "32" if ctx.dry_run else "1024"
    if ctx.dry_run:
        repeats = ["--repeats", "1", "--warmup", "0", "--threads", "1"]
    else:
        repeats = ["--repeats", "10"]
    for dtype in ["float32"] if ctx.dry_run else ["float32", "bfloat16"]:
        text = _benchmark_output(
            "op", ["--device", ctx.device, "--size", size, "--dtype", dtype, *repeats]
        )
        rows = {
            m.group(1): {"forward_ms": float(m.group(2)), "forward_backward_ms": float(m.group(3))}
            for m in re.finditer(r"^(\w+)\s+([\d.]+)\s+([\d.]+)$", text, re.MULTILINE)
        }
        if not rows:
            raise RuntimeError("tools/benchmarks/op.py printed no timings")
        for key in ("forward_ms", "forward_backward_ms"):
            if "kernel" in rows:
                rows[f"speedup_{key}"] = rows["pytorch"][key] / rows["kernel"][key]
            if "triton" in rows:
                rows[f"speedup_triton_{key}"] = rows["pytorch"][key] / rows["triton"][key]
            if "triton" in rows and "kernel" in rows:
                rows[f"triton_vs_kernel_{key}"] = rows["triton"][key] / rows["kernel"][key]
        ratios = {k: round(v, 2) for k, v in rows.items() if not isinstance(v, dict)}
        print(f"{dtype} ratios: {ratios}")
        ctx.record(f"{dtype}_{size}px", rows)
    if not ctx.dry_run:
        missing = {"kernel", "triton"} - set(ctx.results[f"float32_{size}px"])
        if missing:
            raise RuntimeError(f"not timed (not available): {sorted(missing)}")


def _input_with_ground_truth(n: int, stuff: int, h: int, w: int, seed: int) -> dict:
    """Input of n annotated Voronoi thing cells and ``stuff`` stuff cells, with order targets
    (``tools/benchmarks/instaformer.py``: ``make_input``)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return load_benchmark("instaformer").make_input(n, stuff, h, w, generator)


# Dry run: the same configs shrunk to a few channels and layers (random weights either way).
DRY_RUN_OPTS = [
    "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
    "MODEL.MASK_FORMER.DEC_LAYERS", "3",
    "MODEL.MASK_FORMER.NHEADS", "2",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "64",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    "MODEL.MASK_FORMER.ADAPTER_DIM", "8",
    "MODEL.GEOMETRIC_PREDICTOR.D_MODEL", "32",
    "MODEL.GEOMETRIC_PREDICTOR.NUM_HEADS", "2",
    "MODEL.GEOMETRIC_PREDICTOR.NUM_LAYERS", "2",
]  # fmt: skip
DRY_RUN_BACKBONE_OPTS = {
    SWIN_T_OD: [
        "MODEL.SWIN.EMBED_DIM", "16",
        "MODEL.SWIN.DEPTHS", "[1, 1, 1, 1]",
        "MODEL.SWIN.NUM_HEADS", "[1, 1, 2, 2]",
        "MODEL.SWIN.WINDOW_SIZE", "4",
    ],
    R50_OD: [
        "MODEL.RESNETS.STEM_OUT_CHANNELS", "16",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "32",
        "MODEL.RESNETS.WIDTH_PER_GROUP", "8",
    ],
}  # fmt: skip


def _build(ctx: StepContext, config: str, opts: list[str] | None = None):
    """``(cfg, model)`` of ``config`` on the step's device, random weights (seed 0)."""
    import torch

    from instaformer.config import setup_cfg
    from instaformer.modeling import build_model

    torch.manual_seed(0)
    shrink = DRY_RUN_OPTS + DRY_RUN_BACKBONE_OPTS[config] if ctx.dry_run else []
    cfg = setup_cfg(
        str(REPO / config),
        ["MODEL.DEVICE", ctx.device, "MODEL.WEIGHTS", "", *shrink, *(opts or [])],
        freeze=False,
    )
    return cfg, build_model(cfg)


def _inference_mode(
    ctx: StepContext, config: str, mode: str, backend: str, x: dict, repeats: int
) -> dict:
    """One precision mode (``float32``, ``bfloat16`` autocast or ``compile``) with one
    deformable-attention backend (``INSTAFORMER_MSDA_BACKEND``, "" = automatic): images/s,
    order-head share and peak memory (ground-truth rows)."""
    import torch

    from mask2former.modeling.ops.dispatch import BACKEND_ENV

    os.environ[BACKEND_ENV] = backend  # this step's process only
    cfg, model = _build(ctx, config)
    model.eval()
    load_benchmark("instaformer").realistic_masks(model, x["instances"].gt_masks)
    if mode == "compile":
        model.backbone = torch.compile(model.backbone)
        model.sem_seg_head = torch.compile(model.sem_seg_head)
    autocast = torch.autocast(ctx.device, dtype=torch.bfloat16, enabled=mode != "float32")
    n = len(x["tgt_pan_idx"])
    with torch.inference_mode(), autocast:
        images, _ = model.preprocess_image([x])
        start = time.perf_counter()
        model([x], order_rows="ground_truth")  # warm-up (and compilation for "compile")
        warmup_s = time.perf_counter() - start
        _reset_peak(ctx.device)
        whole_s = _timed(lambda: model([x], order_rows="ground_truth"), ctx.device, repeats)
        peak = _peak_memory_mib(ctx.device)
        outputs, embed, feats = model.run_network(images)
        queries = torch.arange(n, device=embed.device)

        def head() -> None:
            model.run_order_head(queries, embed[0], outputs["pred_masks"][0], feats[0])

        head()
        head_s = _timed(head, ctx.device, repeats)
    return {
        "status": "passed",
        "msda_path": _msda_path(ctx.device),
        "images_per_s": 1.0 / whole_s,
        "seconds_per_image": whole_s,
        "order_head_s": head_s,
        "order_head_share": head_s / whole_s,
        "peak_memory_mib": peak,
        "warmup_s": warmup_s,
    }


def _inference(ctx: StepContext, config: str) -> None:
    import torch

    h, w, n = (64, 96, 3) if ctx.dry_run else (800, 1344, 10)  # 1333 padded to a multiple of 32
    repeats = 1 if ctx.dry_run else 10
    modes = ["float32", "bfloat16"] if ctx.dry_run else ["float32", "bfloat16", "compile"]
    if ctx.dry_run:
        ctx.record("compile", {"status": "skipped", "reason": "dry run (CPU)"})
    x = _input_with_ground_truth(n, 2 if ctx.dry_run else 8, h, w, seed=0)  # n + stuff <= queries
    ctx.record("input", {"height": h, "width": w, "instances": n, "repeats": repeats})
    # the compiled kernels when ops_cuda built them (loaded from its cache), else automatic
    kernel = "cuda" if _kernel_built(ctx) else ""
    for mode in modes:
        ctx.record(mode, _inference_mode(ctx, config, mode, kernel, x, repeats))
        _reset_peak(ctx.device)
    from mask2former.modeling.ops.dispatch import triton_status

    available, reason = triton_status(torch.device(ctx.device))
    if not available:
        ctx.record("float32_triton", {"status": "skipped", "reason": reason})
        return
    ctx.record("float32_triton", _inference_mode(ctx, config, "float32", "triton", x, repeats))
    if ctx.results["float32"]["msda_path"] == "cuda":
        ratio = ctx.results["float32_triton"]["seconds_per_image"]
        ctx.record(
            "triton_vs_kernel_seconds_per_image",
            ratio / ctx.results["float32"]["seconds_per_image"],
        )


def _kernel_built(ctx: StepContext) -> bool:
    """Whether the ``ops_cuda`` step of this run built and loaded the compiled kernels."""
    path = ctx.output_dir / "steps" / "ops_cuda.json"
    return path.is_file() and json.loads(path.read_text()).get("kernel_available") is True


def step_inference_swin_t(ctx: StepContext) -> None:
    _inference(ctx, SWIN_T_OD)


def step_inference_r50(ctx: StepContext) -> None:
    _inference(ctx, R50_OD)


def _train_recipe(ctx: StepContext, opts: list[str], batch: list[dict], repeats: int) -> dict:
    """Median optimizer-step time and peak memory under bfloat16 autocast."""
    import torch

    _, model = _build(ctx, SWIN_T_OD, opts)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    losses = []

    def step() -> None:
        with torch.autocast(ctx.device, dtype=torch.bfloat16):
            total = sum(model(batch).values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        losses.append(float(total))

    step()  # warm-up
    _reset_peak(ctx.device)
    seconds = _timed(step, ctx.device, repeats)
    peak = _peak_memory_mib(ctx.device)
    loss = losses[-1]
    if not math.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss} (training options {opts})")
    return {
        "trainable_parameters": sum(p.numel() for p in params),
        "step_s": seconds,
        "peak_memory_mib": peak,
        "loss": loss,
    }


def step_train_step(ctx: StepContext) -> None:
    """One optimizer step of Swin-T od, batch 2: frozen Mask2Former recipe and all trainable."""
    side, n, stuff, repeats = (64, 4, 2, 1) if ctx.dry_run else (1024, 6, 4, 5)
    batch = [_input_with_ground_truth(n, stuff, side, side, seed=k) for k in range(2)]
    ctx.record("input", {"batch": len(batch), "side": side, "instances": n, "repeats": repeats})
    recipes = {
        "frozen_mask2former": [],
        "fully_trainable": ["MODEL.BACKBONE.FREEZE", "False", "MODEL.SEM_SEG_HEAD.FREEZE", "False"],
    }
    for name, opts in recipes.items():
        ctx.record(name, _train_recipe(ctx, opts, batch, repeats))
        _reset_peak(ctx.device)


def step_instaordernet(ctx: StepContext) -> None:
    """InstaOrderNet^od on one image: batched pairs against one input per forward pass."""
    argv = ["--task", "od", "--device", ctx.device]
    if ctx.dry_run:
        argv += ["--instances", "2", "--input-size", "32", "--height", "48", "--width", "64"]
        argv += ["--repeats", "1", "--threads", "1"]
    else:
        argv += ["--instances", "10", "--repeats", "5"]
    text = _benchmark_output("instaordernet", argv)
    single = re.search(r"one input per forward\s*:\s*([\d.]+)\s+([\d.]+)", text)
    batched = re.search(r"(\d+) inputs per forward:\s*([\d.]+)\s+([\d.]+)", text)
    if not single or not batched:
        raise RuntimeError("tools/benchmarks/instaordernet.py printed no timings")
    ctx.record("one_per_forward_s_per_image", float(single.group(1)))
    ctx.record("inputs_per_forward", int(batched.group(1)))
    ctx.record("batched_s_per_image", float(batched.group(2)))
    ctx.record("speedup", float(single.group(1)) / float(batched.group(2)))


def step_train_net(ctx: StepContext) -> None:
    """``train_net.py --num-gpus 1`` with AMP on the synthetic twin; the logged loss must fall."""
    datasets = ctx.work_dir / "datasets"
    train_dir = ctx.work_dir / "train"
    from instaformer.data import make_synthetic_dataset
    from instaformer.data.datasets import SYNTHETIC_SUBDIR

    env = {**os.environ, "DETECTRON2_DATASETS": str(datasets), "PYTHONPATH": str(REPO)}
    num_train, num_val, side = (8, 2, 32) if ctx.dry_run else (160, 16, 96)
    make_synthetic_dataset(
        str(datasets / SYNTHETIC_SUBDIR), num_train=num_train, num_val=num_val, image_size=side
    )
    metrics = train_dir / "metrics.json"
    metrics.unlink(missing_ok=True)
    iterations = 2 if ctx.dry_run else TRAIN_NET_ITERS
    opts = [
        "MODEL.DEVICE", ctx.device,
        "SOLVER.AMP.ENABLED", "True",
        "SOLVER.MAX_ITER", str(iterations),
        "SOLVER.STEPS", f"({iterations + 1},)",
        "SOLVER.IMS_PER_BATCH", "2" if ctx.dry_run else "8",
        "SOLVER.CHECKPOINT_PERIOD", str(iterations + 1),
        "DATALOADER.NUM_WORKERS", "0" if ctx.dry_run else "2",
        "OUTPUT_DIR", str(train_dir),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "train_net.py", "--num-gpus", "1", "--config-file", SYNTHETIC_OD, *opts],
        cwd=REPO,
        env=env,
        check=True,
    )
    ctx.record("train_and_eval_s", round(time.perf_counter() - start, 1))
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    losses = [(r["iteration"], r["total_loss"]) for r in records if "total_loss" in r]
    ctx.record("logged_total_loss", losses)
    if "max_mem_mb" in records[-1]:
        ctx.record("peak_memory_mib", records[-1]["max_mem_mb"])
    if not losses or not all(map(math.isfinite, (loss for _, loss in losses))):
        raise RuntimeError(f"{metrics}: no or non-finite loss records: {losses}")
    if ctx.dry_run:  # two iterations, one record: the trend is checked on the GPU only
        return
    if len(losses) < 2:
        raise RuntimeError(f"{metrics}: fewer than two loss records: {losses}")
    fell = losses[-1][1] < losses[0][1]
    ctx.record("loss_fell", fell)
    if not fell:
        raise RuntimeError(f"the loss did not fall over {iterations} iterations: {losses}")


# name -> (function, timeout in seconds on the GPU machine, needs CUDA), in the order they run:
# the compile-heavy inference steps last, so that a spent time budget costs the fewest figures.
STEPS: dict[str, tuple[Callable[[StepContext], None], int, bool]] = {
    "ops_triton": (step_ops_triton, 90, True),
    "ops_cuda": (step_ops_cuda, 180, True),
    "op_bench": (step_op_bench, 90, False),
    "train_step": (step_train_step, 60, False),
    "instaordernet": (step_instaordernet, 45, False),
    "train_net": (step_train_net, 90, False),
    "inference_swin_t": (step_inference_swin_t, 180, False),
    "inference_r50": (step_inference_r50, 120, False),
}
CACHES = {
    "TORCH_EXTENSIONS_DIR": "torch_extensions",  # the just-in-time kernel build
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "TRITON_CACHE_DIR": "triton",
}
DRY_RUN_TIMEOUT_S = 300  # only a guard against hangs: a shared CPU can be slow


# The goals: (name, step, how to read the figure from its results, "<=" / ">=", bound).
GOALS = [
    (
        "kernel_forward_backward_speedup_1024px",
        "op_bench",
        lambda r: r["float32_1024px"]["speedup_forward_backward_ms"],
        ">=",
        3.0,
    ),
    (
        "triton_forward_backward_speedup_1024px",
        "op_bench",
        lambda r: r["float32_1024px"]["speedup_triton_forward_backward_ms"],
        ">=",
        3.0,
    ),
    (
        "triton_vs_kernel_forward_backward_1024px",
        "op_bench",
        lambda r: r["float32_1024px"]["triton_vs_kernel_forward_backward_ms"],
        "<=",
        1.5,
    ),
    (
        "swin_t_triton_vs_kernel_inference_float32",
        "inference_swin_t",
        lambda r: r["triton_vs_kernel_seconds_per_image"],
        "<=",
        1.05,
    ),
    (
        "swin_t_order_head_share_float32",
        "inference_swin_t",
        lambda r: r["float32"]["order_head_share"],
        "<=",
        0.05,
    ),
    (
        "swin_t_fully_trainable_step_peak_gib",
        "train_step",
        lambda r: r["fully_trainable"]["peak_memory_mib"] / 1024,
        "<=",
        16.0,
    ),
    ("instaordernet_batched_speedup", "instaordernet", lambda r: r["speedup"], ">=", 5.0),
    ("train_net_loss_falls", "train_net", lambda r: float(r["loss_fell"]), ">=", 1.0),
]


def _goals(steps: dict) -> dict:
    """Each goal as ``{"value", "bound", "status": met / missed / not measured}``."""
    goals = {}
    for name, step, read, op, bound in GOALS:
        try:
            value = read(steps[step]["results"])
        except (KeyError, TypeError):  # step skipped, failed early, or no GPU figure
            goals[name] = {"value": None, "bound": f"{op} {bound:g}", "status": "not measured"}
            continue
        met = value >= bound if op == ">=" else value <= bound
        goals[name] = {
            "value": value,
            "bound": f"{op} {bound:g}",
            "status": "met" if met else "missed",
        }
    return goals


# ---------------------------------------------------------------------------------------------
# Driver


def _environment(dry_run: bool) -> dict:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "dry_run": dry_run,
        "host_cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    return env


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_step_process(name: str, args: argparse.Namespace, timeout: float, log) -> tuple[str, str]:
    """Run one step in a new process group; returns (status, reason)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--output-dir", str(args.output_dir)]
    cmd += ["--run-step", name] + (["--dry-run"] if args.dry_run else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if args.dry_run:  # tiny shapes gain nothing from threads, and a shared CPU loses a lot
        env.setdefault("OMP_NUM_THREADS", "1")
    for name, folder in CACHES.items():  # compiler caches stay inside the output folder
        env.setdefault(name, str(args.output_dir / "work" / folder))
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the step and everything it started
        proc.wait()
        return "timeout", f"killed after {timeout:.0f} s"
    if code != 0:
        return "failed", f"exit status {code} (see gpu_check.log)"
    return "passed", ""


def _check_folder(folder: OutputFolder) -> None:
    """Refuse ``folder`` unless it is the check's own or holds none of its outputs (module
    docstring); the first report written makes it the check's own.

    Raises:
        OutputError: ``gpu_check.json`` is not the check's (or was changed since), or the folder
            has no report of the check and holds a file or folder of one of its output names.
    """
    if not folder.target(REPORT).exists():
        for name in (LOG, "steps", "work"):
            if os.path.lexists(folder.root / name):
                raise OutputError(
                    f"{folder.root / name} exists, and {folder.root} has no {REPORT} that "
                    "gpu_check wrote: it was not written by gpu_check and is left as it is; "
                    "move or delete it, or choose another --output-dir"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", required=True, help="results and log go here")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, CUDA skipped")
    parser.add_argument(
        "--steps", nargs="+", choices=sorted(STEPS), default=list(STEPS), help="steps to run"
    )
    parser.add_argument(
        "--budget-s",
        type=float_range(0.0),
        default=450.0,
        help="total seconds; later steps are skipped",
    )
    parser.add_argument("--run-step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.run_step:  # inside a step process, started by main (which holds the folder)
        ctx = StepContext(args.run_step, Path(args.output_dir), args.dry_run)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        STEPS[args.run_step][0](ctx)
        return 0
    try:
        with OutputFolder(args.output_dir, what="--output-dir", tool="gpu_check") as folder:
            _check_folder(folder)
            args.output_dir = folder.root.resolve()
            return _run_steps(args, folder)
    except (OutputError, RunLockError) as err:
        print(f"gpu_check: error: {err}", file=sys.stderr)
        return 2


def _run_steps(args: argparse.Namespace, folder: OutputFolder) -> int:
    """Run the chosen steps into ``folder`` (checked); the exit status of :func:`main`."""
    report_path = args.output_dir / REPORT
    report: dict = {"environment": _environment(args.dry_run), "steps": {}}
    folder.write_bytes(REPORT, _report_bytes(report))  # the folder is the check's own from now
    start = time.perf_counter()
    with open(args.output_dir / LOG, "a", buffering=1) as log:
        for name in args.steps:
            _, timeout, needs_cuda = STEPS[name]
            left = args.budget_s - (time.perf_counter() - start)
            entry: dict = {"status": "skipped", "seconds": 0.0, "reason": ""}
            results = args.output_dir / "steps" / f"{name}.json"
            results.unlink(missing_ok=True)  # from an earlier run into the same folder
            if needs_cuda and args.dry_run:
                entry["reason"] = "needs CUDA (dry run)"
            elif left < 10:
                entry["reason"] = f"time budget of {args.budget_s:.0f} s spent"
            else:
                step_timeout = min(DRY_RUN_TIMEOUT_S if args.dry_run else timeout, left)
                log.write(f"\n===== {name} (timeout {step_timeout:.0f} s) =====\n")
                log.flush()
                print(f"[gpu_check] {name} ...", flush=True)
                step_start = time.perf_counter()
                cpu_start = _children_cpu_s()
                status, reason = _run_step_process(name, args, step_timeout, log)
                entry = {
                    "status": status,
                    "seconds": round(time.perf_counter() - step_start, 1),
                    "cpu_seconds": round(_children_cpu_s() - cpu_start, 1),
                    "reason": reason,
                }
            if entry["status"] != "skipped" and results.is_file():
                entry["results"] = json.loads(results.read_text())
            report["steps"][name] = entry
            report["goals"] = _goals(report["steps"])
            report["total_s"] = round(time.perf_counter() - start, 1)
            folder.write_bytes(REPORT, _report_bytes(report))
            print(f"[gpu_check] {name}: {entry['status']} {entry['reason']}".rstrip(), flush=True)
    for name, goal in report["goals"].items():
        value = "-" if goal["value"] is None else f"{goal['value']:.3g}"
        print(f"[gpu_check] goal {name}: {value} (goal {goal['bound']}): {goal['status']}")
    bad = [n for n, e in report["steps"].items() if e["status"] in ("failed", "timeout")]
    print(f"[gpu_check] report: {report_path}; failed or timed out: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
