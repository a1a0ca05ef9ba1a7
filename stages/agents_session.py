"""The `agents` session file of a run: opened with its header, reopened after its writer died, closed."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import psutil

from capsule import __version__
from capsule.events import DERIVATION, SessionEnded, SessionStarted, kind_versions
from capsule.fold.tasks import RunState
from capsule.plan.spec import Plan
from capsule.stages.record import SessionWriter
from capsule.stages.store import EVENTS, create_session


def open_run(
    home: Path, plan: Plan, argv: tuple[str, ...], parent: str | None = None
) -> tuple[str, Path, SessionWriter]:
    """A new `agents` session with its header written (`parent`: the run a rerun forks from)."""
    session_id, path = create_session(home)
    writer = SessionWriter(path / EVENTS)
    me = psutil.Process()
    writer.write(
        [
            SessionStarted(
                ts=time.time(), capsule_version=__version__, session_id=session_id, session_kind="agents",
                name=plan.name, argv=argv, cwd=os.getcwd(), host=platform.node(), recorder_pid=me.pid,
                recorder_started=me.create_time(), kinds=kind_versions(), parent=parent, derivation=DERIVATION,
            )
        ]
    )  # fmt: skip
    return session_id, path, writer


def reopen_run(path: Path, events: int) -> SessionWriter:
    """Append to a session whose writer died: cut a torn last line first."""
    file = path / EVENTS
    data = file.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(file, "r+b") as f:
            f.truncate(end)
    return SessionWriter(file, next_seq=events)


def close_run(writer: SessionWriter, started: float, state: RunState) -> None:
    code = 0 if state.state == "succeeded" else 1
    writer.write(
        [
            SessionEnded(
                ts=time.time(),
                exit_code=code,
                duration_s=round(time.time() - started, 6),
                events=writer.tally.events,
            )
        ]
    )
    writer.close()
