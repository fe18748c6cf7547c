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

__all__ = [
    "backend_for",
    "find_free_port",
    "launch",
    "local_rank",
    "process_count",
    "process_faults",
]

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


def backend_for(device: str) -> str:
    """The ``torch.distributed`` backend of processes on ``MODEL.DEVICE``: "nccl" for CUDA
    devices, "gloo" otherwise."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def process_count(num_gpus_per_machine: int, num_machines: int = 1) -> int:
    """Processes of the job: ``WORLD_SIZE`` under torchrun, else machines x processes each."""
    if _torchrun_env():
        return int(os.environ["WORLD_SIZE"])
    return num_machines * num_gpus_per_machine


def process_faults(
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    backend: str = "nccl",
) -> list[str]:
    """What stops the job of :func:`launch` from starting, one line each (empty: it can start).

    A machine rank outside ``0 .. num_machines - 1`` would wait forever for peers that never
    come; torchrun's variables must be integers with ``0 <= RANK < WORLD_SIZE``.
    """
    if _torchrun_env():
        try:
            rank, size, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        except ValueError:
            values = {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
            return [
                f"torchrun environment {values}: RANK, WORLD_SIZE and LOCAL_RANK must be integers"
            ]
        if size < 1 or not 0 <= rank < size or local < 0:
            return [
                f"torchrun environment RANK={rank} WORLD_SIZE={size} LOCAL_RANK={local}: "
                "needs WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0"
            ]
        return []
    faults = []
    if num_gpus_per_machine < 1:
        faults.append(f"--num-gpus {num_gpus_per_machine}: at least one process per machine")
    if num_machines < 1:
        faults.append(f"--num-machines {num_machines}: at least one machine")
    elif not 0 <= machine_rank < num_machines:
        faults.append(
            f"--machine-rank {machine_rank} with --num-machines {num_machines}: the rank must be "
            f"0 .. {num_machines - 1} (a rank outside would wait forever for the other machines)"
        )
    if num_machines > 1 and dist_url == "auto":
        faults.append(
            f"--num-machines {num_machines} with --dist-url auto: 'auto' only works on one "
            "machine; give --dist-url tcp://HOST:PORT of machine 0"
        )
    if backend == "nccl" and num_machines * num_gpus_per_machine > 1:
        visible = torch.cuda.device_count()
        if num_gpus_per_machine > visible:
            faults.append(
                f"--num-gpus {num_gpus_per_machine} but only {visible} CUDA device(s) are "
                "visible; use MODEL.DEVICE cpu for CPU processes"
            )
    return faults


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

    Raises:
        ValueError: the job cannot start (:func:`process_faults`, every fault on its own line).
    """
    faults = process_faults(num_gpus_per_machine, num_machines, machine_rank, dist_url, backend)
    if faults:
        raise ValueError("\n".join(faults))
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
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
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
