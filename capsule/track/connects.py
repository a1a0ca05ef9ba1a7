"""Non-blocking connects, held until their result: shared by the strace and the eBPF trackers.

Node, asyncio, curl, Go and every Python socket with a timeout connect without blocking: the connect
returns EINPROGRESS, and the program learns how it went from getsockopt(SO_ERROR) (0, or the error) or
from a second connect on the socket (EISCONN: it worked; EALREADY: still under way). A `net.connected`
that said EINPROGRESS would call every such connection failed, so each is held by its socket (strace's
`-y` inode, else the pid and fd) and emitted once settled, with the connect's own time. One never
settled goes out as it was when its process exits or the trace ends; at most MAX_HELD are held (a
program that never asks, such as a port scanner, has its oldest emitted as they were).
"""

from __future__ import annotations

import attrs

from capsule.events.process import NetConnected

MAX_HELD = 4096
IN_PROGRESS = "EINPROGRESS"


@attrs.define
class ConnectsInProgress:
    _held: dict[object, NetConnected] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self._held)

    def connect(self, key: object | None, event: NetConnected) -> list[NetConnected]:
        """A connect on the socket `key` (None: unknown): the events to emit now."""
        held = self._held.pop(key, None) if key is not None else None
        out: list[NetConnected] = []
        if held is not None:
            if event.errno == "EALREADY":  # asked again while it is still under way
                self._held[key] = held
                return out
            if event.errno != IN_PROGRESS:  # a second connect on the socket says how the first went
                ok = event.ok or event.errno == "EISCONN"
                return [attrs.evolve(held, ok=ok, errno=None if ok else event.errno)]
            out.append(held)  # the (pid, fd) reused by a new socket: the first never settled
        if event.errno == IN_PROGRESS and key is not None:
            self._held[key] = event
            if len(self._held) > MAX_HELD:
                out.append(self._held.pop(next(iter(self._held))))
            return out
        out.append(event)
        return out

    def result(self, key: object, error: str | None) -> NetConnected | None:
        """getsockopt(SO_ERROR) on `key` said `error` (None: 0, it worked): the settled connect, if held."""
        held = self._held.pop(key, None)
        return None if held is None else attrs.evolve(held, ok=error is None, errno=error)

    def exited(self, tgid: int) -> list[NetConnected]:
        """A process exits: its connects never settled, as they were."""
        if not self._held:
            return []
        keys = [k for k, held in self._held.items() if held.pid == tgid]
        return [self._held.pop(k) for k in keys]

    def drain(self) -> list[NetConnected]:
        """The trace ends: every connect still held, as it was."""
        out = list(self._held.values())
        self._held.clear()
        return out
