"""CPU threads for training and inference on machines whose cores are shared.

Two settings decide whether a CPU run survives other work on the same machine:

* **How OpenMP threads wait.** PyTorch's GNU OpenMP runtime lets idle threads spin for a while
  before sleeping. When other processes occupy the cores, a spinning thread holds a core that
  the thread it waits for needs, and each parallel region can stall for a whole scheduler slice
  (measured on 2 busy cores, load 18: a small convolution took 54-130 ms instead of 0.8 ms).
  ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep. On an idle machine sleeping costs
  instead (the quick start's training steps took twice as long: 0.40 s against 0.20 s), so
  passive waiting is chosen only for a busy machine (1-minute load average at least the number
  of cores). The runtime reads the policy once, when ``torch`` is first imported, so
  :func:`prefer_passive_openmp` runs when ``mask2former`` or ``instaformer`` is imported and
  sets it if the machine is busy, ``torch`` is not imported yet and the user has not chosen a
  policy.
* **How many threads.** :func:`choose_num_threads` divides the cores this process may run on
  (``os.sched_getaffinity``: containers, ``taskset``, SLURM) among the processes of the
  machine. Only when threads spin (the policy could not be set in time) and the machine is
  already busy (1-minute load average at least the number of cores) does it fall back to one
  thread per process: with passive waiting, more threads were faster even on busy cores.

``INSTAFORMER_NUM_THREADS`` overrides the choice; an explicit ``OMP_NUM_THREADS`` is respected.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = [
    "ENV_THREADS",
    "available_cpus",
    "busy",
    "choose_num_threads",
    "configure_threads",
    "prefer_passive_openmp",
]

logger = logging.getLogger(__name__)

ENV_THREADS = "INSTAFORMER_NUM_THREADS"
"""Environment variable: CPU threads per process (a positive integer), overriding the choice."""

_passive_in_time: bool | None = None  # whether OpenMP read PASSIVE when torch was imported
LOAD_AT_IMPORT: float | None = None
"""The 1-minute load average :func:`prefer_passive_openmp` decided on (None before it ran)."""


def busy(load: float, cpus: int) -> bool:
    """Whether other work occupies the machine: a 1-minute load average of at least ``cpus``."""
    return load >= cpus


def prefer_passive_openmp() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` on a busy machine (:func:`busy`), unless the user chose a
    policy or ``torch`` is imported already.

    Returns:
        True when OpenMP threads wait passively in this process (as far as can be told: when
        ``torch`` was imported before, the current environment value is trusted).
    """
    global _passive_in_time, LOAD_AT_IMPORT
    if LOAD_AT_IMPORT is None:
        LOAD_AT_IMPORT = _load_average()
    if "torch" not in sys.modules and busy(LOAD_AT_IMPORT, available_cpus()):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if _passive_in_time is None:
        _passive_in_time = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    return _passive_in_time


def available_cpus() -> int:
    """Number of CPU cores this process may run on (its affinity mask, else ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on macOS and Windows
        return max(1, os.cpu_count() or 1)


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on Windows
        return 0.0


def choose_num_threads(
    processes: int = 1,
    *,
    cpus: int | None = None,
    load: float | None = None,
    passive: bool | None = None,
) -> tuple[int, str]:
    """Threads for each of ``processes`` CPU processes on this machine, and why.

    Args:
        processes: CPU processes of this job on this machine (``--num-gpus``).
        cpus, load, passive: the available cores, the 1-minute load average and whether
            OpenMP waits passively; measured when None (arguments for tests).

    Returns:
        ``(threads, reason)``; ``threads >= 1``.

    Raises:
        ValueError: ``INSTAFORMER_NUM_THREADS`` is not a positive integer.
    """
    override = os.environ.get(ENV_THREADS)
    if override is not None:
        if not override.strip().isdigit() or int(override) < 1:
            raise ValueError(f"{ENV_THREADS} must be a positive integer; got {override!r}")
        return int(override), f"set by {ENV_THREADS}"
    cpus = available_cpus() if cpus is None else cpus
    passive = prefer_passive_openmp() if passive is None else passive
    share = max(1, cpus // max(1, processes))
    reason = f"{cpus} core(s) available, {processes} process(es)"
    if not passive:
        load = _load_average() if load is None else load
        if busy(load, cpus) and share > 1:
            return 1, f"{reason}, busy machine (load {load:.1f}) and spinning OpenMP threads"
    return share, reason + (", OpenMP waits passively" if passive else "")


def configure_threads(processes: int = 1) -> int:
    """Apply :func:`choose_num_threads` to ``torch`` (unless ``OMP_NUM_THREADS`` is set) and log
    it. Returns the number of threads in use."""
    import torch

    if ENV_THREADS not in os.environ and "OMP_NUM_THREADS" in os.environ:
        threads = torch.get_num_threads()
        logger.info("CPU threads: %d (OMP_NUM_THREADS)", threads)
        return threads
    threads, reason = choose_num_threads(processes)
    torch.set_num_threads(threads)
    logger.info("CPU threads: %d (%s; override with %s)", threads, reason, ENV_THREADS)
    return threads
