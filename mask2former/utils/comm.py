"""Helpers for ``torch.distributed``: rank/world-size queries and object gathering.

Every function works in a single process without an initialised process group, so evaluators
and samplers can call them unconditionally.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def is_dist_initialized() -> bool:
    """True when a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group (1 without distributed)."""
    return dist.get_world_size() if is_dist_initialized() else 1


def get_rank() -> int:
    """Global rank of this process (0 without distributed)."""
    return dist.get_rank() if is_dist_initialized() else 0


def is_main_process() -> bool:
    """True on global rank 0."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op in a single process."""
    if get_world_size() > 1:
        dist.barrier()


def all_gather(data: Any) -> list[Any]:
    """Gather a picklable object from every rank.

    Returns:
        list with one entry per rank, in rank order (``[data]`` in a single process).
    """
    world_size = get_world_size()
    if world_size == 1:
        return [data]
    output: list[Any] = [None] * world_size
    dist.all_gather_object(output, data)
    return output


def gather(data: Any, dst: int = 0) -> list[Any]:
    """Gather a picklable object from every rank on rank ``dst``.

    Returns:
        on ``dst``: list with one entry per rank; on the other ranks: an empty list.
    """
    world_size = get_world_size()
    if world_size == 1:
        return [data]
    output: list[Any] | None = [None] * world_size if get_rank() == dst else None
    dist.gather_object(data, output, dst=dst)
    return output if output is not None else []


def gather_lists(*lists: list[Any], dst: int = 0) -> tuple[list[Any], ...] | None:
    """Concatenate each of ``lists`` over the ranks, in rank order, on rank ``dst``.

    What an evaluator accumulated per process becomes the whole dataset's records on ``dst``
    (the lists themselves in a single process).

    Returns:
        on ``dst``: one concatenated list per argument; on the other ranks: ``None``.
    """
    parts = gather(lists, dst=dst)
    if get_rank() != dst:
        return None
    return tuple([item for part in parts for item in part[k]] for k in range(len(lists)))


def reduce_dict(values: dict[str, float], average: bool = True) -> dict[str, float]:
    """All-reduce a dict of scalars (sum, or mean with ``average``) over ranks."""
    world_size = get_world_size()
    if world_size == 1:
        return dict(values)
    gathered = all_gather(values)
    keys = sorted(values)
    out = {k: sum(g[k] for g in gathered) for k in keys}
    if average:
        out = {k: v / world_size for k, v in out.items()}
    return out
