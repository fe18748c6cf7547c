"""Logging set-up shared by the entry points (train_net.py, demo, tools)."""

from __future__ import annotations

import logging
import os
import sys

_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
_DATE = "%m/%d %H:%M:%S"


def setup_logger(
    output_dir: str | None = None,
    *,
    rank: int = 0,
    name: str = "instaformer",
    append: bool = True,
) -> logging.Logger:
    """Configure the project loggers ("instaformer", "mask2former", and ``name``).

    Rank 0 logs INFO to stdout; other ranks log WARNING and above. With ``output_dir``, every
    rank also writes ``log.txt`` (rank 0) or ``log.txt.rank{N}`` there, appended to (``append``)
    or started afresh.
    """
    handlers: list[logging.Handler] = []
    stream = logging.StreamHandler(sys.stdout)
    stream.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    stream.setFormatter(logging.Formatter(_FORMAT, datefmt=_DATE))
    handlers.append(stream)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        filename = os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")
        file_handler = logging.FileHandler(filename, mode="a" if append else "w")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(_FORMAT, datefmt=_DATE))
        handlers.append(file_handler)
    for logger_name in dict.fromkeys(("instaformer", "mask2former", name)):
        logger = logging.getLogger(logger_name)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        for old in list(logger.handlers):
            logger.removeHandler(old)
            old.close()
        for handler in handlers:
            logger.addHandler(handler)
    return logging.getLogger(name)
