"""The single writer of events.jsonl: one write() per batch, whole lines only, fsync at the end.

Each batch is written as soon as it arrives, so what is recorded reaches the kernel well within the
one-second flush bound of DESIGN §3 and survives the recorder being killed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from capsule.codec import encode_lines
from capsule.events import Event
from capsule.fold.tally import Tally
from capsule.stages.store import open_private

if TYPE_CHECKING:
    from capsule.fold.labels import RuleSet


class SessionWriter:
    """Appends events to events.jsonl, numbering them gap-free from `next_seq`."""

    def __init__(self, path: Path, next_seq: int = 0, answers: RuleSet | None = None) -> None:
        self.path = path
        self.next_seq = next_seq
        self.tally = Tally(answers=answers)  # exit rules: `grep` 1 is not counted as a failure
        self._fd = open_private(path)

    def write(self, events: list[Event]) -> None:
        if not events:
            return
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
