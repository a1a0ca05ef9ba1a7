"""The psutil sampler: every `interval` seconds, CPU and memory of each process in the recorded tree.

Observations of the live system enter the session only as `proc.sampled` events (architecture §3), written by
the session's one writer, so the folds never look at the live system. The tree is the tracer's
descendants (strace -f is the parent of the traced command); a process that lives shorter than one
interval may not be sampled at all, and a peak between two samples is not seen.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import psutil
import trio

from capsule.events import Event, ProcSampled
from capsule.stages import procs

DEFAULT_INTERVAL = 0.5


def sample_tree(root_pid: int, seen: dict[int, psutil.Process], include_root: bool = False) -> list[Event]:
    """One sample of every descendant of `root_pid` (the tracer itself left out; `include_root` when
    `root_pid` is the command itself, as under the eBPF tracer).

    `seen` keeps the psutil handle of each pid between calls: cpu_percent needs the previous reading,
    and a handle checks the process's start time, so a reused pid is a new handle."""
    if not psutil.pid_exists(root_pid):
        return []
    # the kernel's children lists: a few reads for the tree, not a read of every process of the machine
    pids = [p for p in procs.descendant_pids(root_pid) if include_root or p != root_pid]
    now = time.time()
    out: list[Event] = []
    alive: set[int] = set()
    for pid in pids:
        handle = seen.get(pid)
        try:
            if handle is None or not handle.is_running():
                handle = seen[pid] = psutil.Process(pid)
            alive.add(pid)
            with handle.oneshot():
                rss = handle.memory_info().rss
                times = handle.cpu_times()
                percent = handle.cpu_percent(None)
        except psutil.Error:
            continue
        out.append(
            ProcSampled(
                ts=now,
                pid=pid,
                cpu_percent=round(percent, 1),
                rss_bytes=rss,
                cpu_s=round(times.user + times.system, 3),
            )
        )
    for pid in list(seen):
        if pid not in alive:
            del seen[pid]
    return out


async def sample_stage(
    root_pid: int, write: Callable[[list[Event]], None], interval: float, *, include_root: bool = False
) -> None:
    """Sample the tree under `root_pid` every `interval` seconds until cancelled; hand each batch to
    `write` (the session writer). The first sample is taken at once."""
    seen: dict[int, psutil.Process] = {}
    while True:
        with contextlib.suppress(psutil.Error):
            batch = await trio.to_thread.run_sync(sample_tree, root_pid, seen, include_root)
            if batch:
                write(batch)
        await trio.sleep(interval)
