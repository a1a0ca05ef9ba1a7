"""The argv a report names an exec by, in a module of its own: the tally (`capsule run`'s only fold)
needs it without loading the process tree and its rules engine."""

from __future__ import annotations

from capsule.events import ProcExec


def named_argv(event: ProcExec) -> tuple[str, ...] | None:
    """The exec's argv, its first element completed from the exec'd path when strace's `-s` cut that
    element itself: `strace -f` (`-s 32`) prints `"/root/.pyenv/versions/3.11.7/bin"...` for pyenv's
    python3, which every report would otherwise name `bin`. Only a strict prefix of the path counts
    as cut; the rest of a cut argv stays the prefix strace printed."""
    argv = event.argv
    if not (event.argv_truncated and argv and argv[0]):
        return argv
    first = argv[0]
    if len(event.path) > len(first) and event.path.startswith(first):
        return (event.path, *argv[1:])
    return argv
