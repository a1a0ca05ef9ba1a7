"""Exit statuses from Popen-style returncodes, apart from stages/procs (its records and psutil's use
cost ~3.5 ms to import, which the end of every eBPF recording paid for this one function)."""

from __future__ import annotations

import signal


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
