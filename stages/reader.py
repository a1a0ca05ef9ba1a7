"""Reading sessions from disk: a streaming event iterator, and the cheap header-and-tail read for `ls`.

Both read plain and archived (`events.jsonl.zst`) sessions alike, through `capsule.stages.store.open_session_file`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import psutil

from capsule.codec import CodecError, LineDecoder, NewerVersion, decode_line
from capsule.events import Event, SessionEnded, SessionRecovered, SessionStarted
from capsule.stages.home import capsule_home
from capsule.stages.procs import process_if
from capsule.stages.store import (
    EVENTS,
    ZST,
    open_readable,
    open_session_file,
    session_file,
    spool_path,
)

CHUNK = 1 << 20
TAIL = 16 << 10  # the last lines of a session: its session.ended and session.recovered


def iter_events(session_dir: Path, decoder: LineDecoder | None = None) -> Iterator[Event]:
    """Every event of a session, decoded as the file is read (memory stays flat)."""
    decoder = decoder if decoder is not None else LineDecoder()
    with open_session_file(session_dir, EVENTS) as file:
        while data := file.read(CHUNK):
            for _seq, event in decoder.feed(data):
                yield event
    decoder.close()


@attrs.frozen
class Glance:
    """What `capsule ls` shows, read from the first and last lines only."""

    path: Path
    header: SessionStarted | None
    ended: SessionEnded | None
    recovered: bool
    # No whole first line: a start killed before its header was written. Nothing to show or report.
    blank: bool = False
    unread: str | None = None  # why its first line is no header it can read (a newer capsule wrote it)

    def not_a_session(self) -> str:
        """The one line saying why this is no session to read."""
        if self.unread is not None:
            return f"{self.path}: its {self.unread}: upgrade capsule to read it"
        return f"{self.path}: not a capsule session (no session.started header)"


def glance(session_dir: Path) -> Glance:
    found = session_file(session_dir, EVENTS)
    if found is None:
        raise FileNotFoundError(2, "No such file or directory", str(session_dir / EVENTS))
    with open_readable(found) as file:
        first = file.readline()
        if found.suffix == ZST:
            # A compressed stream cannot seek to its end: read through it, keeping the last TAIL bytes.
            tail = b""
            while data := file.read(CHUNK):
                tail = (tail + data)[-TAIL:]
        else:
            file.seek(0, 2)
            size = file.tell()
            file.seek(max(0, size - TAIL))
            tail = file.read()
    header = ended = None
    recovered = False
    unread = None
    try:
        _seq, event = decode_line(first)
        header = event if isinstance(event, SessionStarted) else None
    except NewerVersion as exc:  # say so: "upgrade capsule", not "not a session"
        unread = str(exc)
    except CodecError:
        pass
    for line in tail.split(b"\n")[-3:]:
        if not line.strip():
            continue
        try:
            _seq, event = decode_line(line)
        except CodecError:
            continue
        if isinstance(event, SessionEnded):
            ended = event
        elif isinstance(event, SessionRecovered):
            recovered = True
    return Glance(session_dir, header, ended, recovered, blank=not first.endswith(b"\n"), unread=unread)


WRITERS = {"env": "supervisor", "agents": "agents run"}  # who writes a session of that kind


def parent_writer(session_dir: Path, header: SessionStarted) -> tuple[int, str] | None:
    """(pid, what it is) of the writer of the env or agents session this one is a traced part of: a
    signal it sent (a service stopped by `env down`) is named in the report, not just its pid."""
    if header.parent is None:
        return None
    try:
        parent = glance(session_dir.parent / header.parent).header
    except (FileNotFoundError, NotADirectoryError):  # pruned before its part
        return None
    if parent is None or parent.recorder_pid is None:
        return None
    return parent.recorder_pid, WRITERS.get(parent.session_kind, f"{parent.session_kind} writer")


def stoppers(header: SessionStarted, writer: tuple[int, str] | None) -> frozenset[int]:
    """The pids whose signals stop a session's processes on purpose (ProcessTree.stoppers): for a traced
    service's, its env's supervisor (`env down`, a restart) and the session's own `capsule run`, which
    passes that SIGTERM on. An agents run's scheduler stops a task for a timeout or a limit, which stays
    a failure: none."""
    if writer is None or writer[1] != WRITERS["env"]:
        return frozenset()
    return frozenset(p for p in (writer[0], header.recorder_pid) if p)


def recorder_alive(header: SessionStarted) -> bool:
    """Is the process that writes this session, or the strace it started, still running?

    `capsule run` writes its header before strace exists, so its strace is known by the spool file it
    holds open; other writers name their tracer in the header.
    """
    if process_if(header.recorder_pid, header.recorder_started) is not None:
        return True
    if header.tracer_pid is not None:
        return process_if(header.tracer_pid, header.tracer_started) is not None
    return _held_open(spool_path(capsule_home(), header.session_id))


def _held_open(path: Path) -> bool:
    """Does any live process have `path` open (a tracer still writing it)? Only asked of dead recorders."""
    if not path.exists():
        return False
    target = str(path)
    for process in psutil.process_iter():
        try:
            if any(f.path == target for f in process.open_files()):
                return True
        except psutil.Error:
            continue
    return False
