"""The one rule for the files a tool writes: nothing lost, nothing written outside the named folder.

Every tool that writes (training, the converter, the preparation script, the quick start,
``check_dataset --pictures``, the demo, export) follows it:

1. **A named folder.** An empty output folder (``OUTPUT_DIR ""``, ``--output ""``) is refused
   with the key or flag that named it (:func:`require_dir`): it used to mean the current folder.
2. **One run per folder.** :class:`OutputFolder` holds the folder's lock
   (:class:`mask2former.engine.lock.RunLock`, ``.run.lock``) while it writes: a second run into
   the folder is refused, naming the owner's pid and host.
3. **Nothing outside the folder.** A name that comes from a data file (a ``file_name``) must be
   a relative path without ``..`` (:func:`safe_relative`), else it is refused naming the record;
   a sub-folder that is a link out of the folder is refused too.
4. **No input and no foreign file replaced.** Every file written through :class:`OutputFolder`
   is recorded in the folder's :data:`RECORD_NAME` (one JSON line: name, tool, size, modification
   time, SHA-256). An existing file at an output name may be replaced only when the same tool
   recorded it and it is unchanged since (same size, and same modification time or, for a
   copied folder, same SHA-256); anything else (the user's file, a link, a file another
   tool wrote, one edited since) is refused, naming it. Inputs of the run are refused as outputs
   whatever the record says (:meth:`OutputFolder.protect`, compared by device and inode, so
   links and hard links are seen through).
5. **Atomic files, the umask's permissions** (:mod:`mask2former.utils.atomic`).

The demo keeps its own marks (a PNG text chunk, a JSON key) for its pictures, which also let it
skip its earlier outputs among its inputs; it takes the folder lock here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mask2former.utils.atomic import atomic_write_bytes, atomic_write_path

__all__ = ["RECORD_NAME", "OutputError", "OutputFolder", "require_dir", "safe_relative"]

RECORD_NAME = ".instaformer-written.jsonl"
"""File in an output folder listing what the tools wrote there (one JSON object per line)."""


class OutputError(Exception):
    """An output would be written outside its folder, over an input or over a file the tool did
    not write, or into a folder that is not named; the message names the file and the flag."""


def require_dir(path: str | os.PathLike | None, what: str) -> str:
    """``path`` as a string, refused when empty (``""`` or blanks) or an existing non-folder.

    Args:
        what: the config key or flag that gave ``path`` (``"OUTPUT_DIR"``, ``"--output"``).
    Raises:
        OutputError: naming ``what``.
    """
    text = "" if path is None else os.fspath(path)
    if not text.strip():
        raise OutputError(
            f"{what} is empty: name the output folder (an empty {what} would write into the "
            "current folder)"
        )
    if os.path.exists(text) and not os.path.isdir(text):
        raise OutputError(f"{what} {text} exists and is not a folder")
    return text


def safe_relative(name: Any, where: str) -> str:
    """``name`` (from a data file) as a normalised relative path that stays inside any folder it
    is joined to.

    Raises:
        OutputError: ``name`` is not a non-empty string, is absolute (``/x``, ``C:x``)
            or has a ``..`` part; the message starts with ``where`` (the record at fault).
    """
    if not isinstance(name, str) or not name.strip():
        raise OutputError(f"{where}: {name!r} is not a file name")
    parts = name.replace("\\", "/").split("/")  # a backslash counts as a separator here
    if name.startswith(("/", "\\")) or os.path.isabs(name) or re.match(r"[A-Za-z]:", name):
        raise OutputError(
            f"{where}: file name {name!r} is absolute; names in data files must be relative to "
            "their folder, or an output named after them would be written outside the output "
            "folder"
        )
    if ".." in parts:
        raise OutputError(
            f"{where}: file name {name!r} contains '..'; an output named after it would be "
            "written outside the output folder"
        )
    kept = [p for p in name.split("/") if p not in ("", ".")]
    if not kept:
        raise OutputError(f"{where}: {name!r} is not a file name")
    return "/".join(kept)


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class OutputFolder:
    """The output folder of one run of one tool (module docstring, rules 2-4).

    Use as a context manager: entering refuses an empty name, creates the folder, takes its lock
    and reads its record; leaving releases the lock. Then :meth:`write` (or :meth:`target`, the
    writer's own atomic write, :meth:`record`) for every file.

    Args:
        root: the folder.
        what: the flag or key that named it, for messages (``"--out-panoptic"``).
        tool: the tool's name, kept in the record; a tool replaces only files it recorded.
    """

    def __init__(self, root: str | os.PathLike, *, what: str, tool: str) -> None:
        self.root = Path(require_dir(root, what))
        self.what = what
        self.tool = tool
        self._inputs: dict[tuple[int, int], str] = {}
        self._written: dict[str, dict[str, Any]] = {}
        self._lock: Any = None

    @property
    def record_path(self) -> Path:
        return self.root / RECORD_NAME

    def __enter__(self) -> OutputFolder:
        from mask2former.engine.lock import RunLock  # the engine package imports this module

        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock(str(self.root), what=self.what)
        self._lock.acquire()
        try:
            self._written = self._read_record()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _read_record(self) -> dict[str, dict[str, Any]]:
        """The latest entry per name; a torn last line (a killed run) is skipped. Rewritten
        compactly when it holds many replaced entries."""
        entries: dict[str, dict[str, Any]] = {}
        lines = 0
        try:
            with open(self.record_path, encoding="utf-8") as f:
                for line in f:
                    lines += 1
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                        entries[entry["name"]] = entry
        except FileNotFoundError:
            return entries
        if lines > 2 * len(entries) + 64:
            text = "".join(json.dumps(e) + "\n" for e in entries.values())
            atomic_write_path(self.record_path, lambda tmp: Path(tmp).write_text(text, "utf-8"))
        return entries

    def protect(self, paths: Iterable[str | os.PathLike], label: str) -> None:
        """Refuse the existing files ``paths`` (inputs of the run, ``label`` says which: "the
        image") as outputs, whatever the record says."""
        for path in paths:
            key = _identity(path)
            if key is not None:
                self._inputs.setdefault(key, f"{label} {os.fspath(path)}")

    def keep_apart(self, folder: str | os.PathLike, label: str) -> None:
        """Refuse this output folder when it is ``folder`` (an input folder, ``label`` says which:
        "the image folder (--image-root)")."""
        if os.path.isdir(folder) and os.path.samefile(self.root, folder):
            raise OutputError(
                f"{self.what} {self.root} is {label}: outputs would be mixed with the inputs or "
                f"replace them; choose another {self.what}"
            )

    def target(self, name: str, where: str | None = None) -> Path:
        """The path of output ``name`` (relative to the folder), once it is known safe to
        create or replace.

        Args:
            where: the record ``name`` came from, when it came from a data file.
        Raises:
            OutputError: ``name`` leaves the folder, names an input, or an existing entry the
                tool did not write (or that changed since).
        """
        rel = safe_relative(name, where or f"{self.what} {self.root}")
        path = self.root / rel
        parent = os.path.realpath(path.parent)
        root = os.path.realpath(self.root)
        if os.path.commonpath([parent, root]) != root:
            raise OutputError(
                f"{path}: its folder leads outside {self.what} {self.root} (a link to "
                f"{parent}); nothing is written outside the output folder"
            )
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return path
        source = self._inputs.get((st.st_dev, st.st_ino)) or self._inputs.get(
            _identity(path) or (-1, -1)
        )
        if source is not None:
            raise OutputError(
                f"output {path} is {source}, an input of this run: choose another {self.what} "
                "(nothing was replaced)"
            )
        entry = self._written.get(rel)
        if entry is None or entry.get("tool") != self.tool:
            kind = "a symbolic link" if os.path.islink(path) else "a file"
            raise OutputError(
                f"{path} exists and is {kind} that {self.tool} did not write (it is not in "
                f"{self.record_path.name}): move or delete it, or choose another {self.what}"
            )
        unchanged = entry.get("size") == st.st_size and (
            entry.get("mtime_ns") == st.st_mtime_ns or entry.get("sha256") == _sha256(path)
        )
        if not unchanged or not os.path.isfile(path) or os.path.islink(path):
            raise OutputError(
                f"{path} was changed since {self.tool} wrote it: move or delete it, or choose "
                f"another {self.what}"
            )
        return path

    def check(self, names: Iterable[str]) -> None:
        """:meth:`target` for every name: call before writing anything, so that a refusal
        leaves the folder untouched."""
        for name in names:
            self.target(name)

    def record(self, name: str) -> None:
        """Record the file ``name`` just written (by this tool) at :meth:`target`'s path."""
        rel = safe_relative(name, f"{self.what} {self.root}")
        path = self.root / rel
        st = os.stat(path)
        entry = {
            "name": rel,
            "tool": self.tool,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": _sha256(path),
        }
        with open(self.record_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        self._written[rel] = entry

    def write(self, name: str, write: Callable[[str], None], where: str | None = None) -> Path:
        """Create or replace output ``name`` atomically with the file ``write(tmp)`` creates
        (:func:`mask2former.utils.atomic.atomic_write_path`), after :meth:`target`'s checks,
        and record it."""
        path = self.target(name, where)
        atomic_write_path(path, write)
        self.record(name)
        return path

    def write_bytes(self, name: str, data: bytes) -> Path:
        """:meth:`write` of ``data`` (synced to disk before it replaces anything)."""
        path = self.target(name)
        atomic_write_bytes(path, data)
        self.record(name)
        return path
