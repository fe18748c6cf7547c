"""Training metrics: smoothed scalars written to the console (with ETA), ``metrics.json`` and
TensorBoard, and to any further :class:`MetricSink` (e.g. a Weights & Biases run)."""

from __future__ import annotations

import datetime
import json
import logging
import os
import statistics
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from mask2former.utils.atomic import atomic_write_bytes

__all__ = ["MetricSink", "MetricsWriter"]

logger = logging.getLogger(__name__)


class MetricSink(Protocol):
    """A further output of the logged metrics; a ``wandb`` run is one as it is."""

    def log(self, data: dict[str, Any], step: int) -> None:
        """Receive one record (``iteration``, ``lr``, smoothed scalars) of iteration ``step``."""

    def finish(self) -> None:
        """The run is over (called once, by :meth:`MetricsWriter.close`)."""


class MetricsWriter:
    """Collects per-iteration scalars and writes their medians over the last ``window`` values.

    Only the main process should create one with an ``output_dir``; ``metrics.json`` gets one
    JSON object per logged iteration. A run starting at ``start_iter`` 0 starts the file afresh;
    a resumed run keeps the records of the iterations before ``start_iter`` only.
    """

    def __init__(
        self,
        output_dir: str,
        max_iter: int,
        *,
        start_iter: int = 0,
        window: int = 20,
        tensorboard: bool = True,
        sinks: Sequence[MetricSink] = (),
    ) -> None:
        self.max_iter = max_iter
        self.window = window
        self._history: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self._json_path = os.path.join(output_dir, "metrics.json")
        self._keep_records_before(start_iter)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=output_dir)
        self._sinks = list(sinks)
        self._iter_times: deque[float] = deque(maxlen=window)

    def _keep_records_before(self, start_iter: int) -> None:
        kept = []
        if start_iter > 0 and os.path.isfile(self._json_path):
            with open(self._json_path) as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:  # a line cut short by a killed run
                        continue
                    if record.get("iteration", start_iter) < start_iter:
                        kept.append(line.rstrip("\n") + "\n")
        atomic_write_bytes(self._json_path, "".join(kept).encode())

    def put(self, iteration: int, scalars: dict[str, float]) -> None:
        """Record the scalars of one iteration (``time`` in seconds is used for the ETA)."""
        for name, value in scalars.items():
            self._history[name].append(float(value))
        if "time" in scalars:
            self._iter_times.append(float(scalars["time"]))

    def smoothed(self) -> dict[str, float]:
        """Median of each scalar over the window."""
        return {k: statistics.median(v) for k, v in self._history.items() if v}

    def write(self, iteration: int, lr: float) -> dict[str, Any]:
        """Write the smoothed scalars of ``iteration`` (0-based) everywhere; returns them."""
        values = self.smoothed()
        record: dict[str, Any] = {"iteration": iteration, "lr": lr, **values}
        if self._iter_times:
            eta = statistics.median(self._iter_times) * (self.max_iter - iteration - 1)
            record["eta_seconds"] = eta
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            record["max_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        with open(self._json_path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self._tb is not None:
            for name, value in record.items():
                if name != "iteration":
                    self._tb.add_scalar(name, value, iteration)
            self._tb.flush()
        for sink in self._sinks:
            sink.log(record, step=iteration)
        self._log_console(record)
        return record

    def _log_console(self, record: dict[str, Any]) -> None:
        eta = record.get("eta_seconds")
        eta_text = f"eta: {datetime.timedelta(seconds=int(eta))}  " if eta is not None else ""
        losses = "  ".join(
            f"{k}: {v:.4g}" for k, v in record.items() if k.startswith("loss") or k == "total_loss"
        )
        timing = "  ".join(f"{k}: {record[k]:.4f}" for k in ("time", "data_time") if k in record)
        memory = f"  max_mem: {record['max_mem_mb']:.0f}M" if "max_mem_mb" in record else ""
        logger.info(
            "%siter: %d/%d  %s  %s  lr: %.3g%s",
            eta_text,
            record["iteration"] + 1,
            self.max_iter,
            losses,
            timing,
            record["lr"],
            memory,
        )

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        for sink in self._sinks:
            sink.finish()
