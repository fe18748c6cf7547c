"""InstaOrder order labels -> ground-truth matrices, re-indexed to the annotated segments.

Shape shorthand: m instances of an InstaOrder record, n annotated panoptic segments.

Matrix conventions (row i, column j), all int32:
    occlusion ``O[i, j]``: 1 = i occludes (hides part of) j, 0 = not, -1 = ignored; diagonal 0.
    depth ``D[i, j]``: 1 = i closer than j, 0 = i farther, 2 = same depth, -1 = no label/diagonal.
    overlap ``V[i, j]``: 1 = depth extents overlap, 0 = distinct, -1 = no label/diagonal/removed.
    count ``C[i, j]``: the pair's annotation count (WHDR weight 2 / count), -1 = no label/diagonal.
Unlabelled depth pairs are -1 in D, V and C (InstaOrder's convention), never a "farther" label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from instaformer.data.io import DataError

__all__ = ["check_record_types", "parse_order", "build_order_matrices", "reindex_matrices"]

_ORDER = re.compile(r"^\s*(\d+)\s*([<=])\s*(\d+)\s*$")


def parse_order(order: str, num_instances: int, *, where: str = "") -> tuple[int, str, int, bool]:
    """Parse ``"i<j"``, ``"i=j"`` or the bidirectional ``"i<j & j<i"``.

    Returns:
        ``(i, op, j, bidirectional)`` with ``op`` "<" or "=".
    Raises:
        DataError: malformed string, self pair, or an index outside ``[0, num_instances)``.
    """
    parts = order.split("&") if isinstance(order, str) else [None]
    match = _ORDER.match(parts[0]) if parts[0] is not None else None
    if match is None or len(parts) > 2:
        raise DataError(f"{where}: malformed order string {order!r}")
    i, op, j = int(match.group(1)), match.group(2), int(match.group(3))
    bidirectional = len(parts) == 2
    if bidirectional:
        back = _ORDER.match(parts[1])
        if back is None or (int(back.group(1)), int(back.group(3))) != (j, i) or op != "<":
            raise DataError(f"{where}: malformed bidirectional order string {order!r}")
    if i == j:
        raise DataError(f"{where}: order string {order!r} relates instance {i} to itself")
    for k in (i, j):
        if not 0 <= k < num_instances:
            raise DataError(
                f"{where}: order string {order!r} refers to instance {k}, but the record has "
                f"{num_instances} instance_ids"
            )
    return i, op, j, bidirectional


def check_record_types(record: Any, where: str) -> None:
    """Refuse an InstaOrder record whose fields have the wrong JSON types.

    The types are those of docs/reference.md [DS 2].

    Raises:
        DataError: naming ``where`` (file and record) and the field: the record is not an
            object, ``instance_ids`` is not a list of integers, ``occlusion`` / ``depth`` are not
            lists of objects with a string ``order``.
    """
    if not isinstance(record, dict):
        raise DataError(
            f"{where}: InstaOrder record must be an object, got {type(record).__name__}"
        )
    for key in ("instance_ids", "occlusion", "depth"):
        if key not in record:
            raise DataError(f"{where}: InstaOrder record has no '{key}'")
        if not isinstance(record[key], list):
            raise DataError(
                f"{where}: '{key}' must be a list, got {type(record[key]).__name__} "
                f"{_short(record[key])}"
            )
    ids = record["instance_ids"]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise DataError(f"{where}: 'instance_ids' must hold integers, got {_short(ids)}")
    for key in ("occlusion", "depth"):
        for entry in record[key]:
            if not isinstance(entry, dict) or not isinstance(entry.get("order"), str):
                raise DataError(
                    f"{where}: each '{key}' entry must be an object with a string 'order', got "
                    f"{_short(entry)}"
                )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def build_order_matrices(
    record: dict[str, Any], *, rm_bidirec: bool = False, rm_overlap: bool = False, where: str = ""
) -> dict[str, np.ndarray]:
    """The four matrices of one InstaOrder record, at InstaOrder size m (positions in
    ``instance_ids``).

    Args:
        record: ``{"instance_ids": [m], "occlusion": [...], "depth": [...]}``.
        rm_bidirec: mark bidirectional occlusion pairs -1 (ignored) in both directions. A pair
            is bidirectional when written ``"i<j & j<i"`` or as two entries ``"i<j"`` and
            ``"j<i"`` (in any order): both give the same matrix.
        rm_overlap: mark depth pairs with overlapping extents -1 in the overlap matrix (removes
            them from every WHDR subset; the depth label is kept).
        where: file/record description used in error messages.
    Returns:
        ``{"occlusion": int32[m, m], "depth": ..., "overlap": ..., "count": ...}``.
    Raises:
        DataError: a malformed entry or field type; a depth pair labelled twice with
            contradicting labels.
    """
    check_record_types(record, where)
    m = len(record["instance_ids"])
    occ = np.zeros((m, m), dtype=np.int32)
    depth = np.full((m, m), -1, dtype=np.int32)
    overlap = np.full((m, m), -1, dtype=np.int32)
    count = np.full((m, m), -1, dtype=np.int32)
    # Directed "i occludes j" facts first: "i<j & j<i" and the two entries "i<j", "j<i" say the
    # same, in any order, so both are bidirectional.
    occludes: set[tuple[int, int]] = set()
    for entry in record["occlusion"]:
        i, op, j, bidirectional = parse_order(entry.get("order"), m, where=where)
        if op != "<":
            raise DataError(f"{where}: occlusion order {entry['order']!r} must use '<'")
        occludes.add((i, j))
        if bidirectional:
            occludes.add((j, i))
    for i, j in occludes:
        mutual = (j, i) in occludes
        occ[i, j] = -1 if (mutual and rm_bidirec) else 1
    seen: dict[tuple[int, int], str] = {}
    for entry in record["depth"]:
        i, op, j, bidirectional = parse_order(entry.get("order"), m, where=where)
        if bidirectional:
            raise DataError(f"{where}: depth order {entry['order']!r} cannot be bidirectional")
        try:
            n_votes = int(entry["count"])
            is_overlap = bool(entry["overlap"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"{where}: depth entry {entry!r} needs integer 'count' and 'overlap'"
            ) from e
        if n_votes <= 0:
            raise DataError(f"{where}: depth entry {entry!r} has a non-positive count")
        pair = (min(i, j), max(i, j))
        label = f"{i}{op}{j}" if op == "<" or i < j else f"{j}{op}{i}"
        if pair in seen and seen[pair] != label:
            raise DataError(
                f"{where}: depth pair {pair} is labelled twice with different orders "
                f"({seen[pair]!r} and {label!r})"
            )
        seen[pair] = label
        if op == "<":
            depth[i, j], depth[j, i] = 1, 0
        else:
            depth[i, j] = depth[j, i] = 2
        overlap[i, j] = overlap[j, i] = -1 if (is_overlap and rm_overlap) else int(is_overlap)
        count[i, j] = count[j, i] = n_votes
    np.fill_diagonal(occ, 0)
    return {"occlusion": occ, "depth": depth, "overlap": overlap, "count": count}


def reindex_matrices(matrices: dict[str, np.ndarray], rows: Sequence[int]) -> dict[str, np.ndarray]:
    """Keep and reorder rows and columns: ``M'[k, l] = M[rows[k], rows[l]]``.

    Args:
        matrices: int32[m, m] each.
        rows: n positions into the m instances (no repeats).
    Returns:
        the same keys, int32[n, n] each.
    """
    index = np.asarray(rows, dtype=np.int64)
    return {k: np.ascontiguousarray(v[np.ix_(index, index)]) for k, v in matrices.items()}
