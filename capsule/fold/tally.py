"""The recorder's running tally: what `session.ended` reports, folded as events are written.

Small on purpose: the recorder keeps O(processes alive) state, never the event list.
"""

from __future__ import annotations

import attrs

from capsule.events import Event, ProcExited, ProcSpawned, ProcSpawnFailed, TraceUnparsed


@attrs.define
class Tally:
    events: int = 0
    processes: int = 0
    failed: int = 0
    unparsed: int = 0
    root_pid: int | None = None
    root_exit: tuple[int | None, str | None] | None = None  # (exit code, signal name) of the root
    first_ts: float | None = None
    last_ts: float | None = None

    def apply(self, event: Event) -> Tally:
        self.events += 1
        if self.first_ts is None:
            self.first_ts = event.ts
        self.last_ts = event.ts
        if isinstance(event, ProcSpawned):
            self.processes += 1
            if event.via == "root" and self.root_pid is None:
                self.root_pid = event.pid
        elif isinstance(event, ProcExited):
            if event.signal is not None or event.exit_code:
                self.failed += 1
            if event.pid == self.root_pid and self.root_exit is None:
                self.root_exit = (event.exit_code, event.signal)
        elif isinstance(event, TraceUnparsed):
            self.unparsed += 1
        elif isinstance(event, ProcSpawnFailed):
            self.failed += 1
        return self
