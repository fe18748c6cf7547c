"""Starting one process per device, on one or several machines, with ``torch.distributed``.

Two ways in, as detectron2 users know them:

* ``--num-gpus N [--num-machines M --machine-rank R --dist-url tcp://HOST:PORT]``: this function
  spawns N local processes (``torch.multiprocessing``); global rank = R * N + local rank.
* ``torchrun`` (or ``srun`` exporting the same variables): when ``RANK``, ``WORLD_SIZE`` and
  ``LOCAL_RANK`` are set, the current process joins the group from the environment and nothing
  is spawned.

The backend is NCCL when the processes use CUDA devices and gloo otherwise (``MODEL.DEVICE cpu``).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["launch", "find_free_port", "local_rank"]

_LOCAL_RANK = 0
logger = logging.getLogger(__name__)


def find_free_port() -> int:
    """A TCP port on localhost that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_rank() -> int:
    """Rank of this process among the processes of its machine."""
    return _LOCAL_RANK


def _torchrun_env() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args: tuple = (),
    backend: str = "nccl",
    timeout: timedelta = timedelta(minutes=30),
) -> None:
    """Run ``main_func(*args)`` in every process of the job.

    Args:
        num_gpus_per_machine: processes per machine (one per device).
        num_machines, machine_rank: size of the job in machines and the index of this one.
        dist_url: ``tcp://HOST:PORT`` of machine 0, or "auto" (a free local port; one machine).
        backend: "nccl" (CUDA) or "gloo" (CPU).
    """
    if _torchrun_env():
        world_size = int(os.environ["WORLD_SIZE"])
        if world_size <= 1:
            main_func(*args)
            return
        _init_from_env(backend, timeout)
        try:
            main_func(*args)
        finally:
            dist.destroy_process_group()
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto only works on one machine; give tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    if backend == "nccl" and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(
            f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} CUDA devices "
            "are visible; use MODEL.DEVICE cpu for CPU processes"
        )
    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(
            main_func,
            world_size,
            num_gpus_per_machine,
            machine_rank,
            backend,
            dist_url,
            args,
            timeout,
        ),
        daemon=False,
        start_method="spawn",
    )


def _init_from_env(backend: str, timeout: timedelta) -> None:
    global _LOCAL_RANK
    _LOCAL_RANK = int(os.environ["LOCAL_RANK"])
    if backend == "nccl":
        torch.cuda.set_device(_LOCAL_RANK)
    dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    _barrier(backend)


def _barrier(backend: str) -> None:
    if backend == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def _distributed_worker(
    local_index: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    backend: str,
    dist_url: str,
    args: tuple,
    timeout: timedelta,
) -> None:
    global _LOCAL_RANK
    _LOCAL_RANK = local_index
    rank = machine_rank * num_gpus_per_machine + local_index
    if backend == "nccl":
        torch.cuda.set_device(local_index)
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(local_index), "WORLD_SIZE": str(world_size)}
    )
    dist.init_process_group(
        backend=backend, init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout
    )
    _barrier(backend)
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
