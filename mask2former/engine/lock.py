"""One run per output folder: a lock file in ``OUTPUT_DIR`` (or the output folder of any tool,
through :class:`mask2former.utils.outputs.OutputFolder`) names the process that owns it.

``OUTPUT_DIR/.run.lock`` holds ``{"pid", "host", "start", "started"}`` of the owner (``start`` is
the kernel's start time of the process where it can be read, which tells a reused pid from the
owner). A second run into the same folder is refused while the owner lives. A lock whose owner
ran on this host and is gone (killed, crashed) is taken over, with a log line; a lock of another
host cannot be checked and is refused with the command that removes it. The lock file is written
complete under a temporary name and hard-linked into place, so it is never seen half-written;
like every file, it gets the umask's permissions (others sharing the folder can read it).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import time
from typing import Any

from mask2former.utils.atomic import create_temp_file

__all__ = ["LOCK_NAME", "RunLock", "RunLockError", "hold_output_dir"]

logger = logging.getLogger(__name__)
LOCK_NAME = ".run.lock"


class RunLockError(RuntimeError):
    """The output folder belongs to another run that is (or may be) still going."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux ``/proc``), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 (starttime), counted after "comm)"


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    if start is None:
        return True
    current = _process_start(pid)
    return current is None or current == start


class RunLock:
    """The lock of one output folder. Use as a context manager or ``acquire`` / ``release``."""

    def __init__(self, output_dir: str, what: str = "OUTPUT_DIR") -> None:
        """``what``: the config key or flag that names the folder, used in messages."""
        self.output_dir = output_dir
        self.what = what
        self.path = os.path.join(output_dir, LOCK_NAME)
        self._held = False

    def _owner_record(self) -> dict[str, Any]:
        pid = os.getpid()
        return {
            "pid": pid,
            "host": socket.gethostname(),
            "start": _process_start(pid),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }

    def read_owner(self) -> dict[str, Any] | None:
        """The owner record, None when there is no lock, ``{}`` when it cannot be parsed."""
        try:
            with open(self.path, encoding="utf-8") as f:
                owner = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def _link_new(self) -> bool:
        """Create the lock file holding our record; False if a lock file already exists."""
        tmp = create_temp_file(self.output_dir, f"{LOCK_NAME}.", ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self._owner_record(), f)
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)

    def _is_ours(self, owner: dict[str, Any]) -> bool:
        # The launcher holds the lock for the processes it spawns (their parent).
        return owner.get("host") == socket.gethostname() and owner.get("pid") in (
            os.getpid(),
            os.getppid(),
        )

    def acquire(self) -> None:
        """Take the lock of ``output_dir`` (created if missing).

        Raises:
            RunLockError: a live process owns the folder, or the owner ran on another host.
        """
        os.makedirs(self.output_dir, exist_ok=True)
        for _ in range(5):
            if self._link_new():
                self._held = True
                return
            owner = self.read_owner()
            if owner is None:  # released between our attempt and the read
                continue
            if self._is_ours(owner):
                return
            pid, host = owner.get("pid"), owner.get("host")
            if isinstance(pid, int) and host and host != socket.gethostname():
                raise RunLockError(
                    f"output folder {self.output_dir} belongs to the run of pid {pid} on host "
                    f"{host} (since {owner.get('started')}); its liveness cannot be checked "
                    f"from here. Choose another {self.what}, or if that run has ended, remove "
                    f"{self.path} and start again."
                )
            if isinstance(pid, int) and _alive(pid, owner.get("start")):
                raise RunLockError(
                    f"output folder {self.output_dir} is in use by a running process (pid {pid} "
                    f"on this host, since {owner.get('started')}; lock file {self.path}). Two "
                    "runs in one folder would mix or overwrite each other's files: choose "
                    f"another {self.what} or wait for that run to end."
                )
            logger.warning(
                "Taking over the lock of %s from pid %s (host %s), which is no longer running",
                self.output_dir,
                pid,
                host,
            )
            self._remove_stale(owner)
        raise RunLockError(f"could not take the lock {self.path}: it keeps changing owner")

    def _remove_stale(self, owner: dict[str, Any]) -> None:
        # Move the stale lock aside first: of two runs taking over at once, only one succeeds.
        aside = f"{self.path}.{os.getpid()}.stale"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if not _same_owner(aside, owner):  # a new owner's lock was moved: put it back
                os.link(aside, self.path)
        except FileExistsError:
            pass
        finally:
            os.remove(aside)

    def release(self) -> None:
        """Remove the lock file if this process took it."""
        if not self._held:
            return
        owner = self.read_owner()
        if owner and owner.get("pid") == os.getpid():
            os.remove(self.path)
        self._held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_owner(path: str, owner: dict[str, Any]) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f) == owner
    except (OSError, ValueError):
        return not owner


_HELD: dict[str, RunLock] = {}


def hold_output_dir(output_dir: str) -> None:
    """Take the lock of ``output_dir`` for the rest of this process (released at exit).

    Calling it again for the same folder, or in a process spawned by the lock's owner, is a
    no-op.

    Raises:
        RunLockError: another live run owns the folder (see :meth:`RunLock.acquire`).
    """
    key = os.path.realpath(output_dir)
    if key in _HELD:
        return
    lock = RunLock(output_dir)
    lock.acquire()
    _HELD[key] = lock
    atexit.register(lock.release)
