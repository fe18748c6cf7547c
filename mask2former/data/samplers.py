"""Index samplers: an infinite, seeded, resumable, distributed training sampler; an inference
sampler that shards a dataset over ranks; and a batch sampler that groups by aspect ratio.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from mask2former.utils import comm

__all__ = ["TrainingSampler", "InferenceSampler", "AspectRatioGroupedBatchSampler"]

_EPOCH_SEED_STRIDE = 1_000_003


class TrainingSampler(Sampler[int]):
    """Infinite stream of dataset indices for one rank.

    The global stream is a concatenation of epochs; epoch ``e`` is a permutation of
    ``range(size)`` drawn from a generator seeded with ``(seed, e)`` (or ``range(size)`` without
    shuffling). Rank ``r`` of ``W`` takes global positions ``r, r + W, r + 2W, ...``, so the ranks
    together see every index once per epoch. ``start`` skips the first ``start`` indices of this
    rank's stream in O(1): a run resumed with ``start = iteration * batch_size_per_rank`` sees the
    same data order as the uninterrupted run.
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        start: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size {size}")
        if start < 0:
            raise ValueError(f"TrainingSampler start must be >= 0, got {start}")
        self._size = size
        self._shuffle = shuffle
        self._seed = int(seed)
        self._start = start
        self._rank = comm.get_rank() if rank is None else rank
        self._world_size = comm.get_world_size() if world_size is None else world_size
        if not 0 <= self._rank < self._world_size:
            raise ValueError(f"rank {self._rank} outside world size {self._world_size}")

    def _epoch(self, epoch: int) -> list[int]:
        if not self._shuffle:
            return list(range(self._size))
        generator = torch.Generator()
        generator.manual_seed((self._seed * _EPOCH_SEED_STRIDE + epoch) % (2**63))
        return torch.randperm(self._size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        position = self._start * self._world_size + self._rank
        epoch, offset = divmod(position, self._size)
        order = self._epoch(epoch)
        while True:
            yield order[offset]
            offset += self._world_size
            while offset >= self._size:
                offset -= self._size
                epoch += 1
                order = self._epoch(epoch)


class InferenceSampler(Sampler[int]):
    """Each index of ``range(size)`` exactly once over all ranks; rank ``r`` gets a contiguous
    block, block sizes differ by at most one, and the blocks are in rank order."""

    def __init__(self, size: int, *, rank: int | None = None, world_size: int | None = None):
        rank = comm.get_rank() if rank is None else rank
        world_size = comm.get_world_size() if world_size is None else world_size
        per_rank, extra = divmod(size, world_size)
        begin = rank * per_rank + min(rank, extra)
        end = begin + per_rank + (1 if rank < extra else 0)
        self._indices = range(begin, end)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)


class AspectRatioGroupedBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` indices whose images share an orientation.

    Indices are drawn from ``sampler`` in order and put into bucket ``group_ids[index]`` (0 for
    landscape, 1 for portrait, or any small int); a bucket is emitted as a batch once full. The
    batches are a deterministic function of the sampler's stream.
    """

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self._sampler = sampler
        self._group_ids = np.asarray(group_ids, dtype=np.int8)  # 1 byte per image, not 8
        self._batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        buckets: dict[int, list[int]] = {}
        for index in self._sampler:
            bucket = buckets.setdefault(int(self._group_ids[index]), [])
            bucket.append(index)
            if len(bucket) == self._batch_size:
                yield bucket[:]
                bucket.clear()
