"""Signals that end a process without it failing: the terminal's, and a broken pipe.

The tty driver sends SIGINT (Ctrl-C), SIGQUIT (Ctrl-\\) and SIGHUP (the terminal closed) to the whole
foreground process group, with si_code SI_KERNEL: no process sent them, so strace prints no si_pid. A
process that dies of such a signal, or of the same signal raised again by itself (a shell waits for its
child, then re-raises it: the cooperative exit), or that exits 128+N after it (npm, make), was
interrupted by the person at the terminal: stopped on purpose.

A process that dies of SIGPIPE wrote to a pipe whose reader had closed it (`yes | head -1`, an agent's
`grep -r x . | head -20`), which a shell's pipeline expects of every member but the last: no failure of
its own; the reader's, if it had one, shows on the reader.

The process tree (the report) and the recorder's tally (the `capsule run` summary and `session.ended`)
apply these rules.
"""

from __future__ import annotations

from capsule.events import ProcSignaled

# The terminal's signals, their numbers, and what the person did.
TERMINAL_SIGNALS: dict[str, tuple[int, str]] = {
    "SIGINT": (2, "Ctrl-C"),
    "SIGQUIT": (3, "Ctrl-\\"),
    "SIGHUP": (1, "hang-up"),
}


def from_terminal(event: ProcSignaled) -> str | None:
    """The signal's name when the terminal sent it (one of TERMINAL_SIGNALS, from the kernel), else None."""
    if event.code == "SI_KERNEL" and event.sender_pid is None and event.signal in TERMINAL_SIGNALS:
        return event.signal
    return None


def interrupted(terminal: str | None, exit_code: int | None, signal: str | None) -> bool:
    """A process ended by the terminal's signal `terminal` (None: it never got one): it died of it, or
    exited 128+N after it, as programs that catch it do."""
    if terminal is None:
        return False
    if signal is not None:
        return signal == terminal
    return exit_code == 128 + TERMINAL_SIGNALS[terminal][0]


def what_was_done(terminal: str) -> str:
    """`Ctrl-C` for SIGINT: the words a status line uses."""
    return TERMINAL_SIGNALS[terminal][1]


BROKEN_PIPE = "SIGPIPE"


def broken_pipe(signal: str | None) -> bool:
    """It died of SIGPIPE: its reader had gone (the pipeline's end closed it), no failure of its own."""
    return signal == BROKEN_PIPE
