"""The pre-flight check of ``train_net.py``: every fault that the config, the datasets' metadata
and the files' existence can reveal, found before the first process starts.

:func:`check_run` runs in the launching process, before the output folder is locked or any
process is spawned, for training and for ``--eval-only``. It collects every fault (one line
each, naming the keys and values) and raises :class:`~mask2former.preflight.PreflightError`
with all of them, so ``train_net.py`` prints them and exits with status 2 having written
nothing. What it checks, in order:

1. processes: ``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url`` (or
   torchrun's variables), and for training ``SOLVER.IMS_PER_BATCH`` divisible by the processes;
2. names: ``MODEL.META_ARCHITECTURE``, the Mask2Former modules' and the order head's
   ``NAME`` s, ``INPUT.DATASET_MAPPER_NAME``, ``DATASETS.TRAIN`` / ``TEST`` (each with the
   registered names listed);
3. flags against each other: ``MODEL.GEOMETRIC_PREDICTOR.{NAME, TASK, OCCLUSION_ON,
   DEPTH_ON}``, ``MODEL.REMOVE_LOSSES``, and the evaluators (``TEST.OCCLUSION_EVALUATION`` /
   ``DEPTH_EVALUATION`` need the model's order outputs, ``MODEL.MASK_FORMER.TEST.*_ON`` what
   the datasets offer, at least one evaluator when ``DATASETS.TEST`` is set), then the model
   and the mappers built from the config (the model on the ``meta`` device: no memory, no
   weights), which catches every contradiction their constructors refuse;
4. weights: a local ``MODEL.WEIGHTS`` exists; ``--eval-only`` has weights that fill every
   part of the model used in evaluation (loaded into the ``meta`` model: keys and shapes
   compared, nothing copied), or ``--allow-random-init``;
5. data: every dataset loads (annotation files, duplicates; see :mod:`instaformer.data`),
   holds the kind of records the model reads, and matches ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``;
   every image and panoptic PNG exists (one ``stat`` each); no image has more non-crowd
   segments than ``MODEL.MASK_FORMER.NUM_OBJECT_QUERIES`` when an order head needs every
   annotated instance matched to a query.

Datasets read: training checks ``DATASETS.TRAIN`` and ``DATASETS.TEST`` (the final
evaluation), ``--eval-only`` only ``DATASETS.TEST``. Its cost is one load of those annotation
files plus a ``stat`` per file (docs/training.md gives measured figures).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from instaformer import model_zoo
from instaformer.config import REMOVABLE_LOSSES
from instaformer.data import DATASET_MAPPERS, build_dataset_mapper
from instaformer.data.custom import check_num_classes, register_custom_datasets
from instaformer.evaluation.results import describe_random_parts
from instaformer.instaordernet import InstaOrderNet, InstaOrderNetMapper
from instaformer.modeling import META_ARCH_ALIASES
from instaformer.modeling.registry import ORDER_HEAD_REGISTRY
from instaformer.vocabulary import TASK_CODES
from mask2former.checkpoint import CheckpointError, M2FCheckpointer, unloaded_modules
from mask2former.config import CfgNode, ConfigError
from mask2former.data.build import has_no_instance
from mask2former.engine.processes import backend_for, process_count, process_faults
from mask2former.modeling.criterion import SetCriterion
from mask2former.modeling.registry import META_ARCH_REGISTRY
from mask2former.preflight import (
    PreflightError,
    batch_faults,
    dataset_name_faults,
    ground_truth_faults,
    largest_target_count,
    load_datasets,
    mask2former_registry_faults,
    metadata_faults,
    missing_file_faults,
    registry_faults,
    result_faults,
    weights_faults,
)

__all__ = [
    "PreflightError",
    "PreflightSummary",
    "check_run",
    "config_faults",
    "random_init_message",
    "random_parts",
]

logger = logging.getLogger("instaformer")

# Keys a dataset dict must hold for each family's mapper (the first record is looked at).
_PANOPTIC_KEYS = ("pan_seg_file_name", "segments_info", "instaorder")
_INSTANCE_KEYS = ("annotations", "instaorder")
# Errors of the constructors and loaders that name a user's input (config, file, value).
_INPUT_ERRORS = (ValueError, KeyError, TypeError, OSError)


@dataclass(frozen=True)
class PreflightSummary:
    """What a passed pre-flight check looked at, for the one line it prints."""

    datasets: int
    images: int
    files: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"pre-flight check passed: {self.datasets} dataset(s), {self.images} images, "
            f"{self.files} files present ({self.seconds:.2f} s)"
        )


def _message(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def _is_instaordernet(cfg: CfgNode) -> bool:
    return cfg.MODEL.META_ARCHITECTURE == InstaOrderNet.__name__


def _process_and_batch_faults(cfg: CfgNode, args: argparse.Namespace, training: bool) -> list[str]:
    gpus, machines = getattr(args, "num_gpus", 1), getattr(args, "num_machines", 1)
    faults = process_faults(
        gpus,
        machines,
        getattr(args, "machine_rank", 0),
        getattr(args, "dist_url", "auto"),
        backend_for(cfg.MODEL.DEVICE),
    )
    if training and not faults:
        faults += batch_faults(cfg, process_count(gpus, machines))
    return faults


def _name_faults(cfg: CfgNode) -> list[str]:
    """Meta-architecture (with the released configs' aliases) and, for InstaFormer models, the
    Mask2Former modules, the order head and the dataset mapper."""
    import instaformer.instaordernet.meta_arch  # noqa: F401  (registers "InstaOrderNet")
    import mask2former.modeling  # noqa: F401  (registers the Mask2Former modules)

    name = cfg.MODEL.META_ARCHITECTURE
    if META_ARCH_ALIASES.get(name, name) not in META_ARCH_REGISTRY:
        known = sorted({n for n, _ in META_ARCH_REGISTRY} | set(META_ARCH_ALIASES))
        return [f"MODEL.META_ARCHITECTURE {name!r} is not registered; known: {', '.join(known)}"]
    if _is_instaordernet(cfg):
        return []
    faults = mask2former_registry_faults(cfg)
    head = cfg.MODEL.GEOMETRIC_PREDICTOR.NAME
    if head:
        faults += registry_faults([("MODEL.GEOMETRIC_PREDICTOR.NAME", head, ORDER_HEAD_REGISTRY)])
    mapper = cfg.INPUT.DATASET_MAPPER_NAME
    if mapper not in DATASET_MAPPERS:
        faults.append(
            f"INPUT.DATASET_MAPPER_NAME {mapper!r} is not registered; known: "
            f"{', '.join(sorted(DATASET_MAPPERS))}"
        )
    return faults


def _order_flag_faults(cfg: CfgNode, training: bool) -> list[str]:
    """The order head's task and output flags against each other (InstaFormer models)."""
    gp = cfg.MODEL.GEOMETRIC_PREDICTOR
    faults = []
    if gp.NAME and gp.TASK not in TASK_CODES:
        faults.append(
            f"MODEL.GEOMETRIC_PREDICTOR.TASK {gp.TASK!r} with NAME {gp.NAME!r}: the task must "
            f"be one of {sorted(TASK_CODES)}"
        )
    if not gp.NAME and gp.TASK:
        faults.append(
            f"MODEL.GEOMETRIC_PREDICTOR.TASK {gp.TASK!r} but NAME '' (no order head): nothing "
            "predicts orders; set NAME (e.g. GeometricTransformer) or TASK ''"
        )
    tasks = TASK_CODES.get(gp.TASK, ()) if gp.NAME else ()
    for task, flag in (("occlusion", "OCCLUSION_ON"), ("depth", "DEPTH_ON")):
        if getattr(gp, flag) and task not in tasks:
            faults.append(
                f"MODEL.GEOMETRIC_PREDICTOR.{flag} True but the order head (NAME {gp.NAME!r}, "
                f"TASK {gp.TASK!r}) predicts no {task}; set {flag} False or a TASK with {task}"
            )
    unknown = [n for n in cfg.MODEL.REMOVE_LOSSES if n not in REMOVABLE_LOSSES]
    if unknown:
        faults.append(
            f"MODEL.REMOVE_LOSSES {list(cfg.MODEL.REMOVE_LOSSES)} has unknown names {unknown}; "
            f"known: {', '.join(REMOVABLE_LOSSES)}"
        )
    elif training:
        losses = {"labels", "masks", *tasks}
        if losses <= set(cfg.MODEL.REMOVE_LOSSES):
            faults.append(
                f"MODEL.REMOVE_LOSSES {list(cfg.MODEL.REMOVE_LOSSES)} removes every loss of "
                "this model: training would change nothing"
            )
    return faults


def _evaluator_faults(cfg: CfgNode, test_names: Sequence[str]) -> list[str]:
    """What the evaluators of ``DATASETS.TEST`` need from the model's outputs (InstaFormer)."""
    if not test_names:
        return []
    gp, test = cfg.MODEL.GEOMETRIC_PREDICTOR, cfg.MODEL.MASK_FORMER.TEST
    tasks = TASK_CODES.get(gp.TASK, ()) if gp.NAME else ()
    faults = []
    for evaluation, flag, task in (
        ("OCCLUSION_EVALUATION", "OCCLUSION_ON", "occlusion"),
        ("DEPTH_EVALUATION", "DEPTH_ON", "depth"),
    ):
        if cfg.TEST[evaluation] and not (getattr(gp, flag) and task in tasks):
            faults.append(
                f"TEST.{evaluation} True but the model returns no {task} order to evaluate "
                f"(MODEL.GEOMETRIC_PREDICTOR.NAME {gp.NAME!r}, TASK {gp.TASK!r}, {flag} "
                f"{getattr(gp, flag)}); set TEST.{evaluation} False, or a TASK with {task} and "
                f"{flag} True"
            )
    evaluations = (
        test.PANOPTIC_ON,
        test.INSTANCE_ON,
        test.SEMANTIC_ON,
        cfg.TEST.OCCLUSION_EVALUATION,
        cfg.TEST.DEPTH_EVALUATION,
    )
    if not any(evaluations):
        faults.append(
            f"DATASETS.TEST {tuple(test_names)} but no evaluator is enabled: set one of "
            "MODEL.MASK_FORMER.TEST.{PANOPTIC,INSTANCE,SEMANTIC}_ON, TEST.OCCLUSION_EVALUATION, "
            "TEST.DEPTH_EVALUATION (or DATASETS.TEST ())"
        )
    return faults + result_faults(cfg, test_names)


def _build_faults(cfg: CfgNode, debug: bool) -> tuple[nn.Module | None, list[str]]:
    """Build the model (on the ``meta`` device: shapes only) and the mappers from ``cfg``: any
    refusal of their constructors becomes a fault. ``debug`` lets the error propagate.
    Returns ``(the meta model or None, faults)``."""
    name = cfg.MODEL.META_ARCHITECTURE
    try:
        with torch.device("meta"):
            model = META_ARCH_REGISTRY.get(META_ARCH_ALIASES.get(name, name))(cfg)
    except _INPUT_ERRORS as err:
        if debug:
            raise
        return None, [f"the model cannot be built from this config: {_message(err)}"]
    for is_train in (True, False):
        try:
            if _is_instaordernet(cfg):
                InstaOrderNetMapper(**InstaOrderNetMapper.from_config(cfg, is_train=is_train))
            else:
                build_dataset_mapper(cfg, is_train=is_train)
        except _INPUT_ERRORS as err:
            if debug:
                raise
            message = f"the dataset mapper cannot be built from this config: {_message(err)}"
            return model, [message]
    return model, []


def random_parts(model: nn.Module, report: object) -> dict[str, int]:
    """The parts of ``model`` used in evaluation that a weights load left random: module ->
    number of state-dict tensors (:func:`mask2former.checkpoint.unloaded_modules`; ``""``: the
    whole model). ``report`` is a weight loader's result (``missing_keys``,
    ``incorrect_shapes``; None or another object: a strict load, nothing random). The losses'
    buffers are not used in evaluation and do not count."""
    if not isinstance(report, dict):
        return {}
    losses = tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, SetCriterion))
    keys = [k for k in model.state_dict() if not k.startswith(losses)]
    shapes = [key for key, *_ in report.get("incorrect_shapes", [])]
    return dict(unloaded_modules(keys, [*report.get("missing_keys", []), *shapes]))


def random_init_message(weights: str, parts: dict[str, int]) -> str:
    """The refusal of ``--eval-only`` weights that leave ``parts`` (:func:`random_parts`)
    random."""
    return (
        f"--eval-only: MODEL.WEIGHTS {weights!r} leaves {sum(parts.values())} weight tensors "
        f"of the evaluated model random, in {describe_random_parts(parts)}; the metrics would be "
        "those of random layers. Use a checkpoint of this model and config (the same "
        "MODEL.GEOMETRIC_PREDICTOR.TASK), or --allow-random-init to evaluate it anyway"
    )


def _coverage_faults(cfg: CfgNode, model: nn.Module) -> list[str]:
    """``--eval-only``: load ``MODEL.WEIGHTS`` into the ``meta`` model (keys and shapes are
    compared, no value is copied) and refuse parts it leaves random."""
    checkpoint_log = logging.getLogger("fvcore.common.checkpoint")  # lists every missing key
    level = checkpoint_log.level
    checkpoint_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # torch warns for every value not copied to meta
            warnings.filterwarnings("ignore", ".*copying from a non-meta parameter", UserWarning)
            report = M2FCheckpointer(model).load_weights(
                model_zoo.fetch(cfg.MODEL.WEIGHTS), min_share=cfg.MODEL.WEIGHTS_MIN_SHARE
            )
    except CheckpointError as err:
        return [str(err)]
    finally:
        checkpoint_log.setLevel(level)
    parts = random_parts(model, report)
    return [random_init_message(cfg.MODEL.WEIGHTS, parts)] if parts else []


def _record_faults(cfg: CfgNode, name: str, records: list[dict]) -> list[str]:
    """The first record holds what the family's mapper reads."""
    family_keys = _INSTANCE_KEYS if _is_instaordernet(cfg) else _PANOPTIC_KEYS
    absent = [k for k in family_keys if k not in records[0]]
    if not absent:
        return []
    return [
        f"dataset {name!r} has no {', '.join(absent)} in its records, which "
        f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} reads: InstaFormer models "
        "take InstaOrder Panoptic datasets (*_panoptic, synthetic_instaorder_{train,val}), "
        "InstaOrderNet takes InstaOrder ones (instaorder_2017_*, *_instances)"
    ]


def _query_faults(cfg: CfgNode, name: str, records: list[dict]) -> list[str]:
    """Every non-crowd segment is matched to a query; an order head needs every annotated one."""
    queries = cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES
    most, record = largest_target_count(records)
    if most <= queries or record is None:
        return []
    where = f"image_id {record.get('image_id')!r} ({record.get('file_name')})"
    if not cfg.MODEL.GEOMETRIC_PREDICTOR.NAME:
        logger.warning(
            "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES %d is below the %d non-crowd segments of %s "
            "in dataset %r: the model cannot predict all of them",
            queries,
            most,
            where,
            name,
        )
        return []
    return [
        f"MODEL.MASK_FORMER.NUM_OBJECT_QUERIES {queries} is below the {most} non-crowd segments "
        f"of {where} in dataset {name!r}: segments would be left without a query and the order "
        f"head stops at the first annotated one; set NUM_OBJECT_QUERIES to at least {most}"
    ]


def _data_faults(
    cfg: CfgNode, train: Sequence[str], test: Sequence[str]
) -> tuple[list[str], int, int, int]:
    """Load ``train`` and ``test``; check their records, classes, files and instance counts.
    Returns ``(faults, datasets loaded, images, files checked)``."""
    records, faults = load_datasets([*train, *test])
    if not _is_instaordernet(cfg):
        try:
            check_num_classes(cfg)
        except ConfigError as err:
            faults.append(_message(err))
        except (ValueError, OSError):
            pass  # a category list read from a missing or bad file: load_datasets names it
    images = files = 0
    for name, dicts in records.items():
        kind = _record_faults(cfg, name, dicts)
        faults += kind
        missing, checked = missing_file_faults(name, dicts)
        faults += missing
        images, files = images + len(dicts), files + checked
        if kind or _is_instaordernet(cfg):
            continue
        faults += _query_faults(cfg, name, dicts)
    if not _is_instaordernet(cfg):
        faults += ground_truth_faults(cfg, [n for n in test if n in records])
    training = [records[n] for n in train if n in records]
    if training and all(has_no_instance(d) for part in training for d in part):
        faults.append(
            f"DATASETS.TRAIN {tuple(train)}: no image has an annotated (non-crowd) segment, so "
            "every loss would be 0"
        )
    return faults, len(records), images, files


def config_faults(cfg: CfgNode, args: argparse.Namespace) -> list[str]:
    """The faults :func:`check_run` finds without reading any dataset (steps 1-4 of the module
    docstring); ``args`` as for :func:`check_run`."""
    eval_only = bool(getattr(args, "eval_only", False))
    training = not eval_only
    faults = _process_and_batch_faults(cfg, args, training)
    names = _name_faults(cfg)
    faults += names
    train = list(cfg.DATASETS.TRAIN) if training else []
    test = list(cfg.DATASETS.TEST)
    try:
        register_custom_datasets(cfg)
    except ConfigError as err:
        faults.append(_message(err))
    faults += dataset_name_faults(
        "DATASETS.TRAIN", train, required="training needs a dataset" if training else ""
    )
    faults += dataset_name_faults(
        "DATASETS.TEST",
        test,
        required="--eval-only needs a dataset to evaluate" if eval_only else "",
    )
    model_faults = []
    if not _is_instaordernet(cfg):
        model_faults += _order_flag_faults(cfg, training)
        model_faults += _evaluator_faults(cfg, test)
    faults += model_faults
    model = None
    # a dataset whose category list cannot be read is named by the data step (its loader)
    if not names and not model_faults and not metadata_faults([*train, *test]):
        model, built = _build_faults(cfg, bool(getattr(args, "debug", False)))
        faults += built
    weights = weights_faults(cfg)
    faults += weights
    allow_random = bool(getattr(args, "allow_random_init", False))
    if eval_only and not allow_random:
        if not cfg.MODEL.WEIGHTS:
            faults.append(
                "--eval-only with MODEL.WEIGHTS '': every weight of the model would be random; "
                "give MODEL.WEIGHTS, or --allow-random-init to evaluate a random model on purpose"
            )
        elif model is not None and not weights and not faults and not _is_instaordernet(cfg):
            faults += _coverage_faults(cfg, model)  # InstaOrderNet's loader is strict itself
    return faults


def check_run(cfg: CfgNode, args: argparse.Namespace) -> PreflightSummary:
    """Check the run of ``cfg`` with the command line ``args`` before anything starts.

    Args:
        cfg: the run's frozen config (:func:`instaformer.train.load_config`).
        args: the parsed command line: ``eval_only``, ``allow_random_init``, ``num_gpus``,
            ``num_machines``, ``machine_rank``, ``dist_url``, ``debug`` (missing: defaults).
    Returns:
        what was checked (datasets, images, files, seconds).
    Raises:
        PreflightError: every fault found, one line each (module docstring).
    """
    start = time.perf_counter()
    faults = config_faults(cfg, args)
    train = [] if getattr(args, "eval_only", False) else list(cfg.DATASETS.TRAIN)
    data, datasets, images, files = _data_faults(cfg, train, list(cfg.DATASETS.TEST))
    faults += data
    if faults:
        raise PreflightError(faults)
    return PreflightSummary(datasets, images, files, time.perf_counter() - start)
