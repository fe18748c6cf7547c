"""Training checkpoints: atomic saves, ``last_checkpoint``, and resumption.

A checkpoint is ``{"model": state_dict, "optimizer", "scheduler", "scaler", "iteration",
"cfg": yaml text}`` written by ``torch.save``; it loads with ``torch.load(weights_only=True)``.
Every file is written with :func:`mask2former.utils.atomic.atomic_write` (a temporary name in
the same folder, moved into place when complete), so a process killed mid-write leaves the
previous files intact.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import torch

from mask2former.utils.atomic import atomic_write, atomic_write_bytes
from mask2former.utils.outputs import OutputError

__all__ = [
    "check_weights_kept",
    "save_training_checkpoint",
    "last_checkpoint_path",
    "remove_stale_temp_files",
]

logger = logging.getLogger(__name__)
LAST_CHECKPOINT = "last_checkpoint"


# ``.<name>.<random>.tmp``: the temporary names ``atomic_write`` gives in the output folder.
_TEMP_NAME = re.compile(r"^\.(.+\.pth|last_checkpoint|config(_eval)?\.yaml)\.[A-Za-z0-9_]+\.tmp$")
# The checkpoints a training run writes into its output folder.
_CHECKPOINT_NAME = re.compile(r"^model_(\d{7}|final)\.pth$")


def check_weights_kept(output_dir: str, weights: str) -> None:
    """Refuse initial weights that the run's own checkpoints would replace (``MODEL.WEIGHTS
    out/model_final.pth`` with ``OUTPUT_DIR out``, directly or through a link).

    Raises:
        OutputError: naming both keys.
    """
    if not weights or not os.path.isfile(weights) or not os.path.isdir(output_dir):
        return
    path = os.path.realpath(weights)
    if _CHECKPOINT_NAME.match(os.path.basename(path)) and os.path.samefile(
        os.path.dirname(path), output_dir
    ):
        raise OutputError(
            f"MODEL.WEIGHTS {weights} is a checkpoint in OUTPUT_DIR {output_dir} that this "
            "training run would replace with its own: copy the weights elsewhere or choose "
            "another OUTPUT_DIR"
        )


def remove_stale_temp_files(output_dir: str) -> list[str]:
    """Delete the hidden temporary files a save killed mid-write left in ``output_dir``.

    Call only while holding the folder's run lock (no other process of ours writes there).

    Returns:
        the removed paths.
    """
    if not os.path.isdir(output_dir):
        return []
    removed = []
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if _TEMP_NAME.match(name) and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
            removed.append(path)
    if removed:
        logger.info(
            "Removed %d temporary file(s) left by an interrupted save: %s",
            len(removed),
            ", ".join(os.path.basename(p) for p in removed),
        )
    return removed


def save_training_checkpoint(output_dir: str, name: str, state: dict[str, Any]) -> str:
    """Save ``state`` as ``output_dir/name.pth`` and point ``last_checkpoint`` at it."""
    path = os.path.join(output_dir, f"{name}.pth")
    atomic_write(path, lambda f: torch.save(state, f))
    atomic_write_bytes(os.path.join(output_dir, LAST_CHECKPOINT), f"{name}.pth".encode())
    logger.info("Saved checkpoint %s", path)
    return path


def last_checkpoint_path(output_dir: str) -> str | None:
    """The checkpoint ``last_checkpoint`` names, or None when there is none."""
    marker = os.path.join(output_dir, LAST_CHECKPOINT)
    if not os.path.isfile(marker):
        return None
    with open(marker) as f:
        name = f.read().strip()
    path = os.path.join(output_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{marker} names {name}, which does not exist in {output_dir}")
    return path
