"""Per-process `inactivity_timeout` with real processes: a process nobody uses stops alone (reason `idle`,
its dependants first, reason `dependency`) while the rest of the environment runs on, and with `activity = "traffic"` an open
connection to its health port keeps it up until the connection closes. Loopback only."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CapsuleRunner
from tests.env.test_features import proc_of, session_events
from tests.env.test_supervise import free_port, status, wait_for, write

# A TCP server that keeps every connection it accepts open (a client holding a session with a service).
HOLDING = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
held = []
while True:
    held.append(s.accept()[0])
"""


@pytest.fixture
def project(tmp_path: Path, capsule: CapsuleRunner) -> Iterator[Path]:
    root = tmp_path / "idle"
    root.mkdir()
    (root / "hold.py").write_text(HOLDING)
    yield root
    capsule("env", "kill-all", timeout=60)


def states(capsule: CapsuleRunner, project: Path) -> dict[str, tuple[str, str | None]]:
    return {p["name"]: (p["state"], p["stop_reason"]) for p in status(capsule, project)["processes"]}


def stops(home: Path, session: str) -> list[tuple[str, str]]:
    """(process, reason) of every stop, in order, read from the session (reading it is no activity;
    `env status` would be, as every CLI command is)."""
    return [(e["name"], e["reason"]) for e in session_events(home, session) if e["kind"] == "svc.stopping"]


def stopped(home: Path, session: str) -> list[tuple[str, str]]:
    """(process, reason) of every stop the supervisor has finished (`svc.stopped`): until then a stopping
    process whose pid is gone shows as `exited` in `env status`."""
    return [(e["name"], e["reason"]) for e in session_events(home, session) if e["kind"] == "svc.stopped"]


def test_a_process_idles_alone_and_traffic_keeps_another_up(
    project: Path, capsule: CapsuleRunner, capsule_home: Path
) -> None:
    quiet, used, api = free_port(), free_port(), free_port()
    write(
        project,
        f"""
[[process]]
name = "quiet"
command = "python3 hold.py {quiet}"
health_check = "tcp://127.0.0.1:{quiet}"
inactivity_timeout = "2s"
[[process]]
name = "quiet-client"
command = "sleep 600"
depends_on = ["quiet"]
[[process]]
name = "used"
command = "python3 hold.py {used}"
health_check = "tcp://127.0.0.1:{used}"
inactivity_timeout = "2s"
activity = "traffic"
[[process]]
name = "api"
command = "python3 hold.py {api}"
health_check = "tcp://127.0.0.1:{api}"
""",
    )
    assert capsule("env", "up", str(project)).returncode == 0
    session = status(capsule, project)["session"]
    client = socket.create_connection(("127.0.0.1", used), timeout=10)  # someone uses `used`
    try:
        # `quiet` (the same timeout as `used`, started with it) idles, its dependant stopped first.
        wait_for(lambda: ("quiet", "idle") in stopped(capsule_home, session), timeout=60)
        assert stops(capsule_home, session) == [("quiet-client", "dependency"), ("quiet", "idle")]
        traffic = [e for e in session_events(capsule_home, session) if e["kind"] == "obs.svc.traffic"]
        assert {e["name"] for e in traffic} == {"used"}  # the open connection counted as use
        assert traffic[-1]["connections"] >= 1
        now = states(capsule, project)
        assert now["quiet"] == ("stopped", "idle")
        assert now["quiet-client"] == ("stopped", "dependency")
        assert now["used"][0] == "ready"
        assert now["api"][0] == "ready"  # no timeout of its own, and the environment has none
    finally:
        client.close()
    # Once nobody holds a connection, `used` idles too; `api` runs on.
    wait_for(lambda: ("used", "idle") in stopped(capsule_home, session), timeout=60)
    now = states(capsule, project)
    assert now["used"] == ("stopped", "idle")
    assert now["api"][0] == "ready"
    assert proc_of(status(capsule, project), "api")["pid"]
    assert capsule("env", "down", str(project)).returncode == 0
    replay = capsule("replay", "--check", str(capsule_home / "runs" / session))
    assert replay.returncode == 0, replay.stdout + replay.stderr
