"""Files and network: what a session's processes read, wrote, created, deleted, renamed and whom they
contacted, folded from `file.opened`, `file.changed`, `proc.exec`, `net.connected` and `net.socket`.

One entry per path (files) and per (family, address, port, op, ok) (network), with the processes that
did it; per-process counts live on the process nodes. Only calls that succeeded make a file entry: a
shim probing forty paths that do not exist read nothing. Paths the tracker could not make absolute are
relative to the root's starting directory and are joined with the session's cwd here.

What an open did comes from its flags: `O_WRONLY`/`O_RDWR`/`O_TRUNC`/`O_APPEND` is a write, else a read;
`O_CREAT` is a create when the path was not seen before in the session (the trace cannot tell an
existing file from a new one, except with `O_EXCL`), else a write.
"""

from __future__ import annotations

import attrs

from capsule.events import FileChanged, FileOpened, NetConnected, NetSocket, ProcExec
from capsule.track.paths import FAMILIES, join_cwd

FILE_OPS = ("read", "write", "create", "delete", "rename", "exec", "chmod")
NET_OPS = ("connect", "bind", "listen", "accept", "send")
MAX_PIDS = 64  # processes kept per entry (the count goes on)

_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_TRUNC", "O_APPEND")


@attrs.define(eq=False)
class FileEntry:
    path: str
    first: float
    last: float
    ops: set[str] = attrs.Factory(set)
    keys: list[int] = attrs.Factory(list)  # process node keys, first MAX_PIDS
    pids: list[int] = attrs.Factory(list)
    processes: int = 0
    renamed_to: str | None = None  # the last rename of this path: its new name


@attrs.define(eq=False)
class NetEntry:
    family: str
    address: str
    port: int | None
    op: str
    ok: bool
    error: str | None
    first: float
    last: float
    count: int = 0
    keys: list[int] = attrs.Factory(list)
    pids: list[int] = attrs.Factory(list)


def _add(entry: FileEntry | NetEntry, key: int, pid: int) -> None:
    if key in entry.keys:
        return
    if isinstance(entry, FileEntry):
        entry.processes += 1
    if len(entry.keys) < MAX_PIDS:
        entry.keys.append(key)
        entry.pids.append(pid)


def _split_connected(event: NetConnected) -> tuple[str, str, int | None]:
    """net.connected v1 keeps `ip:port` / `[ip6]:port` / a unix path in one string: split it."""
    family = FAMILIES.get(event.family, event.family.removeprefix("AF_").lower())
    address = event.address
    if family in ("inet", "inet6") and ":" in address:
        host, _, port = address.rpartition(":")
        if port.isdigit():
            return family, host.strip("[]"), int(port)
    return family, address, None


@attrs.define(eq=False)
class Activity:
    """Files and network of one session, keyed for lookups; `files`/`network` give them in order."""

    cwd: str | None = None  # the root's starting directory (session header)
    track_exec: bool = False  # files are traced (level file|all): execs are file operations too
    by_path: dict[str, FileEntry] = attrs.Factory(dict)
    by_peer: dict[tuple[str, str, int | None, str, bool], NetEntry] = attrs.Factory(dict)

    def _file(self, path: str, ts: float) -> tuple[FileEntry, bool]:
        path = join_cwd(self.cwd, path)
        entry = self.by_path.get(path)
        if entry is None:
            entry = self.by_path[path] = FileEntry(path=path, first=ts, last=ts)
            return entry, True
        entry.last = max(entry.last, ts)
        return entry, False

    def opened(self, event: FileOpened, key: int) -> str | None:
        """Fold one open; return the op it counts as for its process (None: it failed)."""
        if not event.ok or not event.path:
            return None
        entry, new = self._file(event.path, event.ts)
        flags = event.flags
        if (
            "O_CREAT" in flags
            and (new or "O_EXCL" in flags)
            and "create" not in entry.ops
            and not entry.path.startswith(("/dev/", "/proc/", "/sys/"))  # `> /dev/null` creates nothing
        ):
            op = "create"
            entry.ops.add("write")
        elif any(f in flags for f in _WRITE_FLAGS) or "O_CREAT" in flags:
            op = "write"
        else:
            op = "read"
        entry.ops.add(op)
        _add(entry, key, event.pid)
        return op

    def changed(self, event: FileChanged, key: int) -> str | None:
        if not event.ok or not event.path:
            return None
        entry, _new = self._file(event.path, event.ts)
        entry.ops.add(event.op)
        _add(entry, key, event.pid)
        if event.op == "rename" and event.target:
            entry.renamed_to = join_cwd(self.cwd, event.target)
            target, _ = self._file(event.target, event.ts)
            target.ops.add("create")
            _add(target, key, event.pid)
        return event.op

    def executed(self, event: ProcExec, key: int) -> None:
        if not self.track_exec or not event.ok or not event.path:
            return
        entry, _new = self._file(event.path, event.ts)
        entry.ops.add("exec")
        _add(entry, key, event.pid)

    def network(self, event: NetConnected | NetSocket, key: int) -> None:
        if isinstance(event, NetConnected):
            family, address, port = _split_connected(event)
            op = "connect"
        else:
            family, address, port, op = event.family, event.address, event.port, event.op
        peer = (family, address, port, op, event.ok)
        entry = self.by_peer.get(peer)
        if entry is None:
            entry = self.by_peer[peer] = NetEntry(
                family=family,
                address=address,
                port=port,
                op=op,
                ok=event.ok,
                error=event.errno,
                first=event.ts,
                last=event.ts,
            )
        entry.last = max(entry.last, event.ts)
        entry.count += 1
        _add(entry, key, event.pid)

    @property
    def files(self) -> list[FileEntry]:
        return sorted(self.by_path.values(), key=lambda e: (e.first, e.path))

    @property
    def peers(self) -> list[NetEntry]:
        return sorted(self.by_peer.values(), key=lambda e: (e.first, e.address, e.port or 0, e.op))
