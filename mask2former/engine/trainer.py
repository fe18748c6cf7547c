"""An explicit training loop over ``torch.distributed``: DDP, AMP, clipping, checkpoints,
periodic evaluation and metrics.

Why plain ``torch.distributed`` rather than an engine such as lightning-fabric: the command line
must behave exactly as detectron2's (``--num-gpus``, ``--num-machines``, ``--machine-rank``,
``--dist-url`` and torchrun's variables; see :mod:`mask2former.engine.processes`), and the loop
below needs only ``DistributedDataParallel``, ``torch.autocast`` and ``torch.amp.GradScaler``
from PyTorch itself. Every step of an iteration is visible in :meth:`Trainer.run_step`.

Extension: the project pieces are plain callables given at construction, never subclass hooks.
Each takes the config first, as detectron2's ``build_*(cfg, ...)`` functions do, so a project's
module functions are passed as they are::

    Trainer(
        cfg,                                   # parsed once, frozen
        model,                                 # nn.Module on MODEL.DEVICE (not DDP-wrapped)
        build_train_loader,                    # (cfg, start_iter) -> iterable of batches
        load_weights=load_weights,             # (cfg, model, path) -> anything; MODEL.WEIGHTS
        evaluate=evaluate,                     # (cfg, model) -> {task: {metric: value}}
        metric_sinks=[run],                    # objects with log(record, step=) and finish()
    ).train(resume=False)

``load_weights`` is called on a fresh start when ``MODEL.WEIGHTS`` is set (never when resuming
from ``OUTPUT_DIR/last_checkpoint``); ``evaluate`` after training and every
``TEST.EVAL_PERIOD`` iterations when ``DATASETS.TEST`` is not empty; ``metric_sinks`` (main
process only) receive the records written to ``metrics.json``, e.g. a Weights & Biases run.
A config that needs a missing piece is refused when the trainer is built.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mask2former.checkpoint import load_torch_file
from mask2former.config import CfgNode, check_training_cfg
from mask2former.engine.checkpoint import (
    check_weights_kept,
    last_checkpoint_path,
    remove_stale_temp_files,
    save_training_checkpoint,
)
from mask2former.engine.collective import CollectiveProgress, is_peer_failure
from mask2former.engine.events import MetricSink, MetricsWriter
from mask2former.engine.optimizer import build_lr_scheduler, build_optimizer, clip_gradients
from mask2former.engine.processes import local_rank
from mask2former.utils import comm
from mask2former.utils.outputs import require_dir

__all__ = ["BuildTrainLoader", "Evaluate", "LoadWeights", "Trainer"]

logger = logging.getLogger(__name__)
LOG_PERIOD = 20  # iterations between metric writes

BuildTrainLoader = Callable[[CfgNode, int], Iterable[list[dict]]]
"""``(cfg, start_iter)`` -> infinite iterable of per-process batches, resuming the data order."""
LoadWeights = Callable[[CfgNode, nn.Module, str], object]
"""``(cfg, model, path)``: load the initial weights ``path`` (``MODEL.WEIGHTS``) into ``model``."""
Evaluate = Callable[[CfgNode, nn.Module], dict[str, dict[str, Any]]]
"""``(cfg, model)`` -> ``{task: {metric: value}}`` on ``DATASETS.TEST``."""


class Trainer:
    """The training loop of ``model`` with the optimizer, schedule and data ``cfg`` asks for.

    Args:
        cfg: the run's config, parsed once (checked here with ``check_training_cfg``).
        model: the model to train, on ``MODEL.DEVICE``; wrapped in DDP here when the job has
            several processes.
        build_train_loader: see :data:`BuildTrainLoader`.
        load_weights: see :data:`LoadWeights`; needed when ``MODEL.WEIGHTS`` is set.
        evaluate: see :data:`Evaluate`; needed when ``DATASETS.TEST`` is not empty.
        metric_sinks: further outputs of the logged metrics (main process), see
            :class:`mask2former.engine.events.MetricSink`.

    Raises:
        ValueError: ``MODEL.WEIGHTS`` without ``load_weights``, or ``DATASETS.TEST`` without
            ``evaluate``.
        OutputError: an empty ``OUTPUT_DIR``, or ``MODEL.WEIGHTS`` a checkpoint of
            ``OUTPUT_DIR`` that the run would replace.
    """

    def __init__(
        self,
        cfg: CfgNode,
        model: nn.Module,
        build_train_loader: BuildTrainLoader,
        *,
        load_weights: LoadWeights | None = None,
        evaluate: Evaluate | None = None,
        metric_sinks: Sequence[MetricSink] = (),
    ) -> None:
        check_training_cfg(cfg)
        check_weights_kept(require_dir(cfg.OUTPUT_DIR, "OUTPUT_DIR"), cfg.MODEL.WEIGHTS)
        if cfg.MODEL.WEIGHTS and load_weights is None:
            raise ValueError(
                f"config key MODEL.WEIGHTS is {cfg.MODEL.WEIGHTS!r} but the Trainer was given no "
                "load_weights to load it"
            )
        if cfg.DATASETS.TEST and evaluate is None:
            raise ValueError(
                f"config key DATASETS.TEST is {tuple(cfg.DATASETS.TEST)} but the Trainer was "
                "given no evaluate to run on it"
            )
        self.cfg = cfg
        self.build_train_loader = build_train_loader
        self.load_weights = load_weights
        self.evaluate = evaluate
        self.metric_sinks = list(metric_sinks)
        self.device = torch.device(cfg.MODEL.DEVICE)
        if self.device.type == "cuda" and comm.get_world_size() > 1:
            self.device = torch.device("cuda", local_rank())
        logger.info(
            "Model %s: %.2f M parameters, %.2f M trainable",
            cfg.MODEL.META_ARCHITECTURE,
            sum(p.numel() for p in model.parameters()) / 1e6,
            sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        )
        self.model_without_ddp = model
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        if comm.get_world_size() > 1:
            # Order heads see no input in iterations where no image has two instances, so DDP
            # must look for unused parameters; its warning when an iteration has none (from
            # every process) is expected and silenced.
            warnings.filterwarnings(
                "ignore", message=r"find_unused_parameters=True was specified", category=UserWarning
            )
            model = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.model = model
        self.amp_dtype = self._amp_dtype(cfg)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype == torch.float16 and self.device.type == "cuda"
        )
        self.start_iter = 0
        self.iteration = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self._progress = CollectiveProgress()

    @staticmethod
    def _amp_dtype(cfg: CfgNode) -> torch.dtype | None:
        if not cfg.SOLVER.AMP.ENABLED:
            return None
        precision = cfg.SOLVER.AMP.PRECISION
        if precision not in ("float16", "bfloat16"):
            raise ValueError(f"SOLVER.AMP.PRECISION must be float16 or bfloat16, got {precision!r}")
        if str(cfg.MODEL.DEVICE).startswith("cpu") and precision == "float16":
            logger.info("SOLVER.AMP float16 needs CUDA; training in float32 on the CPU")
            return None
        return getattr(torch, precision)

    def resume_or_load(self, resume: bool) -> None:
        """With ``resume`` and a ``last_checkpoint``: restore the whole training state.
        Otherwise: load ``MODEL.WEIGHTS`` (if set) and start at iteration 0."""
        path = last_checkpoint_path(self.cfg.OUTPUT_DIR) if resume else None
        if path is None:
            if resume:
                logger.info("No checkpoint in %s; starting from scratch", self.cfg.OUTPUT_DIR)
            if self.cfg.MODEL.WEIGHTS:
                assert self.load_weights is not None  # refused by __init__ otherwise
                self.load_weights(self.cfg, self.model_without_ddp, self.cfg.MODEL.WEIGHTS)
            self.start_iter = 0
            return
        logger.info("Resuming from %s", path)
        state = load_torch_file(path)
        self.model_without_ddp.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        rng_states = state.get("rng_states", [])
        if len(rng_states) == comm.get_world_size():
            _set_rng_state(rng_states[comm.get_rank()])
        else:
            logger.warning(
                "The checkpoint holds random states of %d processes, this run has %d: random "
                "choices (e.g. point sampling) will differ from an uninterrupted run",
                len(rng_states),
                comm.get_world_size(),
            )
        self.start_iter = int(state["iteration"]) + 1

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs; the random states of every process are gathered."""
        return {
            "model": self.model_without_ddp.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "rng_states": comm.all_gather(_get_rng_state()),
            "cfg": self.cfg.dump(),
        }

    def sync_buffers(self) -> None:
        """Give every process the main process's buffers (e.g. BatchNorm running statistics).

        DDP broadcasts buffers at the start of each forward, so after a step each process holds
        the statistics of its own last batch. Syncing before saving and evaluating makes every
        process evaluate exactly the weights that are saved.
        """
        if comm.get_world_size() > 1:
            for buffer in self.model_without_ddp.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def save_checkpoint(self, name: str) -> None:
        self._progress.mark(self.iteration, "checkpoint")
        self.sync_buffers()
        state = self.state_dict()
        if comm.is_main_process():
            save_training_checkpoint(self.cfg.OUTPUT_DIR, name, state)
        comm.synchronize()

    def train(self, resume: bool = False) -> dict[str, dict[str, float]]:
        """Run iterations ``start_iter .. MAX_ITER - 1``; returns the last evaluation results."""
        cfg = self.cfg
        if comm.is_main_process():
            remove_stale_temp_files(cfg.OUTPUT_DIR)
        self.resume_or_load(resume)
        writer = (
            MetricsWriter(
                cfg.OUTPUT_DIR, self.max_iter, start_iter=self.start_iter, sinks=self.metric_sinks
            )
            if comm.is_main_process()
            else None
        )
        results: dict[str, dict[str, float]] = {}
        if self.start_iter >= self.max_iter:
            logger.info("Training already finished at iteration %d", self.start_iter)
        else:
            logger.info("Starting training from iteration %d", self.start_iter)
            data = iter(self.build_train_loader(cfg, self.start_iter))
            self.model.train()
            start = time.perf_counter()
            for iteration in range(self.start_iter, self.max_iter):
                self.iteration = iteration
                try:
                    self._train_iteration(data, writer)
                except RuntimeError as err:
                    if comm.get_world_size() > 1 and is_peer_failure(err):
                        raise self._progress.error(err, cfg.DIST_TIMEOUT) from err
                    raise
            elapsed = time.perf_counter() - start
            done = self.max_iter - self.start_iter
            logger.info(
                "Trained %d iterations in %.1f s (%.3f s/it)", done, elapsed, elapsed / done
            )
            self.save_checkpoint("model_final")
        if cfg.DATASETS.TEST:
            results = self._evaluate_and_log(writer)
        if writer is not None:
            writer.close()
        return results

    def _train_iteration(self, data: Iterator[list[dict]], writer: MetricsWriter | None) -> None:
        """One iteration of the loop: step, metrics, periodic checkpoint and evaluation."""
        cfg = self.cfg
        scalars = self.run_step(data)
        last = self.iteration == self.max_iter - 1
        if writer is not None:
            writer.put(self.iteration, scalars)
            if (self.iteration + 1) % LOG_PERIOD == 0 or last:
                writer.write(self.iteration, self.optimizer.param_groups[0]["lr"])
        if (self.iteration + 1) % cfg.SOLVER.CHECKPOINT_PERIOD == 0 and not last:
            self.save_checkpoint(f"model_{self.iteration:07d}")
        period = cfg.TEST.EVAL_PERIOD
        if cfg.DATASETS.TEST and period > 0 and (self.iteration + 1) % period == 0 and not last:
            self._evaluate_and_log(writer)

    def _check_parameters_finite(self, loss: float) -> None:
        """Stop when the optimizer step made a weight NaN or infinite (e.g. a far too large
        learning rate), before the next forward pass feeds such values to the matcher."""
        params = [(n, p) for n, p in self.model_without_ddp.named_parameters() if p.requires_grad]
        bad = _non_finite(params)
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise FloatingPointError(
                f"Weights became infinite or NaN in the optimizer step of iteration "
                f"{self.iteration} (learning rate {self.optimizer.param_groups[0]['lr']:.4g}, "
                f"loss {loss:.4g}): {shown}. Lower SOLVER.BASE_LR or enable "
                "SOLVER.CLIP_GRADIENTS."
            )

    def _evaluate_and_log(self, writer: MetricsWriter | None) -> dict[str, dict[str, float]]:
        assert self.evaluate is not None  # DATASETS.TEST without it is refused by __init__
        self._progress.mark(self.iteration, "evaluation")
        self.sync_buffers()
        results = self.evaluate(self.cfg, self.model_without_ddp)
        self.model.train()
        if writer is not None and results:
            flat = {f"{task}/{k}": v for task, m in results.items() for k, v in m.items()}
            finite = {k: v for k, v in flat.items() if isinstance(v, float) and math.isfinite(v)}
            writer.put(self.iteration, finite)
        return results

    def run_step(self, data: Iterator[list[dict]]) -> dict[str, float]:
        """One iteration: data, forward, loss check, backward, clipping, optimizer, schedule."""
        start = time.perf_counter()
        batch = next(data)
        data_time = time.perf_counter() - start
        self._progress.mark(self.iteration, "forward")
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        with autocast:
            loss_dict = self.model(batch)
        losses = sum(loss_dict.values())
        detached = {k: float(v.detach()) for k, v in loss_dict.items()}
        total = float(losses.detach())
        if not math.isfinite(total):
            terms = ", ".join(f"{k}={v:.4g}" for k, v in sorted(detached.items()))
            raise FloatingPointError(
                f"Loss became infinite or NaN at iteration {self.iteration}: total={total}; "
                f"terms: {terms}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self._progress.mark(self.iteration, "backward")  # DDP all-reduces the gradients
        self.scaler.scale(losses).backward()
        self.scaler.unscale_(self.optimizer)
        clip_gradients(self.cfg, self.model_without_ddp.parameters())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._check_parameters_finite(total)
        self.scheduler.step()
        reduced = comm.reduce_dict(detached)
        return {
            "total_loss": sum(reduced.values()),
            **reduced,
            "time": time.perf_counter() - start,
            "data_time": data_time,
        }


def _non_finite(params: Sequence[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the tensors holding NaN or inf. Cheap in the usual case: a per-tensor sum (NaN and
    inf propagate; one read of each tensor, no temporary copy); only when a sum is not finite
    are the extremes of each tensor looked at (a sum of huge finite values may overflow)."""
    if not params:
        return []
    sums = torch.stack([p.detach().sum(dtype=torch.float32) for _, p in params])
    if bool(torch.isfinite(sums).all()):
        return []
    bad = []
    for name, p in params:
        extremes = torch.stack([p.detach().amax(), p.detach().amin()]).float()
        if not bool(torch.isfinite(extremes).all()):
            bad.append(name)
    return bad


def _get_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
