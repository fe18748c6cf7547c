"""Naming the process that stopped answering when a collective operation times out.

Every process of a distributed run records its progress (the iteration and the stage of it:
``forward``, ``backward`` (the gradient all-reduce), ``checkpoint``, ``evaluation``) in the
process group's key-value store (``mark``). When a collective (the gradient all-reduce, a gather,
a barrier) fails because a peer did not answer within the group's timeout (``DIST_TIMEOUT``
seconds), or because its connection closed, :meth:`CollectiveProgress.explain` reads the other
processes' progress and returns a :class:`CollectiveTimeoutError` naming the ranks that stayed
behind and the iteration and stage each last reached. The store is separate from the collective
connections and still answers after such a failure.
"""

from __future__ import annotations

import time

import torch.distributed as dist

__all__ = ["CollectiveProgress", "CollectiveTimeoutError", "is_peer_failure"]

_KEY = "instaformer/progress/{rank}"
STAGES = ("forward", "backward", "checkpoint", "evaluation")  # in the order of an iteration
# Fragments of the messages of gloo / NCCL / c10d when a peer is silent or gone.
_PEER_FAILURE = (
    "timed out",
    "timeout",
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
    "pair closure",
)


class CollectiveTimeoutError(RuntimeError):
    """A collective operation failed because some process stopped answering (named)."""


def is_peer_failure(err: BaseException) -> bool:
    """True when ``err`` is a collective failing on a silent or vanished peer."""
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(p in text for p in _PEER_FAILURE)


class CollectiveProgress:
    """Progress of this process in the store of the default process group (no-op alone)."""

    def __init__(self) -> None:
        self._store = None
        self.rank, self.world_size = 0, 1
        self.position = (-1, 0)  # (iteration, index in STAGES) this process last marked
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            self._store = dist.distributed_c10d._get_default_store()
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def mark(self, iteration: int, stage: str) -> None:
        """Record that this process reached ``stage`` (one of :data:`STAGES`) of ``iteration``;
        call it before the stage's collectives."""
        self.position = (iteration, STAGES.index(stage))
        if self._store is not None:
            value = f"{iteration} {self.position[1]} {time.time():.3f}"
            self._store.set(_KEY.format(rank=self.rank), value)

    def _last(self, rank: int) -> tuple[int, int, float] | None:
        key = _KEY.format(rank=rank)
        if not self._store.check([key]):
            return None
        iteration, stage, stamp = self._store.get(key).decode().split()
        return int(iteration), int(stage), float(stamp)

    def explain(self, err: BaseException, timeout_s: float | None = None) -> str:
        """A message naming the ranks behind this one (its last :meth:`mark`), from the store."""
        waited = f" longer than {timeout_s:g} s (DIST_TIMEOUT)" if timeout_s else ""
        iteration, stage = self.position
        head = (
            f"rank {self.rank} waited{waited} for the other processes in a collective "
            f"operation at iteration {iteration} ({STAGES[stage]})"
        )
        if self._store is None:
            return f"{head}: {err}"
        now = time.time()
        behind = []
        try:
            for rank in range(self.world_size):
                if rank == self.rank:
                    continue
                last = self._last(rank)
                if last is None:
                    behind.append(f"rank {rank} never reached the training loop")
                elif last[:2] < self.position:
                    behind.append(
                        f"rank {rank} stopped answering (last reached iteration {last[0]} "
                        f"({STAGES[last[1]]}), {now - last[2]:.1f} s ago)"
                    )
        except RuntimeError as store_err:  # the store lives in rank 0; it may be gone
            return f"{head}; the progress of the others cannot be read ({store_err}): {err}"
        who = "; ".join(behind) if behind else "every rank reached this iteration"
        return f"{head}: {who}. Cause: {err}"

    def error(self, err: BaseException, timeout_s: float | None = None) -> CollectiveTimeoutError:
        """:meth:`explain` as an exception to raise ``from err``."""
        return CollectiveTimeoutError(self.explain(err, timeout_s))
