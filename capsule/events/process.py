"""Facts derived from the trace: processes spawned, exec'd, signalled and exited; files and sockets."""

from __future__ import annotations

from typing import ClassVar

import attrs

from capsule.events.base import Event


@attrs.frozen(kw_only=True)
class ProcSpawned(Event):
    """A new process (thread-group leader). Threads never produce this event."""

    KIND: ClassVar[str] = "proc.spawned"

    pid: int
    ppid: int | None  # the process that spawned it; None for the root of the trace or an unclaimed pid
    via: str  # fork | vfork | clone | clone3 | root | unknown


@attrs.frozen(kw_only=True)
class ProcExec(Event):
    """An execve/execveat attempt. Failed attempts (a shell searching PATH) are facts too."""

    KIND: ClassVar[str] = "proc.exec"
    VERSION: ClassVar[int] = 2  # v2: `argv` may be null

    pid: int
    path: str
    argv: tuple[str, ...] | None  # None: not known (`strace -s 0` prints `[...]`)
    ok: bool
    errno: str | None = None  # e.g. "ENOENT" when ok is False
    argv_truncated: bool = False  # strace cut the argv (`...`): what is here is a prefix


@attrs.frozen(kw_only=True)
class ProcExited(Event):
    """A process ended: an exit code, or a signal (and whether it dumped core)."""

    KIND: ClassVar[str] = "proc.exited"

    pid: int
    exit_code: int | None = None
    signal: str | None = None
    core_dumped: bool = False


@attrs.frozen(kw_only=True)
class ProcSignaled(Event):
    """A signal delivered to a process (SIGCHLD is left out: it is the noise of every fork)."""

    KIND: ClassVar[str] = "proc.signaled"

    pid: int
    signal: str
    sender_pid: int | None = None
    code: str | None = None  # si_code, e.g. SI_USER, SI_KERNEL


@attrs.frozen(kw_only=True)
class ProcSpawnFailed(Event):
    """The command could not be started at all (not found, not executable): no process exists."""

    KIND: ClassVar[str] = "proc.spawn_failed"

    path: str
    argv: tuple[str, ...]
    errno: str  # ENOENT, EACCES, ...
    message: str


@attrs.frozen(kw_only=True)
class FileOpened(Event):
    """open/openat/creat at trace level `file`."""

    KIND: ClassVar[str] = "file.opened"

    pid: int
    path: str
    flags: str = ""
    ok: bool = True
    errno: str | None = None


@attrs.frozen(kw_only=True)
class FileChanged(Event):
    """A change to the file system other than an open, at trace level `file`: unlink/rmdir (`delete`),
    rename (`rename`, to `target`), mkdir/link/symlink (`create`), chmod (`chmod`), truncate (`write`).
    `path` is absolute where the trace allows (see capsule/track/paths.py)."""

    KIND: ClassVar[str] = "file.changed"

    pid: int
    op: str  # delete | rename | create | chmod | write
    path: str
    target: str | None = None  # rename, link, symlink: the new name
    ok: bool = True
    errno: str | None = None


@attrs.frozen(kw_only=True)
class NetSocket(Event):
    """A socket call other than connect at trace level `net`: bind, listen, accept, or a send to an
    explicit address (sendto/sendmsg with one: UDP, DNS). `address` and `port` are the local end for
    bind/listen, the peer for accept and send."""

    KIND: ClassVar[str] = "net.socket"

    pid: int
    op: str  # bind | listen | accept | send
    family: str = ""  # inet | inet6 | unix | ... ("" when the call did not show it)
    address: str = ""
    port: int | None = None
    ok: bool = True
    errno: str | None = None


@attrs.frozen(kw_only=True)
class NetConnected(Event):
    """connect() at trace level `net`: the address as strace decoded it."""

    KIND: ClassVar[str] = "net.connected"

    pid: int
    family: str = ""  # AF_INET, AF_INET6, AF_UNIX, ...
    address: str = ""
    ok: bool = True
    errno: str | None = None


@attrs.frozen(kw_only=True)
class TraceUnparsed(Event):
    """A trace line the parser did not understand: kept, counted and reported, never fatal."""

    KIND: ClassVar[str] = "trace.unparsed"

    line_no: int
    text: str
    reason: str


@attrs.frozen(kw_only=True)
class ProcSampled(Event):
    """An observation of the live system by the psutil sampler."""

    KIND: ClassVar[str] = "proc.sampled"
    VERSION: ClassVar[int] = 2  # v2: `cpu_s`

    pid: int
    cpu_percent: float
    rss_bytes: int
    cpu_s: float | None = None  # user + system CPU seconds used so far (psutil cpu_times)
