"""A process's descendants from the kernel's children lists (/proc/PID/task/TID/children, present when
the kernel has CONFIG_PROC_CHILDREN): a few small reads for a small tree, where psutil's
`children(recursive=True)` reads the stat file of every process of the machine at each call.

No psutil here: the eBPF recorder's stub finder polls this on a guarded start's critical path, before
psutil is loaded. `stages/procs.py` builds its trees on it, with psutil where the lists are missing.
"""

from __future__ import annotations

import contextlib
import os
from functools import cache


@cache
def available() -> bool:
    """Whether this kernel keeps the children lists."""
    return os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def walk(pid: int, found: dict[int, None]) -> dict[int, None]:
    """`found` (an ordered set) with `pid` and its descendants added, not descending again below a pid
    already in it. The lists name live children only, so a reused pid is never taken for a child."""
    todo = [pid]
    while todo:
        here = todo.pop()
        if here in found:
            continue
        found[here] = None
        try:
            threads = os.listdir(f"/proc/{here}/task")
        except OSError:  # gone
            continue
        for thread in threads:  # a child's parent is the thread that forked it
            with (
                contextlib.suppress(OSError, ValueError),
                open(f"/proc/{here}/task/{thread}/children", "rb") as file,
            ):
                todo += map(int, file.read().split())
    return found
