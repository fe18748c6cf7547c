"""Training and evaluation of InstaFormer (and InstaOrderNet) models: what ``train_net.py`` runs.

:class:`InstaFormerTrainer` fills the project pieces into the generic loop of
:class:`mask2former.engine.Trainer`: the model from ``MODEL.META_ARCHITECTURE``, the mapper from
``INPUT.DATASET_MAPPER_NAME``, the evaluators the config enables (spec INSTAFORMER.md §3.7);
standalone InstaOrderNet configs (``MODEL.META_ARCHITECTURE: InstaOrderNet``) bring their own
pair loaders, evaluators and weight loading (:data:`FAMILIES`).
:func:`main` is the per-process entry point; :func:`run` parses nothing and launches it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

import instaformer.data  # noqa: F401  (registers the InstaOrder datasets)
import instaformer.instaordernet as instaordernet
from instaformer.config import setup_cfg
from instaformer.data import build_dataset_mapper
from instaformer.evaluation import build_evaluators, report_results
from instaformer.modeling import build_model
from mask2former.checkpoint import M2FCheckpointer, format_report
from mask2former.config import CfgNode
from mask2former.data.build import build_detection_test_loader, build_detection_train_loader
from mask2former.engine import (
    Trainer,
    default_argument_parser,
    default_setup,
    launch,
    resolve_device,
)
from mask2former.evaluation import DatasetEvaluator, inference_on_dataset
from mask2former.utils import comm

__all__ = [
    "InstaFormerTrainer",
    "evaluate",
    "load_weights",
    "main",
    "run",
    "setup",
    "warn_random_frozen_parts",
]

logger = logging.getLogger("instaformer")


@dataclass(frozen=True)
class ModelFamily:
    """How to load data, evaluate and initialise one family of models (by meta-architecture)."""

    train_loader: Callable[[CfgNode, int], Iterable[list[dict]]]
    test_loader: Callable[[CfgNode, str], Iterable[list[dict]]]
    evaluators: Callable[[CfgNode, str, str], DatasetEvaluator | list[DatasetEvaluator]]
    load_weights: Callable[[CfgNode, nn.Module, str], Any]


def _panoptic_train_loader(cfg: CfgNode, start_iter: int) -> Iterable[list[dict]]:
    mapper = build_dataset_mapper(cfg, is_train=True)
    return build_detection_train_loader(cfg, mapper=mapper, start_iter=start_iter)


def _panoptic_test_loader(cfg: CfgNode, dataset_name: str) -> Iterable[list[dict]]:
    mapper = build_dataset_mapper(cfg, is_train=False)
    return build_detection_test_loader(cfg, dataset_name, mapper=mapper)


def load_weights(cfg: CfgNode, model: nn.Module, path: str) -> dict[str, list]:
    """Load ``path`` into an InstaFormer / Mask2Former ``model`` (mismatches are logged).

    Warns when a frozen part of the model receives no weight from the file, the usual mistake
    with the released configs (an ImageNet backbone instead of a Mask2Former checkpoint).
    """
    report = M2FCheckpointer(model).load_weights(path)
    if any(report.values()):
        logger.warning(format_report(path, report))
    frozen = {
        "backbone.": cfg.MODEL.BACKBONE.FREEZE,
        "sem_seg_head.": cfg.MODEL.SEM_SEG_HEAD.FREEZE,
    }
    missing = report["missing_keys"]
    for prefix, is_frozen in frozen.items():
        if is_frozen and any(k.startswith(prefix) and "adapter" not in k for k in missing):
            logger.warning(
                "%s is frozen (config) but %s does not hold all of its weights: that part stays "
                "randomly initialised and is never trained. Pass a COCO-panoptic Mask2Former "
                "checkpoint as MODEL.WEIGHTS (see docs/training.md).",
                prefix.rstrip("."),
                path,
            )
    return report


def warn_random_frozen_parts(cfg: CfgNode) -> None:
    """Warn when an InstaFormer model trains from random weights (``MODEL.WEIGHTS ""``) with a
    frozen backbone or segmentation head: those parts stay random for the whole run."""
    if model_family(cfg) is not INSTAFORMER:
        return
    frozen = [
        name
        for name, on in (
            ("backbone", cfg.MODEL.BACKBONE.FREEZE),
            ("sem_seg_head", cfg.MODEL.SEM_SEG_HEAD.FREEZE),
        )
        if on
    ]
    if frozen:
        logger.warning(
            "MODEL.WEIGHTS is empty and %s %s frozen (config): %s randomly initialised and never "
            "trained. Pass a COCO-panoptic Mask2Former checkpoint as MODEL.WEIGHTS, or unfreeze "
            "with MODEL.BACKBONE.FREEZE False / MODEL.SEM_SEG_HEAD.FREEZE False "
            "(see docs/training.md).",
            " and ".join(frozen),
            "is" if len(frozen) == 1 else "are",
            "it stays" if len(frozen) == 1 else "they stay",
        )


INSTAFORMER = ModelFamily(
    train_loader=_panoptic_train_loader,
    test_loader=_panoptic_test_loader,
    evaluators=build_evaluators,
    load_weights=load_weights,
)
INSTAORDERNET = ModelFamily(
    train_loader=instaordernet.build_train_loader,
    test_loader=instaordernet.build_test_loader,
    evaluators=lambda cfg, name, output_dir: instaordernet.build_evaluators(cfg, output_dir),
    load_weights=lambda cfg, model, path: instaordernet.load_weights(model, path),
)
FAMILIES = {"InstaOrderNet": INSTAORDERNET}
"""``MODEL.META_ARCHITECTURE`` -> its family; every other name is an InstaFormer model."""


def model_family(cfg: CfgNode) -> ModelFamily:
    """The :class:`ModelFamily` of ``cfg.MODEL.META_ARCHITECTURE``."""
    return FAMILIES.get(cfg.MODEL.META_ARCHITECTURE, INSTAFORMER)


def evaluate(cfg: CfgNode, model: nn.Module) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` on every dataset of ``DATASETS.TEST``.

    Prints the results table and writes ``OUTPUT_DIR/eval_results.json`` (main process).

    Returns:
        ``{task: {metric: value}}`` (for several test datasets, task keys are prefixed with the
        dataset name); ``{}`` on the other processes.
    """
    results: dict[str, dict[str, Any]] = {}
    names = list(cfg.DATASETS.TEST)
    family = model_family(cfg)
    for name in names:
        loader = family.test_loader(cfg, name)
        evaluator = family.evaluators(cfg, name, cfg.OUTPUT_DIR)
        logger.info("Evaluating %s", name)
        dataset_results = inference_on_dataset(model, loader, evaluator)
        if len(names) == 1:
            results = dataset_results
        else:
            results.update({f"{name}/{task}": m for task, m in dataset_results.items()})
    if comm.is_main_process() and results:
        report_results(results, cfg.OUTPUT_DIR)
    return results


class InstaFormerTrainer(Trainer):
    """The training loop with InstaFormer's model, data and evaluators."""

    def build_model(self, cfg: CfgNode) -> nn.Module:
        model = build_model(cfg)
        logger.info(
            "Model %s: %.2f M parameters, %.2f M trainable",
            cfg.MODEL.META_ARCHITECTURE,
            sum(p.numel() for p in model.parameters()) / 1e6,
            sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        )
        return model

    def resume_or_load(self, resume: bool) -> None:
        super().resume_or_load(resume)
        if self.start_iter == 0 and not self.cfg.MODEL.WEIGHTS:
            warn_random_frozen_parts(self.cfg)

    def build_train_loader(self, cfg: CfgNode, start_iter: int):
        return model_family(cfg).train_loader(cfg, start_iter)

    def load_weights(self, model: nn.Module, path: str) -> None:
        model_family(self.cfg).load_weights(self.cfg, model, path)

    def evaluate(self, model: nn.Module) -> dict[str, dict[str, Any]]:
        return evaluate(self.cfg, model)


def setup(args: argparse.Namespace) -> CfgNode:
    """Config from ``--config-file`` and the trailing overrides, plus per-process set-up."""
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    resolve_device(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Train (or with ``--eval-only`` evaluate) in this process; returns evaluation results."""
    cfg = setup(args)
    if args.eval_only:
        model = build_model(cfg)
        if cfg.MODEL.WEIGHTS:
            model_family(cfg).load_weights(cfg, model, cfg.MODEL.WEIGHTS)
        else:
            logger.warning(
                "--eval-only without MODEL.WEIGHTS evaluates a randomly initialised model"
            )
        return evaluate(cfg, model)
    return InstaFormerTrainer(cfg).train(resume=args.resume)


def run(args: argparse.Namespace) -> None:
    """Launch :func:`main` in one process per device as ``--num-gpus`` etc. ask."""
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    resolve_device(cfg)
    backend = "nccl" if str(cfg.MODEL.DEVICE).startswith("cuda") else "gloo"
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        backend=backend,
    )


def cli(argv: list[str] | None = None) -> None:
    """``instaformer-train`` / ``train_net.py``: parse detectron2's flags and :func:`run`."""
    parser = default_argument_parser(description="Train or evaluate InstaFormer / InstaOrderNet.")
    run(parser.parse_args(argv))
