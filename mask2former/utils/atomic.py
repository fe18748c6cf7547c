"""Atomic file writes: a file is written under a temporary name in its own folder and renamed
over the destination only once complete, so a reader (or a process killed mid-write) never sees
a partial file. A symbolic link at the destination is replaced, its target left untouched.

The temporary name is ``.<name>.<random>.tmp`` (hidden, in the destination folder); for
:func:`atomic_write_path`, whose writers choose the format by the file name, the destination's
extension follows (``.<name>.<random>.tmp.png``). The temporary file is created with mode
``0o666`` less the process's umask, as ``open`` creates files, so a replaced file gets the
permissions any new file of the process gets (not ``tempfile.mkstemp``'s ``0o600``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import IO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_path", "create_temp_file"]


def create_temp_file(folder: str | os.PathLike, prefix: str, suffix: str) -> str:
    """Create a new empty file ``<folder>/<prefix><random><suffix>`` (never an existing one) and
    return its path. Its mode is ``0o666`` less the umask, as for ``open(path, "w")``.
    """
    for _ in range(100):
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {folder}")


def _replace_with(path: str | os.PathLike, suffix: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` creates the file ``tmp`` beside ``path``, which then replaces ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = create_temp_file(folder, f".{os.path.basename(path)}.", suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[bytes]], object], *, fsync: bool = True
) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes to a binary file (what
    ``write`` returns is ignored).

    The folder is created if missing. On any error (including ``KeyboardInterrupt``) the
    temporary file is removed and ``path`` is left as it was. ``fsync=False`` skips flushing
    the data to disk before the rename: readers still never see a partial file, but after a
    power loss the file may be empty; for bulk per-image outputs that a rerun regenerates
    (an fsync costs milliseconds per file).
    """

    def to_file(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())

    _replace_with(path, ".tmp", to_file)


def atomic_write_path(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Create or replace ``path`` with the file that ``write(tmp)`` creates at the temporary path
    ``tmp`` (same folder and extension as ``path``), for writers that need a file name
    (``cv2.imwrite``, ``shutil.copyfile``). Errors as :func:`atomic_write`."""
    _replace_with(path, ".tmp" + os.path.splitext(os.fspath(path))[1], write)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Create or replace ``path`` with ``data`` (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data), fsync=fsync)
