"""What the guard reads from the filesystem and from the guarded processes: the paths a policy's globs
cover when a tree starts, the script a shell is about to run, and execve's arguments in another
process's memory (/proc/PID/mem), each as that process sees it (its root, its cwd).
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from capsule.policy import Policy
from capsule.policy.commands import shell_file
from capsule.policy.paths import is_glob
from capsule.stages.guard_walk import MAX_WALK, glob_matches

__all__ = ["MAX_WALK", "ProcessMemory", "expand_paths", "read_only_paths", "resolved", "script_text"]


def expand_paths(policy: Policy, cwd: Path, home: str, *, cache: bool = True) -> list[tuple[str, bool]]:
    """The existing files and directories `protect_paths` covers: literal paths (relative to `cwd`,
    `~` for `home`) and globs, matched over the names under `cwd` (at most MAX_WALK entries; `cache`:
    the walk kept under $CAPSULE_HOME, see stages/guard_walk.py)."""
    found: dict[str, bool] = {}
    walk_rules = []
    for rule in policy.protect_paths:
        text = home + rule[1:] if rule.startswith("~") else rule
        if not is_glob(text):
            path = Path(text) if text.startswith("/") else cwd / text
            if path.exists():
                found[str(path.resolve())] = path.is_dir()
        elif text.startswith("/"):
            for match in Path("/").glob(text.lstrip("/")):
                found[str(match.resolve())] = match.is_dir()
        else:
            walk_rules.append(rule)
    if walk_rules:
        scoped = attrs.evolve(policy, protect_paths=tuple(walk_rules))
        for name, is_dir in glob_matches(scoped, cwd, home, cache=cache):
            found[os.path.realpath(name)] = is_dir  # resolved now: a link's target may have moved
    return sorted(found.items())


def read_only_paths(policy: Policy, cwd: Path, home: str) -> list[str]:
    paths = []
    for rule in policy.read_only_paths:
        text = home + rule[1:] if rule.startswith("~") else rule
        candidates: Iterable[Path]
        if not is_glob(text):
            candidates = [Path(text) if text.startswith("/") else cwd / text]
        else:
            candidates = Path("/").glob(text.lstrip("/")) if text.startswith("/") else cwd.glob(text)
        paths += [str(p.resolve()) for p in candidates if p.exists()]
    return paths


MAX_SCRIPT = 1 << 20


def resolved(pid: int, path: str) -> str | None:
    """`path` with its links resolved as the process sees it; None if it does not exist there."""
    if not path.startswith("/"):
        return path  # unresolved: judge it as if it were there
    root = f"/proc/{pid}/root"
    try:
        os.stat(root + path)
        return os.path.realpath(root + path)
    except FileNotFoundError:
        return None if os.path.exists(root) else path
    except OSError:
        return path


def script_text(pid: int, argv: Sequence[str]) -> str | None:
    """The script `sh FILE` will run, read as that process sees it (its root and cwd: a protected file
    is the empty stand-in there), or None (no such operand, unreadable, too large, not text)."""
    operand = shell_file(argv)
    if operand is None:
        return None
    base = f"/proc/{pid}/root" if operand.startswith("/") else f"/proc/{pid}/cwd"
    try:
        with open(os.path.join(base, operand.lstrip("/") if operand.startswith("/") else operand), "rb") as f:
            data = f.read(MAX_SCRIPT + 1)
    except OSError:
        return None
    if len(data) > MAX_SCRIPT:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


class ProcessMemory:
    """Reads strings out of another process (/proc/PID/mem), as execve's arguments point there."""

    def __init__(self, pid: int) -> None:
        self.fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def string(self, address: int, limit: int = 1 << 17) -> str:
        out = b""
        while len(out) < limit:
            # a page at a time: a read across into an unmapped page fails as a whole
            chunk = os.pread(self.fd, 4096 - (address + len(out)) % 4096, address + len(out))
            if not chunk:
                break
            end = chunk.find(b"\0")
            if end >= 0:
                return (out + chunk[:end]).decode(errors="surrogateescape")
            out += chunk
        return out.decode(errors="surrogateescape")

    def argv(self, address: int, limit: int = 4096) -> list[str]:
        if address == 0:
            return []
        args: list[str] = []
        while len(args) < limit:
            # the pointers up to the end of their page in one read (a page holds 512 of them)
            at = address + 8 * len(args)
            raw = os.pread(self.fd, 4096 - at % 4096, at)
            if len(raw) < 8:
                raise OSError(errno.EFAULT, "execve's argv is not readable")
            for (pointer,) in struct.iter_unpack("Q", raw[: len(raw) // 8 * 8]):
                if pointer == 0 or len(args) == limit:
                    return args
                args.append(self.string(pointer))
        return args
