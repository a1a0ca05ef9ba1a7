"""What the tracker acts on at each trace level: the syscall names and the signals it ignores, in a module
of its own (no event classes), so that the second process of a split import (stages/import_part.py) chooses
lines as the tracker's parser would without loading the tracker."""

from __future__ import annotations

_SPAWN = frozenset(("fork", "vfork", "clone", "clone2", "clone3"))
_EXEC = frozenset(("execve", "execveat"))
_OPEN = frozenset(("open", "openat", "openat2", "creat"))
# File-system changes other than opens: name -> (op, index of the dirfd argument or None, of the path,
# of the target's dirfd, of the target). Targets: rename's new name, link's and symlink's new entry.
_CHANGES: dict[str, tuple[str, int | None, int, int | None, int | None]] = {
    "unlink": ("delete", None, 0, None, None),
    "unlinkat": ("delete", 0, 1, None, None),
    "rmdir": ("delete", None, 0, None, None),
    "rename": ("rename", None, 0, None, 1),
    "renameat": ("rename", 0, 1, 2, 3),
    "renameat2": ("rename", 0, 1, 2, 3),
    "mkdir": ("create", None, 0, None, None),
    "mkdirat": ("create", 0, 1, None, None),
    "link": ("create", None, 1, None, None),
    "linkat": ("create", 2, 3, None, None),
    "symlink": ("create", None, 1, None, None),
    "symlinkat": ("create", 1, 2, None, None),
    "mknod": ("create", None, 0, None, None),
    "mknodat": ("create", 0, 1, None, None),
    "chmod": ("chmod", None, 0, None, None),
    "fchmodat": ("chmod", 0, 1, None, None),
    "fchmodat2": ("chmod", 0, 1, None, None),
    "truncate": ("write", None, 0, None, None),
}
_CWD = frozenset(("chdir", "fchdir"))
# The calls a process's end can be read from when a log has no exit lines (Tracker's `ends`).
_ENDS = frozenset(("exit_group", "wait4", "waitid"))
_NET_OPS = frozenset(("bind", "listen", "accept", "accept4", "sendto", "sendmsg", "getsockname"))

# Signals whose `--- SIG… ---` lines produce nothing: SIGCHLD is the noise of every fork.
IGNORED_SIGNALS = frozenset({"SIGCHLD"})


def level_parts(level: str) -> tuple[bool, bool]:
    """Whether a trace level keeps files and network (both trackers); ValueError for an unknown one."""
    if level not in ("process", "file", "net", "all"):
        raise ValueError(f"unknown trace level {level!r}")
    return level in ("file", "all"), level in ("net", "all")


def wanted_syscalls(files: bool, net: bool, *, ends: bool = False) -> frozenset[str]:
    """The syscall names a tracker keeping files and/or network (and `ends`: exit_group and the waits)
    acts on: a parser may drop the rest."""
    wanted = _SPAWN | _EXEC | {"???"}
    if ends:
        wanted |= _ENDS
    if files:
        wanted |= _OPEN | _CHANGES.keys() | _CWD
    if net:
        wanted |= {"connect", "getsockopt"} | _NET_OPS  # getsockopt: a non-blocking connect's result
    return wanted
