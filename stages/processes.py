"""Processes by identity: a pid together with its start time, so a reused pid is never taken (or killed)
for the process Capsule started; and what a returncode says about how a process ended."""

from __future__ import annotations

import signal
import time

import psutil

# create_time is boot time plus start ticks (10 ms): the same process always reads the same value, and a
# recorded start time that came from time.time() (when psutil could not read it) is close, not equal.
CLOCK_SLACK = 1.0


def process_if(pid: int | None, started: float | None) -> psutil.Process | None:
    """The live process `pid` if it is the one that started at `started` (not a zombie), else None."""
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - started) > CLOCK_SLACK:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def started_at(pid: int) -> float:
    """The start time of `pid`, to record beside it (now, if it has already gone)."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return time.time()


def returncode_status(returncode: int | None) -> tuple[int | None, str | None]:
    """(exit code, signal name) from a Popen-style returncode: negative means killed by that signal."""
    if returncode is None:
        return None, None
    if returncode < 0:
        try:
            return None, signal.Signals(-returncode).name
        except ValueError:
            return None, f"SIG{-returncode}"
    return returncode, None
