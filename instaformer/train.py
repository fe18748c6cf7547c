"""Training and evaluation of InstaFormer (and InstaOrderNet) models: what ``train_net.py`` runs.

:func:`build_trainer` hands the project pieces to the generic loop of
:class:`mask2former.engine.Trainer` (see its module for the shape): the model from
``MODEL.META_ARCHITECTURE``, the mapper from ``INPUT.DATASET_MAPPER_NAME``, the evaluators the
config enables (panoptic PQ and the occlusion / depth order evaluators,
:func:`instaformer.evaluation.build_evaluators`) and, with ``WANDB.METRICS``, a Weights & Biases
run; standalone InstaOrderNet configs (``MODEL.META_ARCHITECTURE: InstaOrderNet``) bring their own
pair loaders, evaluators and weight loading (:data:`FAMILIES`).

The config is parsed once, by :func:`load_config` in :func:`run`; every process receives that
frozen object: :func:`main` (per process) -> :func:`setup` -> :func:`build_trainer` or
:func:`evaluate`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from torch import nn

import instaformer.data  # noqa: F401  (registers the InstaOrder datasets)
import instaformer.instaordernet as instaordernet
from instaformer import model_zoo
from instaformer.config import setup_cfg
from instaformer.data import DataError, build_dataset_mapper
from instaformer.data.custom import check_num_classes, register_custom_datasets
from instaformer.errors import run_cli
from instaformer.evaluation import build_evaluators, report_results
from instaformer.evaluation.results import RANDOM_INIT, describe_random_parts
from instaformer.modeling import build_model
from instaformer.preflight import (
    check_run,
    random_init_message,
    random_parts,
    weights_from_checkpoint,
)
from mask2former.checkpoint import CheckpointError, M2FCheckpointer, format_report
from mask2former.config import CfgNode, check_training_cfg
from mask2former.data.build import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    without_empty,
)
from mask2former.engine import (
    Trainer,
    default_argument_parser,
    default_setup,
    launch,
    resolve_device,
)
from mask2former.engine.checkpoint import check_weights_kept
from mask2former.engine.events import MetricSink
from mask2former.engine.lock import hold_output_dir
from mask2former.engine.processes import backend_for
from mask2former.engine.trainer import BuildTrainLoader, LoadWeights
from mask2former.evaluation import DatasetEvaluator, inference_on_dataset
from mask2former.utils import comm
from mask2former.utils.outputs import require_dir

__all__ = [
    "build_trainer",
    "evaluate",
    "load_config",
    "load_weights",
    "main",
    "metric_sinks",
    "parse_args",
    "run",
    "setup",
    "warn_random_frozen_parts",
]

logger = logging.getLogger("instaformer")


@dataclass(frozen=True)
class ModelFamily:
    """How to load data, evaluate and initialise one family of models (by meta-architecture).

    Every field is a module function of the family, in the shape the trainer takes
    (:mod:`mask2former.engine.trainer`): config first.
    """

    build_train_loader: BuildTrainLoader
    build_test_loader: Callable[[CfgNode, str], Iterable[list[dict]]]
    build_evaluators: Callable[
        [CfgNode, str, str | None], DatasetEvaluator | list[DatasetEvaluator]
    ]
    load_weights: LoadWeights


def _panoptic_train_loader(cfg: CfgNode, start_iter: int) -> Iterable[list[dict]]:
    mapper = build_dataset_mapper(cfg, is_train=True)
    names = list(cfg.DATASETS.TRAIN)
    everything = get_detection_dataset_dicts(
        names, filter_empty=False, cache=cfg.DATALOADER.RECORD_CACHE
    )
    kept, empty = without_empty(everything)
    if empty == len(everything):
        raise DataError(
            f"training set {names}: none of its {len(everything)} images has an annotated "
            "(non-crowd) segment, so every loss would be 0. Check the annotation files and "
            "DETECTRON2_DATASETS (see datasets/README.md)."
        )
    dataset = everything
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        dataset = kept
        if empty:
            logger.info(
                "Training skips %d of %d images without annotations", empty, len(everything)
            )
    elif empty:
        logger.warning(
            "%d of %d training images have no annotated segment (DATALOADER."
            "FILTER_EMPTY_ANNOTATIONS is False): they train the 'no object' class only",
            empty,
            len(everything),
        )
    return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset, start_iter=start_iter)


def _panoptic_test_loader(cfg: CfgNode, dataset_name: str) -> Iterable[list[dict]]:
    mapper = build_dataset_mapper(cfg, is_train=False)
    return build_detection_test_loader(cfg, dataset_name, mapper=mapper)


def load_weights(cfg: CfgNode, model: nn.Module, path: str) -> dict[str, list]:
    """Load ``path`` into an InstaFormer / Mask2Former ``model`` (mismatches are logged).

    Warns when a frozen part of the model receives no weight from the file, the usual mistake
    with the released configs (an ImageNet backbone instead of a Mask2Former checkpoint).
    """
    report = M2FCheckpointer(model).load_weights(
        model_zoo.fetch(path), min_share=cfg.MODEL.WEIGHTS_MIN_SHARE
    )
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
    build_train_loader=_panoptic_train_loader,
    build_test_loader=_panoptic_test_loader,
    build_evaluators=build_evaluators,
    load_weights=load_weights,
)
INSTAORDERNET = ModelFamily(
    build_train_loader=instaordernet.build_train_loader,
    build_test_loader=instaordernet.build_test_loader,
    build_evaluators=instaordernet.build_evaluators,
    load_weights=instaordernet.load_instaordernet_weights,
)
FAMILIES = {"InstaOrderNet": INSTAORDERNET}
"""``MODEL.META_ARCHITECTURE`` -> its family; every other name is an InstaFormer model."""


def model_family(cfg: CfgNode) -> ModelFamily:
    """The :class:`ModelFamily` of ``cfg.MODEL.META_ARCHITECTURE``."""
    return FAMILIES.get(cfg.MODEL.META_ARCHITECTURE, INSTAFORMER)


def evaluate(
    cfg: CfgNode, model: nn.Module, *, random_init: dict[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` on every dataset of ``DATASETS.TEST``.

    Prints the results table and writes ``OUTPUT_DIR/eval_results.json`` (main process).
    ``random_init`` (module -> weight tensors left random, allowed by ``--allow-random-init``) is
    added to the results as ``"random_init"`` and printed under the table.

    Returns:
        ``{task: {metric: value}}`` (for several test datasets, task keys are prefixed with the
        dataset name); ``{}`` on the other processes.
    """
    results: dict[str, dict[str, Any]] = {}
    names = list(cfg.DATASETS.TEST)
    family = model_family(cfg)
    for name in names:
        loader = family.build_test_loader(cfg, name)
        evaluator = family.build_evaluators(cfg, name, cfg.OUTPUT_DIR)
        logger.info("Evaluating %s", name)
        dataset_results = inference_on_dataset(model, loader, evaluator)
        if len(names) == 1:
            results = dataset_results
        else:
            results.update({f"{name}/{task}": m for task, m in dataset_results.items()})
    if random_init and results:
        results[RANDOM_INIT] = dict(random_init)
    if comm.is_main_process() and results:
        report_results(results, cfg.OUTPUT_DIR)
    return results


def _load_for_evaluation(cfg: CfgNode, model: nn.Module, allow_random: bool) -> dict[str, int]:
    """Load ``MODEL.WEIGHTS`` for ``--eval-only``; returns the parts left random (allowed only
    with ``allow_random``).

    Raises:
        CheckpointError: weights leave an evaluated part random and ``allow_random`` is False.
    """
    if not cfg.MODEL.WEIGHTS:  # refused before the start unless --allow-random-init
        parts = {"": len(model.state_dict())}
    else:
        report = model_family(cfg).load_weights(cfg, model, cfg.MODEL.WEIGHTS)
        parts = random_parts(model, report)
    if parts and not allow_random:
        raise CheckpointError(random_init_message(cfg.MODEL.WEIGHTS, parts))
    if parts:
        logger.warning(
            "--allow-random-init: evaluating with random weights in %s",
            describe_random_parts(parts),
        )
    return parts


def metric_sinks(cfg: CfgNode) -> list[MetricSink]:
    """The further outputs of the training metrics: a Weights & Biases run with
    ``WANDB.METRICS`` (project ``WANDB.PROJECT``, the config attached, its local files in
    ``OUTPUT_DIR/wandb`` rather than the current folder unless ``WANDB_DIR`` names one), else
    none.

    Raises:
        ImportError: ``WANDB.METRICS`` is True and ``wandb`` is not installed.
    """
    if not cfg.WANDB.METRICS:
        return []
    try:
        import wandb
    except ImportError as err:
        raise ImportError(
            "WANDB.METRICS is True but `wandb` is not installed: pip install wandb"
        ) from err
    local = os.environ.get("WANDB_DIR") or os.path.abspath(cfg.OUTPUT_DIR)
    return [wandb.init(project=cfg.WANDB.PROJECT, config={"yaml": cfg.dump()}, dir=local)]


def build_trainer(cfg: CfgNode, *, from_checkpoint: bool = False) -> Trainer:
    """The training loop for ``cfg``: its model and its family's data, weights and evaluation;
    the metric sinks on the main process only. ``from_checkpoint``: the run resumes from a
    checkpoint that gives every weight (:func:`instaformer.preflight.weights_from_checkpoint`),
    so the model is built for it (:func:`instaformer.modeling.checkpoint_cfg`)."""
    family = model_family(cfg)
    return Trainer(
        cfg,
        build_model(cfg, from_checkpoint=from_checkpoint),
        family.build_train_loader,
        load_weights=family.load_weights,
        evaluate=evaluate,
        metric_sinks=metric_sinks(cfg) if comm.is_main_process() else [],
    )


def load_config(args: argparse.Namespace) -> CfgNode:
    """The one parse of the run's config: ``--config-file`` with the trailing overrides, an
    unavailable CUDA ``MODEL.DEVICE`` replaced by the CPU; frozen."""
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    resolve_device(cfg)
    cfg.freeze()
    return cfg


def setup(cfg: CfgNode, args: argparse.Namespace) -> None:
    """Per-process set-up for ``cfg`` (from :func:`load_config`): custom datasets, their class
    count, then :func:`mask2former.engine.default_setup` (output folder, logs, seed)."""
    register_custom_datasets(cfg)
    if model_family(cfg) is INSTAFORMER:
        check_num_classes(cfg)
    default_setup(cfg, args)


def main(cfg: CfgNode, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Train (or with ``--eval-only`` evaluate) in this process; returns evaluation results.

    ``cfg`` is the frozen config of :func:`load_config`; ``args`` gives ``--resume``,
    ``--eval-only`` and what :func:`mask2former.engine.default_setup` logs.
    """
    setup(cfg, args)
    from_checkpoint = weights_from_checkpoint(cfg, args)
    if args.eval_only:
        model = build_model(cfg, from_checkpoint=from_checkpoint)
        allow = bool(getattr(args, "allow_random_init", False))
        parts = _load_for_evaluation(cfg, model, allow)
        return evaluate(cfg, model, random_init=parts)
    if not cfg.MODEL.WEIGHTS and not from_checkpoint:
        warn_random_frozen_parts(cfg)  # a fresh start from random weights
    return build_trainer(cfg, from_checkpoint=from_checkpoint).train(resume=args.resume)


def run(args: argparse.Namespace) -> None:
    """Parse the config (:func:`load_config`) and launch :func:`main` with it in one process per
    device as ``--num-gpus`` etc. ask.

    Checks the config, the processes and the data (:func:`instaformer.preflight.check_run`,
    every fault listed) and takes the lock of ``OUTPUT_DIR`` (machine 0) before starting any
    process, so that a bad value or a folder in use is refused before anything runs; remote
    ``MODEL.WEIGHTS`` are downloaded here, once, before the processes start.
    """
    cfg = load_config(args)
    require_dir(cfg.OUTPUT_DIR, "OUTPUT_DIR")
    if not args.eval_only:
        check_training_cfg(cfg)
        check_weights_kept(cfg.OUTPUT_DIR, cfg.MODEL.WEIGHTS)
    print(f"instaformer-train: {check_run(cfg, args)}", flush=True)
    if args.machine_rank == 0 and os.environ.get("RANK", "0") == "0":
        hold_output_dir(cfg.OUTPUT_DIR)  # the processes it starts share this lock
    if cfg.MODEL.WEIGHTS:
        model_zoo.fetch(cfg.MODEL.WEIGHTS)  # remote weights downloaded once, here
    backend = backend_for(cfg.MODEL.DEVICE)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(cfg, args),
        backend=backend,
        timeout=timedelta(seconds=cfg.DIST_TIMEOUT),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """detectron2's flags plus ``--model NAME``: a released model's config and weights.

    ``--model NAME`` becomes ``--config-file <its config>`` with ``MODEL.WEIGHTS zoo://NAME``
    before the other overrides (see :mod:`instaformer.model_zoo`).
    """
    parser = default_argument_parser(description="Train or evaluate InstaFormer / InstaOrderNet.")
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="released model by name (instaformer-zoo list): its config and weights; "
        "not with --config-file",
    )
    parser.add_argument(
        "--allow-random-init",
        action="store_true",
        help="--eval-only: evaluate even when MODEL.WEIGHTS is empty or leaves part of the "
        "model random (refused otherwise); the results then list the random parts",
    )
    args = parser.parse_args(argv)
    if args.model:
        if args.config_file:
            parser.error("--model and --config-file are mutually exclusive")
        try:
            args.config_file, weights = model_zoo.model_args(args.model)
        except KeyError as err:
            parser.error(str(err.args[0]))
        args.opts = weights + list(args.opts or [])
    return args


def cli(argv: list[str] | None = None) -> None:
    """``instaformer-train`` / ``train_net.py``: :func:`parse_args`, then :func:`run`.

    A configuration, data, checkpoint, download or output-folder error exits with status 2 and
    one line on stderr (``--debug`` or ``INSTAFORMER_DEBUG=1`` keeps the traceback).
    """
    sys.exit(run_cli(lambda a: run(parse_args(a)), argv, "instaformer-train"))
