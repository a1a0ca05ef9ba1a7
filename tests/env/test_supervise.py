"""Environments end to end: real processes under a real detached supervisor, loopback only."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest

from tests.conftest import CapsuleRunner

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def events(capsule_home: Path) -> list[dict]:
    (session,) = [p for p in (capsule_home / "runs").iterdir() if (p / "logs").is_dir()]
    return [orjson.loads(line) for line in (session / "events.jsonl").read_bytes().splitlines()]


def status(capsule: CapsuleRunner, project: Path) -> dict:
    done = capsule("env", "status", str(project), "--json")
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def all_pids(data: dict) -> list[int]:
    return [p["pid"] for p in data["processes"] if p["pid"]]


@pytest.fixture
def project(tmp_path: Path, capsule: CapsuleRunner) -> Iterator[Path]:
    """A project directory; every environment started from it is brought down afterwards."""
    root = tmp_path / "project"
    root.mkdir()
    yield root
    capsule("kill-all", timeout=60)


def write(root: Path, text: str) -> None:
    (root / "capsule.toml").write_text(text)


TCP_SERVER = (
    "import socket,sys;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
    "s.bind(('127.0.0.1',int(sys.argv[1])));s.listen()\\nwhile True: s.accept()[0].close()"
)


def test_full_environment_up_and_down(project: Path, capsule: CapsuleRunner) -> None:
    """http + dependent tcp service ready in order, a crash loop gives up, down kills stubborn and forked trees."""
    web, tcp, closed = free_port(), free_port(), free_port()
    (project / "tcp.py").write_text(TCP_SERVER.replace("\\n", "\n"))
    write(
        project,
        f"""
[project]
name = "full"
[[process]]
name = "web"
command = "{PY} -m http.server {web} --bind 127.0.0.1"
health_check = "http://127.0.0.1:{web}/"
health_check_interval = "200ms"
[[process]]
name = "tcp"
command = "{PY} tcp.py {tcp}"
depends_on = ["web"]
health_check = "tcp://127.0.0.1:{tcp}"
[[process]]
name = "crash"
command = "sh -c 'echo dying >&2; exit 3'"
health_check = "tcp://127.0.0.1:{closed}"
backoff = "50ms"
max_restarts = 3
restart_window = "30s"
[[process]]
name = "stubborn"
command = "sh -c 'trap \\"\\" TERM; while true; do sleep 0.1; done'"
stop_timeout = "1s"
[[process]]
name = "forker"
command = "sh -c 'sleep 300 & sleep 300 & sh -c \\"sleep 300 & wait\\" & wait'"
""",
    )
    done = capsule("env", "up", str(project))
    # crash never comes up: its health check never passes (without one a process is up while it runs,
    # and `env up` could answer in that moment)
    assert done.returncode == 1, done.stderr
    assert "crash" in done.stderr
    wait_for(
        lambda: {p["name"]: p["state"] for p in status(capsule, project)["processes"]}["crash"] == "gave_up"
    )
    data = status(capsule, project)
    states = {p["name"]: p["state"] for p in data["processes"]}
    assert states == {
        "web": "ready",
        "tcp": "ready",
        "crash": "gave_up",
        "stubborn": "running",
        "forker": "running",
    }
    assert data["supervisor"]["alive"]
    crash = next(p for p in data["processes"] if p["name"] == "crash")
    assert crash["restarts"] == 3
    assert crash["exit_code"] == 3
    log = capsule("logs", "crash", "-n", "3")
    assert " stderr dying" in log.stdout
    # dependency order from event timestamps: tcp starts after web is ready
    evs = events(Path(os.environ["CAPSULE_HOME"]))
    web_ready = next(e["ts"] for e in evs if e["kind"] == "svc.ready" and e["name"] == "web")
    tcp_starting = next(e["ts"] for e in evs if e["kind"] == "svc.starting" and e["name"] == "tcp")
    assert web_ready <= tcp_starting
    forker = next(p for p in data["processes"] if p["name"] == "forker")
    tree = [psutil.Process(forker["pid"]), *psutil.Process(forker["pid"]).children(recursive=True)]
    assert len(tree) >= 5
    pids = all_pids(data)
    started = time.monotonic()
    done = capsule("env", "down", str(project))
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 1.0  # stubborn waited out its stop_timeout
    for proc in tree + [psutil.Process(p) for p in pids if psutil.pid_exists(p)]:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    evs = events(Path(os.environ["CAPSULE_HOME"]))
    stopped = {e["name"]: e for e in evs if e["kind"] == "svc.stopped"}
    assert stopped["stubborn"]["killed"] is True
    assert stopped["web"]["killed"] is False
    order = [e["name"] for e in evs if e["kind"] == "svc.stopped"]
    assert order.index("tcp") < order.index("web")  # reverse dependency order
    assert evs[-2]["kind"] == "env.deactivated"
    assert evs[-1]["kind"] == "session.ended"
    assert status(capsule, project)["supervisor"]["alive"] is False


def test_sigkilled_supervisor_then_status_and_down(
    project: Path, capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """With the supervisor SIGKILLed, status says so, marks a dead pid lost and removes its ctl.sock; down
    leaves no survivor."""
    write(
        project,
        """
[[process]]
name = "a"
command = "sh -c 'sleep 300 & sleep 300'"
[[process]]
name = "b"
command = "sleep 300"
""",
    )
    assert capsule("env", "up", str(project)).returncode == 0
    data = status(capsule, project)
    a, b = (next(p for p in data["processes"] if p["name"] == n) for n in "ab")
    tree = [
        psutil.Process(a["pid"]),
        *psutil.Process(a["pid"]).children(recursive=True),
        psutil.Process(b["pid"]),
    ]
    os.kill(data["supervisor"]["pid"], signal.SIGKILL)
    os.kill(b["pid"], signal.SIGKILL)
    wait_for(lambda: not status(capsule, project)["supervisor"]["alive"])
    data = status(capsule, project)
    states = {p["name"]: p["state"] for p in data["processes"]}
    assert states == {"a": "running", "b": "lost"}
    assert not (capsule_home / "runs" / data["session"] / "ctl.sock").exists()  # nothing answers on it
    human = capsule("env", "status", str(project))
    assert "is dead" in human.stdout
    done = capsule("env", "down", str(project))
    assert done.returncode == 0, done.stderr
    assert "supervisor dead" in done.stdout
    psutil.wait_procs(tree, timeout=5)
    for proc in tree:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


def test_inactivity_stops_the_environment(project: Path, capsule: CapsuleRunner) -> None:
    """Without a CLI touch for inactivity_timeout, the environment stops and records why."""
    write(project, '[project]\ninactivity_timeout = "1s"\n[[process]]\nname = "a"\ncommand = "sleep 300"\n')
    assert capsule("env", "up", str(project)).returncode == 0
    home = Path(os.environ["CAPSULE_HOME"])
    # poll the session itself: `env status` is an interaction and would keep the environment awake
    wait_for(lambda: "session.ended" in [e["kind"] for e in events(home)], timeout=20)
    assert status(capsule, project)["deactivated"] == "idle"
    kinds = [e["kind"] for e in events(Path(os.environ["CAPSULE_HOME"]))]
    assert kinds.index("env.idle") < kinds.index("env.deactivated")
    stopped = [e for e in events(Path(os.environ["CAPSULE_HOME"])) if e["kind"] == "svc.stopped"]
    assert stopped[0]["reason"] == "idle"


def test_stop_start_restart_and_missing_command(project: Path, capsule: CapsuleRunner) -> None:
    """A missing command is a per-process error; stop/start/restart act on one process."""
    write(
        project,
        '[[process]]\nname = "a"\ncommand = "sleep 300"\n[[process]]\nname = "ghost"\ncommand = "no-such-cmd-xyz"\n',
    )
    done = capsule("env", "up", str(project))
    assert done.returncode == 1
    data = status(capsule, project)
    ghost = next(p for p in data["processes"] if p["name"] == "ghost")
    assert ghost["state"] == "gave_up"
    assert "command not found" in ghost["error"]
    first = next(p["pid"] for p in data["processes"] if p["name"] == "a")
    assert capsule("stop", "a", "--env", str(project)).returncode == 0
    assert next(p for p in status(capsule, project)["processes"] if p["name"] == "a")["state"] == "stopped"
    assert capsule("start", "a").returncode == 0
    assert capsule("restart", "a").returncode == 0
    a = next(p for p in status(capsule, project)["processes"] if p["name"] == "a")
    assert a["state"] == "running"
    assert a["pid"] != first
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    assert capsule("stop", "nope").returncode == 3


def test_bad_config_is_one_line_exit_4(project: Path, capsule: CapsuleRunner) -> None:
    """A broken capsule.toml: one line naming file, process and field; exit 4."""
    write(project, '[[process]]\nname = "a"\ncommand = "x"\nbackoff = "soon"\n')
    done = capsule("env", "up", str(project))
    assert done.returncode == 4
    assert done.stderr.count("\n") == 1
    assert "capsule.toml: process 'a': backoff: not a duration" in done.stderr
    assert capsule("env", "status", str(project / "nowhere")).returncode == 3
