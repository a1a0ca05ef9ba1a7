"""The single writer of events.jsonl: one write() per batch, whole lines only, fsync at the end.

Each batch is written as soon as it arrives, so what is recorded reaches the kernel well within the
one-second flush bound of architecture §3 and survives the recorder being killed.

Every session (run, env, agents) is written here, so this is where the events that do not come from the
(already redacted) trace are redacted: headers, `svc.starting`, `task.started`, `run.planned`… A header
written with `redacted = false` (`--no-redact`) turns it off for the rest of the session.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from capsule.codec import encode_lines
from capsule.events import Event, SessionStarted
from capsule.fold.tally import Tally
from capsule.redact import redact_event
from capsule.stages.store import open_private

if TYPE_CHECKING:
    import trio

    from capsule.fold.labels import RuleSet


class SessionWriter:
    """Appends events to events.jsonl, numbering them gap-free from `next_seq`."""

    def __init__(
        self, path: Path, next_seq: int = 0, answers: RuleSet | None = None, *, redact: bool = True
    ) -> None:
        self.path = path
        self.next_seq = next_seq
        self.redact = redact
        self.tally = Tally(answers=answers)  # exit rules: `grep` 1 is not counted as a failure
        self._fd = open_private(path)

    def write(self, events: list[Event]) -> None:
        if not events:
            return
        if self.next_seq == 0 and isinstance(header := events[0], SessionStarted):
            if not header.redacted:
                self.redact = False
            if header.parent is not None:  # a traced service's: its supervisor's stops are no failures
                from capsule.stages.reader import parent_writer, stoppers

                self.tally.stoppers = stoppers(header, parent_writer(self.path.parent, header))
        if self.redact:
            events = [redact_event(event) for event in events]
        data = encode_lines(self.next_seq, events)
        self.next_seq += len(events)
        for event in events:
            self.tally.apply(event)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


async def record_stage(receive: trio.MemoryReceiveChannel[list[Event]], writer: SessionWriter) -> None:
    async with receive:
        async for batch in receive:
            writer.write(batch)
