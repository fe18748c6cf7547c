"""Dataset dicts held once per node: parsed once into a record file that every process maps.

Shape shorthand: N records (dataset dicts) of one dataset, C stored columns.

Parsed from JSON, every value of a dataset dict is its own Python object: InstaOrder Panoptic's
101K records take 2.1 GB in each process, and a data-loading worker that reads them writes the
reference count of every object it touches, so the pages holding them are copied into it one by
one (copy-on-read). Here the records are parsed once per node into a record file that every rank
and worker maps read-only: the page cache holds the one copy, and reading item ``i`` decodes
record ``i`` alone into fresh objects that die with the item.

* Where: beside the first annotation file, as ``<stem>.<16 hex digits>.records``; when that
  folder is not writable, in ``<cache>/records`` (``$INSTAFORMER_CACHE``, default
  ``~/.cache/instaformer``). The digits hash the key without the files' contents, so each key
  has one file.
* Key: the record-file format, the loader's name and format version, its registration
  arguments, the stored column names, the annotation files' real paths and their contents
  (sha256). The file records each annotation file's size and modification time; while they are
  unchanged the contents are not hashed again, so a warm start reads no JSON.
* Built once per node: under a file lock beside the record file, the first process parses the
  JSON and writes the file atomically; the others wait for the lock, then map the file. A stale
  file (an annotation file changed), a truncated one or a corrupt one (checksum over the whole
  file, checked at every open) is rebuilt, with a log line saying why.
* Safe to read: no pickle. The layout (little-endian)::

      zdict    bytes          zlib preset dictionary: the tail of the first records' JSON
      payload  bytes          record i = zlib(JSON of record i, zdict), offsets[i]:offsets[i + 1]
      offsets  int64[N + 1]   byte offsets of the records in the file
      columns  int64[C, N]    per-record integers (:class:`Column`) read without decoding
      footer   JSON           format, key, annotation files, N, positions, crc32 of the above
      length   uint64         size of the footer
      magic    8 bytes        ``MFRECORD``

  Records must be JSON values (what a JSON parser gives, plus the loader's strings and numbers);
  a tuple or a non-string dict key would not come back as it went in, so the first record's
  round trip is checked at build time.

A registered loader takes part by being a :class:`CachedLoader`; ``DatasetCatalog.get(name,
cache=False)`` (config ``DATALOADER.RECORD_CACHE False``) calls its parser as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import operator
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, overload

import numpy as np
from filelock import FileLock, Timeout

from mask2former.utils.atomic import atomic_write
from mask2former.utils.download import cache_dir

__all__ = [
    "CACHE_FORMAT",
    "CachedLoader",
    "Column",
    "ConcatRecords",
    "RecordCacheError",
    "RecordFile",
    "RecordSequence",
    "RecordSource",
    "RecordView",
    "concat_records",
    "load_records",
    "record_column",
    "record_file_path",
    "subset",
]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Version of the record-file layout; part of every key."""

_MAGIC = b"MFRECORD"
_TAIL = struct.Struct("<Q8s")  # footer length, magic
_ZDICT_RECORDS = 4  # records whose JSON seeds the zlib dictionary
_ZDICT_MAX = 32 * 1024  # zlib's window: a longer dictionary is not used
_LEVEL = 6
_HASH_CHUNK = 1 << 22
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


class RecordCacheError(ValueError):
    """A record file that cannot be used: truncated, corrupt, or not a record file."""


@dataclass(frozen=True)
class Column:
    """A per-record integer stored beside the records, read without decoding them (e.g. an
    image's height for aspect-ratio grouping).

    ``fn(record) -> int``. The name is part of the cache key: when ``fn`` changes meaning, give
    the column a new name or bump the loader's version.
    """

    name: str
    fn: Callable[[dict], int]


@dataclass(frozen=True)
class RecordSource:
    """One dataset's parser and what its records depend on.

    Attributes:
        loader: the parser's name and format version, e.g. ``"instaorder_panoptic/1"``; bump the
            version whenever the parser's output changes for the same files and arguments.
        files: the annotation files the parser reads (their contents are part of the key); the
            record file sits beside the first.
        args: the parser's other arguments, as JSON values (part of the key).
        parse: the parser: ``() -> list[dict]`` of JSON values, in dataset order.
        columns: integers computed once per record at build time (:func:`record_column`).
        check: called on the records read from the record file (e.g. that the first image
            exists), as the parser checks them when it runs.
    """

    loader: str
    files: tuple[str, ...]
    args: dict[str, Any]
    parse: Callable[[], list[dict]]
    columns: tuple[Column, ...] = ()
    check: Callable[[Sequence[dict]], None] | None = field(default=None, compare=False)


class RecordSequence(Sequence[dict]):
    """Dataset dicts decoded on access (each access returns new objects), with stored columns.

    Indexing with an integer gives one record, with a slice a ``list`` of records.
    """

    def _record(self, index: int) -> dict:
        raise NotImplementedError

    def stored_column(self, name: str) -> np.ndarray | None:
        """The stored column ``name`` (int64[N]), or None when it is not stored."""
        return None

    @overload
    def __getitem__(self, index: int) -> dict: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict]: ...

    def __getitem__(self, index: int | slice) -> dict | list[dict]:
        if isinstance(index, slice):
            return [self._record(i) for i in range(*index.indices(len(self)))]
        i = operator.index(index)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record index {index} out of range for {n} records")
        return self._record(i)


class RecordFile(RecordSequence):
    """The records of one record file, memory-mapped read-only (see the module docstring).

    Opening checks the layout (:class:`RecordCacheError` when it is wrong); :meth:`verify`
    checks the checksum. Pickled (for spawned workers) it is a path and a checksum: unpickling
    maps the file again and refuses one that was rebuilt in between.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _TAIL.size:
                raise RecordCacheError(f"{size} bytes, shorter than the file's tail")
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        length, magic = _TAIL.unpack(self._map[-_TAIL.size :])
        if magic != _MAGIC:
            raise RecordCacheError("no record-file tail (truncated, or not a record file)")
        body = size - _TAIL.size - length
        if body < 0:
            raise RecordCacheError(f"footer of {length} bytes in a file of {size}")
        try:
            self.footer: dict[str, Any] = json.loads(self._map[body : size - _TAIL.size])
            count, zdict_size = int(self.footer["count"]), int(self.footer["zdict_size"])
            offsets_at, names = int(self.footer["offsets_at"]), list(self.footer["columns"])
            fmt, body_size = self.footer["format"], self.footer["body_size"]
        except (ValueError, KeyError, TypeError) as e:  # JSON errors are ValueErrors
            raise RecordCacheError(f"unreadable footer ({e})") from e
        if fmt != CACHE_FORMAT:
            raise RecordCacheError(f"format {fmt}, not {CACHE_FORMAT}")
        if body_size != body or offsets_at % 8 or count < 0 or not 0 <= zdict_size <= body:
            raise RecordCacheError("footer positions do not match the file")
        if offsets_at + 8 * (count + 1) + 8 * count * len(names) != body:
            raise RecordCacheError("the arrays do not fill the file")
        self._offsets = np.frombuffer(self._map, "<i8", count + 1, offsets_at)
        starts = offsets_at + 8 * (count + 1) + 8 * count * np.arange(len(names))
        self._columns = {
            name: np.frombuffer(self._map, "<i8", count, int(at))
            for name, at in zip(names, starts, strict=True)
        }
        if self._offsets[0] != zdict_size or self._offsets[-1] > offsets_at:
            raise RecordCacheError("record offsets outside the payload")
        if count and np.any(np.diff(self._offsets) <= 0):
            raise RecordCacheError("record offsets out of order")
        self._zdict = self._map[:zdict_size]
        self._view = memoryview(self._map)

    def verify(self) -> None:
        """Raise :class:`RecordCacheError` when the crc32 of the body is not the footer's (one
        pass over the file; it also maps every page into this process, so workers forked later
        share them)."""
        crc = zlib.crc32(self._view[: self.footer["body_size"]])
        if crc != self.footer["crc32"]:
            raise RecordCacheError(f"checksum {crc:#010x}, expected {self.footer['crc32']:#010x}")

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _record(self, index: int) -> dict:
        start, end = int(self._offsets[index]), int(self._offsets[index + 1])
        inflate = zlib.decompressobj(zdict=self._zdict) if self._zdict else zlib.decompressobj()
        text = inflate.decompress(self._view[start:end])
        if not inflate.eof:
            raise RecordCacheError(f"{self.path}: record {index} is cut short")
        return json.loads(text)

    def stored_column(self, name: str) -> np.ndarray | None:
        return self._columns.get(name)

    def __reduce__(self) -> tuple[Callable[[str, int], RecordFile], tuple[str, int]]:
        return (_reopen, (self.path, self.footer["crc32"]))

    def __repr__(self) -> str:
        return f"RecordFile({self.path!r}, {len(self)} records)"


def _reopen(path: str, crc32: int) -> RecordFile:
    records = RecordFile(path)
    if records.footer["crc32"] != crc32:
        raise RecordCacheError(f"{path} was rebuilt after this process's parent opened it")
    return records


class RecordView(RecordSequence):
    """``records[indices[k]]`` for ``k`` in ``range(len(indices))``, without copying records."""

    def __init__(self, records: Sequence[dict], indices: np.ndarray) -> None:
        self._records = records
        self._indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._indices)

    def _record(self, index: int) -> dict:
        return self._records[int(self._indices[index])]

    def stored_column(self, name: str) -> np.ndarray | None:
        if not isinstance(self._records, RecordSequence):
            return None
        column = self._records.stored_column(name)
        return None if column is None else column[self._indices]


class ConcatRecords(RecordSequence):
    """The records of several datasets one after the other."""

    def __init__(self, parts: Sequence[Sequence[dict]]) -> None:
        self._parts = list(parts)
        self._ends = np.cumsum([len(p) for p in self._parts], dtype=np.int64)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def _record(self, index: int) -> dict:
        part = int(np.searchsorted(self._ends, index, side="right"))
        start = int(self._ends[part - 1]) if part else 0
        return self._parts[part][index - start]

    def stored_column(self, name: str) -> np.ndarray | None:
        columns = []
        for part in self._parts:
            column = part.stored_column(name) if isinstance(part, RecordSequence) else None
            if column is None:
                return None
            columns.append(column)
        return np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)


def record_column(records: Sequence[dict], column: Column) -> np.ndarray:
    """``column.fn(record)`` for every record, int64[N]: read from the record file when it stores
    the column, else computed record by record."""
    if isinstance(records, RecordSequence):
        stored = records.stored_column(column.name)
        if stored is not None:
            return stored
    return np.fromiter((column.fn(r) for r in records), dtype=np.int64, count=len(records))


def subset(records: Sequence[dict], indices: Iterable[int]) -> Sequence[dict]:
    """The records at ``indices``, in that order: a list for a list, else a
    :class:`RecordView` (nothing decoded)."""
    if isinstance(records, list):
        return [records[i] for i in indices]
    return RecordView(records, np.fromiter(indices, dtype=np.int64))


def concat_records(parts: Sequence[Sequence[dict]]) -> Sequence[dict]:
    """The records of ``parts`` one after the other: one list when they are all lists, the part
    itself when there is one, else a :class:`ConcatRecords`."""
    if all(isinstance(p, list) for p in parts):
        return [r for p in parts for r in p]
    if len(parts) == 1:
        return parts[0]
    return ConcatRecords(parts)


class CachedLoader:
    """A dataset loader whose records come from a record file: ``source()`` resolves the
    :class:`RecordSource` when the data is loaded (so paths under a root read at that time
    work). Calling it loads through the cache; :meth:`load` chooses."""

    def __init__(self, source: Callable[[], RecordSource]) -> None:
        self.source = source

    def __call__(self) -> Sequence[dict]:
        return self.load(cache=True)

    def load(self, *, cache: bool) -> Sequence[dict]:
        """The records from the record file (built if needed) with ``cache``, else parsed."""
        source = self.source()
        return load_records(source) if cache else source.parse()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def _identity(source: RecordSource) -> dict[str, Any]:
    """The key without the files' contents."""
    return {
        "format": CACHE_FORMAT,
        "loader": source.loader,
        "args": source.args,
        "columns": [c.name for c in source.columns],
        "files": [os.path.realpath(f) for f in source.files],
    }


def _writable(folder: str) -> bool:
    return os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)


def record_file_path(source: RecordSource) -> str:
    """Where the record file of ``source`` lives (module docstring)."""
    digest = hashlib.sha256(_canonical(_identity(source))).hexdigest()[:16]
    first = source.files[0]
    folder = os.path.dirname(first) or "."
    if not _writable(folder):
        folder = str(cache_dir() / "records")
    stem = os.path.splitext(os.path.basename(first))[0]
    return os.path.join(folder, f"{stem}.{digest}.records")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _file_entry(path: str) -> dict[str, Any]:
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}


def _stale_reason(records: RecordFile, source: RecordSource, key: str) -> str | None:
    footer, files = records.footer, records.footer.get("files")
    if (
        footer.get("key") != key
        or not isinstance(files, list)
        or len(files) != len(source.files)
        or not all(isinstance(entry, dict) for entry in files)
    ):
        return "built for other arguments"
    for path, entry in zip(source.files, files, strict=True):
        stat = os.stat(path)
        if (stat.st_size, stat.st_mtime_ns) == (entry.get("size"), entry.get("mtime_ns")):
            continue
        if _sha256(path) != entry.get("sha256"):
            return f"{path} has changed"
        logger.info("%s was touched but its content is the same as in %s", path, records.path)
    return None


def _open_valid(path: str, source: RecordSource, key: str) -> tuple[RecordFile | None, str]:
    """The record file at ``path`` when it is complete, intact and built for ``key`` (else None,
    and why)."""
    if not os.path.exists(path):
        return None, "missing"
    try:
        records = RecordFile(path)
        reason = _stale_reason(records, source, key)
        if reason is not None:
            return None, f"stale: {reason}"
        records.verify()
    except RecordCacheError as e:
        return None, f"corrupt: {e}"
    return records, "valid"


def load_records(source: RecordSource) -> Sequence[dict]:
    """The records of ``source`` from their record file, built first when it is missing, stale
    or corrupt (module docstring). Errors of the parser propagate; nothing is written then.

    Raises:
        whatever ``source.parse`` or ``source.check`` raise (a missing annotation file is
        reported by the parser, which is called when one is missing).
    """
    if not all(os.path.exists(f) for f in source.files):
        return source.parse()  # which reports the missing file in its own words
    path = record_file_path(source)
    key = hashlib.sha256(_canonical(_identity(source))).hexdigest()
    records, _ = _open_valid(path, source, key)
    if records is None:
        records = _build_once(path, source, key)
    if source.check is not None:
        source.check(records)
    return records


def _build_once(path: str, source: RecordSource, key: str) -> RecordFile:
    """Under the file lock: map the file if another process built it meanwhile, else build it."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    lock = FileLock(os.path.join(folder, f".{os.path.basename(path)}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("Waiting for %s, which another process is building", path)
        lock.acquire()
    try:
        records, state = _open_valid(path, source, key)
        if records is not None:
            return records
        if state != "missing":
            logger.warning("Record cache %s is %s; rebuilding it", path, state)
        _build(path, source, key)
        records, state = _open_valid(path, source, key)
        if records is None:
            raise RecordCacheError(f"{path} is {state} right after it was written")
        return records
    finally:
        lock.release()


def _build(path: str, source: RecordSource, key: str) -> None:
    start = time.perf_counter()
    files = [_file_entry(f) for f in source.files]  # before parsing: a later edit is seen
    records = source.parse()
    count = len(records)
    texts = [_JSON.encode(r).encode("utf-8") for r in records[:_ZDICT_RECORDS]]
    if texts and json.loads(texts[0]) != records[0]:
        raise TypeError(
            f"loader {source.loader}: its records do not survive a JSON round trip (tuples, "
            "non-string keys or other non-JSON values); they cannot be cached"
        )
    zdict = b"".join(texts)[-_ZDICT_MAX:]
    columns = np.zeros((len(source.columns), count), dtype="<i8")

    def write(f: IO[bytes]) -> None:
        crc = 0

        def put(data: bytes | memoryview) -> None:
            nonlocal crc
            f.write(data)
            crc = zlib.crc32(data, crc)

        put(zdict)
        offsets = np.zeros(count + 1, dtype="<i8")
        offsets[0] = len(zdict)
        for i in range(count):
            record = records[i]
            for c, column in enumerate(source.columns):
                columns[c, i] = column.fn(record)
            deflate = zlib.compressobj(_LEVEL, zdict=zdict) if zdict else zlib.compressobj(_LEVEL)
            data = deflate.compress(_JSON.encode(record).encode("utf-8")) + deflate.flush()
            records[i] = None  # type: ignore[call-overload]  # the parsed record is not kept
            put(data)
            offsets[i + 1] = offsets[i] + len(data)
        offsets_at = -(-int(offsets[-1]) // 8) * 8
        put(bytes(offsets_at - int(offsets[-1])))
        put(offsets.tobytes())
        put(columns.tobytes())
        footer = _canonical(
            {
                "format": CACHE_FORMAT,
                "key": key,
                "loader": source.loader,
                "files": files,
                "count": count,
                "zdict_size": len(zdict),
                "offsets_at": offsets_at,
                "columns": [c.name for c in source.columns],
                "body_size": offsets_at + 8 * (count + 1) + columns.nbytes,
                "crc32": crc,
            }
        )
        f.write(footer)
        f.write(_TAIL.pack(len(footer), _MAGIC))

    atomic_write(path, write)
    logger.info(
        "Built record cache %s: %d records, %.1f MiB, in %.1f s",
        path,
        count,
        os.path.getsize(path) / 2**20,
        time.perf_counter() - start,
    )
