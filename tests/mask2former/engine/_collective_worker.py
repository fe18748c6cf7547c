"""A two-process job whose rank 1 stops answering (spawned by
``tests/mask2former/engine/test_reliability_engine.py``).

Kept apart from the test module so that the spawned processes import only torch and the engine.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from mask2former.engine.collective import CollectiveProgress, is_peer_failure


def silent_rank(result_file: str) -> None:
    """Rank 1 hangs in the forward pass of iteration 1; rank 0 writes what it was told.

    The collectives run in a group with a 1.5 s timeout; the job's own (rendezvous) timeout is
    long, so that a slow start on a busy machine does not fail the test.
    """
    group = dist.new_group(ranks=[0, 1], timeout=timedelta(seconds=1.5))
    progress = CollectiveProgress()
    for iteration in range(3):
        progress.mark(iteration, "forward")
        if dist.get_rank() == 1 and iteration == 1:
            time.sleep(3)  # longer than the 1.5 s timeout
            os._exit(0)
        progress.mark(iteration, "backward")
        try:
            dist.all_reduce(torch.ones(1), group=group)
        except RuntimeError as err:
            assert is_peer_failure(err)
            Path(result_file).write_text(progress.explain(err, 1.5))
            os._exit(0)
