"""The memory a process holds, from Linux's ``/proc/PID/smaps_rollup``.

* ``rss``: resident pages mapped by the process;
* ``pss``: each resident page divided by the number of processes mapping it (summed over
  processes, every page counts once);
* ``uss``: pages mapped by this process alone (``Private_Clean + Private_Dirty``): what ending
  it would free;
* ``anonymous``: resident pages not backed by a file (the heap: Python objects).
"""

from __future__ import annotations

__all__ = ["process_memory"]

_FIELDS = {"Rss": "rss", "Pss": "pss", "Anonymous": "anonymous"}


def process_memory(pid: int | str = "self") -> dict[str, int] | None:
    """Bytes of ``rss``, ``pss``, ``uss`` and ``anonymous`` of process ``pid`` (module
    docstring), or None where ``/proc/PID/smaps_rollup`` cannot be read (not Linux, a kernel
    older than 4.14, another user's process, a process that has ended)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    kib: dict[str, int] = {}
    for line in lines[1:]:  # the first line names the address range
        key, _, value = line.partition(":")
        kib[key] = int(value.split()[0])
    out = {name: kib[key] * 1024 for key, name in _FIELDS.items()}
    out["uss"] = (kib["Private_Clean"] + kib["Private_Dirty"]) * 1024
    return out
