"""Evaluator protocol and the loop that runs a model over a data loader.

An evaluator follows detectron2's protocol: ``reset()`` before a pass over the dataset,
``process(inputs, outputs)`` once per batch (``inputs`` is the list of dataset dicts the model
received, ``outputs`` the list of per-image output dicts it returned), and ``evaluate()`` at the
end, which gathers what every process accumulated and returns, on the main process,
``{task: {metric: value}}`` (other processes return ``{}``).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from mask2former.utils import comm

logger = logging.getLogger(__name__)

Results = dict[str, dict[str, Any]]


class DatasetEvaluator:
    """Base class: accumulate per-batch statistics, then reduce them to metrics."""

    def reset(self) -> None:
        """Forget everything processed so far (called before each evaluation pass)."""

    def process(self, inputs: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]]) -> None:
        """Accumulate one batch.

        Args:
            inputs: the dataset dicts given to the model, one per image.
            outputs: the model's output dicts, aligned with ``inputs``.
        """

    def evaluate(self) -> Results:
        """Gather the accumulated statistics of all processes and compute the metrics.

        Returns:
            ``{task: {metric: value}}`` on the main process, ``{}`` on the others.
        """
        return {}


class DatasetEvaluators(DatasetEvaluator):
    """Runs several evaluators and merges their results (task keys must be distinct)."""

    def __init__(self, evaluators: Iterable[DatasetEvaluator]) -> None:
        self._evaluators = list(evaluators)

    @property
    def evaluators(self) -> list[DatasetEvaluator]:
        return list(self._evaluators)

    def __len__(self) -> int:
        return len(self._evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> Results:
        results: Results = {}
        for evaluator in self._evaluators:
            result = evaluator.evaluate() or {}
            if not comm.is_main_process():
                continue
            for task, metrics in result.items():
                if task in results:
                    raise ValueError(
                        f"two evaluators returned the task key '{task}' "
                        f"(the second is {type(evaluator).__name__}); task keys must be unique"
                    )
                results[task] = metrics
        return results


@contextmanager
def inference_context(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the duration of the block, then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _synchronize_device() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def inference_on_dataset(
    model: nn.Module,
    data_loader: Iterable[Sequence[dict[str, Any]]],
    evaluator: DatasetEvaluator | Sequence[DatasetEvaluator] | None,
) -> Results:
    """Run ``model`` on every batch of ``data_loader`` and evaluate its outputs.

    The model runs in eval mode under ``torch.no_grad()``; its previous mode is restored
    afterwards. Timing is logged: total wall time and the time per image after a warm-up of
    ``min(5, len(data_loader) - 1)`` batches (model time only, and model + evaluator time).

    Args:
        model: called as ``model(inputs)`` with a list of dataset dicts; returns one output dict
            per input.
        data_loader: iterable of batches (lists of dataset dicts); ``len()`` is used for the
            progress bar when available.
        evaluator: one evaluator, a list of them, or None (inference only).

    Returns:
        the merged ``{task: {metric: value}}`` on the main process, ``{}`` on the others.
    """
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif not isinstance(evaluator, DatasetEvaluator):
        evaluator = DatasetEvaluators(evaluator)
    evaluator.reset()

    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    num_warmup = min(5, total - 1) if total else 5
    logger.info("Start inference on %s batches", total if total is not None else "?")

    num_images = 0
    num_timed_images = 0
    compute_time = 0.0
    process_time = 0.0
    start_time = time.perf_counter()
    timed_start = start_time
    warmed_up = False
    with inference_context(model), torch.no_grad():
        # disable=None: no bar when stderr is not a terminal (its carriage returns flood logs)
        progress = tqdm(
            data_loader,
            total=total,
            desc="inference",
            disable=None if comm.is_main_process() else True,
        )
        for idx, inputs in enumerate(progress):
            if idx == num_warmup:
                warmed_up = True
                timed_start = time.perf_counter()
                num_timed_images = 0
                compute_time = 0.0
                process_time = 0.0
            t0 = time.perf_counter()
            outputs = model(inputs)
            _synchronize_device()
            t1 = time.perf_counter()
            evaluator.process(inputs, outputs)
            t2 = time.perf_counter()
            compute_time += t1 - t0
            process_time += t2 - t1
            num_images += len(inputs)
            num_timed_images += len(inputs)
        progress.close()

    total_time = time.perf_counter() - start_time
    timed_time = time.perf_counter() - timed_start
    logger.info(
        "Total inference time: %s for %d images on this process",
        datetime.timedelta(seconds=int(total_time)),
        num_images,
    )
    if warmed_up and num_timed_images > 0:
        logger.info(
            "Per image after warm-up (%d images): model %.4f s, evaluator %.4f s, total %.4f s",
            num_timed_images,
            compute_time / num_timed_images,
            process_time / num_timed_images,
            timed_time / num_timed_images,
        )

    results = evaluator.evaluate()
    return results if results is not None else {}
