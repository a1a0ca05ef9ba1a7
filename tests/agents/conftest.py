"""Agent-run fixtures: write a plan, run `capsule agents`, read the session's events; clean up after."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from tests.conftest import CapsuleRunner


def session_events(home: Path) -> list[dict[str, Any]]:
    """The events of the newest agents session under home."""
    runs = sorted((home / "runs").iterdir(), reverse=True)
    for run in runs:
        lines = (run / "events.jsonl").read_bytes().splitlines()
        first = orjson.loads(lines[0])
        if first["session_kind"] == "agents":
            return [orjson.loads(line) for line in lines if line.strip()]
    raise AssertionError("no agents session")


def of(events: list[dict[str, Any]], kind: str, task: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind and (task is None or e.get("task") == task)]


@pytest.fixture
def agents(capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Run `capsule agents run` on a plan text; returns (completed process, events)."""

    def run(plan: str, *args: str, timeout: float = 60) -> tuple[Any, list[dict[str, Any]]]:
        path = tmp_path / "plan.toml"
        path.write_text(plan)
        done = capsule("agents", "run", str(path), *args, timeout=timeout)
        return done, session_events(capsule_home)

    yield run
    # whatever a failing test left behind: every task process group recorded, killed
    runs = capsule_home / "runs"
    if runs.is_dir():
        for run_dir in runs.iterdir():
            for line in (run_dir / "events.jsonl").read_bytes().splitlines():
                if b'"task.started"' in line:
                    event = orjson.loads(line)
                    try:
                        if event["kind"] == "task.started" and event["pgid"] > 0:
                            os.killpg(event["pgid"], signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass


def alive(pid: int, started: float) -> bool:
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - started) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
