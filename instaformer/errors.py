"""The command lines' top-level handler: a user's mistake gives one clear line, not a traceback.

``instaformer-train`` (``train_net.py``) and ``instaformer-demo`` (``demo/demo.py``) run their
``main`` through :func:`run_cli`. The errors that name a user's input (:data:`USER_ERRORS`: a
config file or value, a dataset file or record, a checkpoint file, a download, an output folder
owned by another run, an output that would replace an input or leave its folder) are printed
as ``<program>: error: <message>`` on stderr with exit status 2 (as argparse does for a bad
flag). ``--debug`` on the command line or ``INSTAFORMER_DEBUG=1`` keeps the full traceback.
Any other exception is a bug and propagates unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from instaformer.data.io import DataError
from mask2former.checkpoint import CheckpointError
from mask2former.config import ConfigError
from mask2former.engine.lock import RunLockError
from mask2former.utils.download import DownloadError
from mask2former.utils.outputs import OutputError

__all__ = ["USER_ERRORS", "EXIT_USER_ERROR", "debug_requested", "run_cli"]

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    CheckpointError,
    RunLockError,
    OutputError,
    DownloadError,
    FileNotFoundError,
)
"""Exceptions whose message names the user's input at fault."""

EXIT_USER_ERROR = 2
DEBUG_FLAG = "--debug"
DEBUG_ENV = "INSTAFORMER_DEBUG"


def debug_requested(argv: Sequence[str]) -> bool:
    """True when ``--debug`` is among ``argv`` or ``INSTAFORMER_DEBUG`` is set to 1."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") == "1"


def run_cli(main: Callable[[list[str]], int | None], argv: list[str] | None, prog: str) -> int:
    """Run ``main(argv)`` and turn a user error into one line on stderr and status 2.

    Args:
        main: the command's entry point; returns its exit status (None = 0).
        argv: the arguments without the program name (None = ``sys.argv[1:]``).
        prog: the program name used in the message.
    Returns:
        the exit status: ``main``'s, or 2 after a user error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = main(argv)
    except USER_ERRORS as err:
        if debug_requested(argv):
            raise
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        print(f"{prog}: error: {message}", file=sys.stderr)
        print(
            f"{prog}: (add {DEBUG_FLAG} or set {DEBUG_ENV}=1 for the full traceback)",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    return 0 if status is None else int(status)
