"""The session store: `$CAPSULE_HOME/runs/<id>/` with `events.jsonl` (the truth) and `trace.strace`.

Ids (`20261121-143005-123ab`: local time, milliseconds, a random byte) sort by time and stay unique
under concurrency (the directory is created exclusively). The live,
unredacted strace output is spooled outside the session directory (`$CAPSULE_HOME/spool/<id>.strace`)
so that no secret ever lands in the session directory; it is deleted once the session is closed, and
kept for recovery if the recorder dies. Directories are 0700 and files 0600.

Files are opened with O_NOFOLLOW (a planted symlink is refused, its target never truncated) and new ones
with O_EXCL; outputs the user names (`export -o`, `report --html`) go through a new temporary file beside
them, renamed over the name. A home owned by someone else, or writable by group or others, is refused
(`check_home`): whoever can write there could plant links or read what is recorded.

`capsule archive` replaces a finished session's files by zstd-compressed ones (`events.jsonl.zst`,
`trace.strace.zst`); every reader goes through `session_file` / `open_session_file`, which accept either
form, so an archived session reads like any other.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from capsule.stages.home import check_home, runs_dir

EVENTS = "events.jsonl"
TRACE = "trace.strace"
TRACE_EBPF = "trace.ebpf"  # the eBPF recorder's JSON lines, from `capsule run --tracer ebpf`
# The eBPF tracers a session header can name: Capsule's recorder, and bpftrace (which recorded the
# same line format before it; its sessions still replay).
EBPF_TRACERS = frozenset({"capsule-ebpf-recorder", "bpftrace"})


def tracer_kind(tracer: str | None) -> str:
    """`ebpf` for a session recorded by an eBPF tracer (its header's tracer path), else `strace`."""
    return "ebpf" if tracer is not None and tracer.rsplit("/", 1)[-1] in EBPF_TRACERS else "strace"


def trace_name(tracer: str | None) -> str:
    """The raw trace's file name in a session recorded by `tracer`."""
    return TRACE_EBPF if tracer_kind(tracer) == "ebpf" else TRACE


ZST = ".zst"  # the suffix of an archived (zstd-compressed) session file


class SessionNotFound(LookupError):
    """No session matches the reference (or several do)."""


def spool_path(home: Path, session_id: str) -> Path:
    return home / "spool" / f"{session_id}.strace"


class HomeRefused(PermissionError):
    """$CAPSULE_HOME (or a folder in it) is not safe to record into."""


def _private_dir(path: Path) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def create_session(home: Path, now: float | None = None) -> tuple[str, Path]:
    """Make a new session directory (0700) and return its id and path."""
    runs = runs_dir(home)
    problem = check_home(home)
    if problem is not None:
        raise HomeRefused(problem)
    _private_dir(home)
    _private_dir(runs)
    _private_dir(home / "spool")
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    millis = int(now * 1000) % 1000
    while True:
        # Milliseconds keep ids in time order within a second (`latest` must be the latest); the random
        # byte, with the exclusive mkdir, keeps them unique when sessions start in the same millisecond.
        # (os.urandom(n).hex() is secrets.token_hex(n), without secrets' ~4 ms of imports before strace.)
        session_id = f"{stamp}-{millis:03d}{os.urandom(1).hex()}"
        path = runs / session_id
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return session_id, path


def open_private(path: Path, *, append: bool = True, new: bool = False) -> int:
    """Open a file for writing with mode 0600 (whatever the umask says), never through a symlink;
    `new`: it must not exist yet (O_EXCL)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags | (os.O_EXCL if new else 0) | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


@contextlib.contextmanager
def private_output(path: Path) -> Iterator[BinaryIO]:
    """Write `path` (an export, a report) 0600: into a new temporary file beside it (O_EXCL, O_NOFOLLOW),
    renamed over `path` once complete. A symlink at `path` is replaced, its target never written."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = open_private(temp, append=False, new=True)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def session_file(session_dir: Path, name: str) -> Path | None:
    """The file `name` of a session as it is stored: plain, else archived (`name.zst`), else None.

    The plain file wins: `capsule archive` removes it only after the compressed one is complete on disk.
    """
    plain = session_dir / name
    if plain.is_file():
        return plain
    archived = session_dir / (name + ZST)
    return archived if archived.is_file() else None


def is_session(path: Path) -> bool:
    return session_file(path, EVENTS) is not None


def open_readable(path: Path) -> io.BufferedReader:
    """Open a session file for reading, decompressing `*.zst` (or `path` gone but `path.zst` there).

    The one place that knows the archived form; zstandard is imported only when a file is compressed.
    """
    if path.suffix != ZST and not path.is_file():
        archived = path.with_name(path.name + ZST)
        if archived.is_file():
            path = archived
    if path.suffix != ZST:
        return open(path, "rb")
    import zstandard

    raw = open(path, "rb")  # noqa: SIM115 (owned by the reader returned)
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
    except BaseException:
        raw.close()
        raise
    # BufferedReader gives readline() and fewer tiny reads; the zstd reader has only read/readinto.
    return io.BufferedReader(reader, 1 << 20)


def open_session_file(session_dir: Path, name: str) -> io.BufferedReader:
    """Open a session's file `name` (EVENTS, TRACE) for reading, whichever form it is stored in."""
    found = session_file(session_dir, name)
    if found is None:
        raise FileNotFoundError(2, "No such file or directory", str(session_dir / name))
    return open_readable(found)


def session_dirs(home: Path) -> list[Path]:
    """Every session directory, newest first (ids sort by time)."""
    runs = runs_dir(home)
    if not runs.is_dir():
        return []
    found = [p for p in runs.iterdir() if is_session(p)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def resolve_session(home: Path, ref: str) -> Path:
    """A session by id, unique id prefix, directory, events.jsonl path, `latest`, or the name given with
    `--name` (the newest session of that name)."""
    as_path = Path(ref).expanduser()
    if as_path.is_file() and as_path.name in (EVENTS, EVENTS + ZST):
        return as_path.parent
    if is_session(as_path) and ("/" in ref or ref.startswith(".")):
        return as_path
    sessions = session_dirs(home)
    if ref == "latest":
        # The newest session of its own: a traced service's or task's run session names a parent.
        from capsule.stages.reader import glance

        for path in sessions:
            seen = glance(path)
            # A blank session is a start killed right after creating the directory: never the latest.
            if not seen.blank and (seen.header is None or seen.header.parent is None):
                return path
        raise SessionNotFound(f"no sessions yet under {runs_dir(home)}; record one with `capsule run -- CMD`")
    exact = [p for p in sessions if p.name == ref]
    if exact:
        return exact[0]
    matches = [p for p in sessions if p.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(p.name for p in matches[:5])
        raise SessionNotFound(f"session {ref!r} is ambiguous: {len(matches)} match ({names}…)")
    if is_session(as_path):
        return as_path
    # A name given with --name: the newest session carrying it (ids and prefixes won above).
    from capsule.stages.reader import glance

    for path in sessions:
        header = glance(path).header
        if header is not None and header.name == ref:
            return path
    raise SessionNotFound(f"no session {ref!r} under {runs_dir(home)} (see `capsule ls`)")
