"""Command line and per-process set-up shared by ``train_net.py`` and the tools."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import sys
from typing import Any

import numpy as np
import torch

from mask2former.config import CfgNode
from mask2former.engine.lock import hold_output_dir
from mask2former.utils import comm
from mask2former.utils.argtypes import int_range
from mask2former.utils.atomic import atomic_write_bytes
from mask2former.utils.logger import setup_logger
from mask2former.utils.outputs import require_dir
from mask2former.utils.threads import configure_threads

__all__ = [
    "default_argument_parser",
    "default_setup",
    "collect_env_info",
    "resolve_device",
    "seed_all",
]


def default_argument_parser(description: str | None = None) -> argparse.ArgumentParser:
    """detectron2's training command line: config file, processes, resume/eval, overrides."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog=(
            "Examples:\n"
            "  one machine, 8 GPUs:   python train_net.py --config-file CFG --num-gpus 8\n"
            "  CPU, 2 processes:      python train_net.py --config-file CFG --num-gpus 2 "
            "MODEL.DEVICE cpu\n"
            "  two machines:          (machine 0) --num-machines 2 --machine-rank 0 "
            "--dist-url tcp://HOST:PORT\n"
            "                         (machine 1) --num-machines 2 --machine-rank 1 "
            "--dist-url tcp://HOST:PORT\n"
            "  torchrun:              torchrun --nproc-per-node 8 train_net.py --config-file CFG\n"
            "  evaluate:              python train_net.py --config-file CFG --eval-only "
            "MODEL.WEIGHTS model.pth"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT_DIR/last_checkpoint (model, optimizer, schedule, iteration)",
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS and exit")
    parser.add_argument("--num-gpus", type=int_range(1), default=1, help="processes per machine")
    parser.add_argument(
        "--num-machines", type=int_range(1), default=1, help="total number of machines"
    )
    parser.add_argument(
        "--machine-rank",
        type=int_range(0),
        default=0,
        help="rank of this machine (0 .. num-machines-1)",
    )
    parser.add_argument(
        "--dist-url",
        default="auto",
        help="tcp://HOST:PORT of machine 0; 'auto' picks a free local port (one machine)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of configuration, data and checkpoint errors "
        "(also INSTAFORMER_DEBUG=1)",
    )
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. SOLVER.IMS_PER_BATCH 8",
    )
    return parser


def resolve_device(cfg: CfgNode) -> None:
    """Replace an unavailable ``MODEL.DEVICE`` "cuda" by "cpu" (with a warning), in place."""
    from mask2former.modeling.build import available_device

    device = str(available_device(cfg.MODEL.DEVICE))
    if device != str(cfg.MODEL.DEVICE):
        frozen = cfg.is_frozen()
        cfg.defrost()
        cfg.MODEL.DEVICE = device
        if frozen:
            cfg.freeze()


def seed_all(seed: int) -> int:
    """Seed Python, NumPy and torch; a negative seed draws one. Returns the seed used."""
    if seed < 0:
        seed = int.from_bytes(os.urandom(2), "big") + os.getpid() % 1000
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def collect_env_info() -> str:
    """A table of the versions and devices that matter for reproducing a run."""
    rows: list[tuple[str, Any]] = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", " ")),
        ("numpy", np.__version__),
        ("torch", f"{torch.__version__} @ {os.path.dirname(torch.__file__)}"),
        ("torch CUDA build", torch.version.cuda),
        ("CUDA available", torch.cuda.is_available()),
        ("CPU threads", torch.get_num_threads()),
        ("machine", platform.machine()),
    ]
    for name in ("torchvision", "fvcore", "iopath", "cv2", "pycocotools", "scipy"):
        try:
            module = __import__(name)
            rows.append((name, getattr(module, "__version__", "unknown")))
        except ImportError:
            rows.append((name, "not installed"))
    for index in range(torch.cuda.device_count()):
        rows.append((f"GPU {index}", torch.cuda.get_device_name(index)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def default_setup(cfg: CfgNode, args: argparse.Namespace) -> logging.Logger:
    """Per-process set-up: output folder and its lock, loggers, CPU threads, environment
    summary, config dump (``config.yaml``; ``config_eval.yaml`` with ``--eval-only``, which
    leaves the training run's config as it is), seed. A new training run (neither ``--resume``
    nor ``--eval-only``) starts ``log.txt`` afresh; the others append to it.

    Raises:
        OutputError: ``OUTPUT_DIR`` is empty (it would mean the current folder).
        RunLockError: (main process) another live run owns ``OUTPUT_DIR``.
    """
    output_dir = require_dir(cfg.OUTPUT_DIR, "OUTPUT_DIR")
    rank = comm.get_rank()
    if comm.is_main_process():
        os.makedirs(output_dir, exist_ok=True)
        hold_output_dir(output_dir)  # before anything is written: a second live run is refused
    new_run = not (getattr(args, "resume", False) or getattr(args, "eval_only", False))
    logger = setup_logger(output_dir, rank=rank, name="instaformer", append=not new_run)
    logger.info("Rank %d of %d", rank, comm.get_world_size())
    if str(cfg.MODEL.DEVICE).startswith("cpu"):
        # torchrun gives LOCAL_WORLD_SIZE; launch() runs --num-gpus processes per machine
        configure_threads(int(os.environ.get("LOCAL_WORLD_SIZE", getattr(args, "num_gpus", 1))))
        logger.info("Device: cpu (MODEL.DEVICE %s)", cfg.MODEL.DEVICE)
    else:
        index = torch.cuda.current_device()
        logger.info("Device: cuda:%d, %s", index, torch.cuda.get_device_name(index))
    logger.info("Environment:\n%s", collect_env_info())
    logger.info("Command line arguments: %s", args)
    if args.config_file:
        logger.info("Config file %s", args.config_file)
    if comm.is_main_process():
        # --eval-only keeps the training run's config.yaml: its own config is config_eval.yaml
        name = "config_eval.yaml" if getattr(args, "eval_only", False) else "config.yaml"
        path = os.path.join(output_dir, name)
        atomic_write_bytes(path, cfg.dump().encode("utf-8"))
        logger.info("Full config saved to %s", path)
    seed = seed_all(cfg.SEED if cfg.SEED < 0 else cfg.SEED + rank)
    logger.info("Random seed %d", seed)
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
    return logger
