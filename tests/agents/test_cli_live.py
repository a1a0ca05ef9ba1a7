"""`capsule agents` commands against a live scheduler: kill, logs -f, ps, result, and the terminal views
(run's live table, top) under a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import psutil
import pytest

from tests.agents.conftest import of, session_events

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


@pytest.fixture
def scheduler(capsule_home: Path, tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Start `capsule agents run` on a plan in the background; killed with its tasks after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(plan: str) -> subprocess.Popen[bytes]:
        path = tmp_path / "plan.toml"
        path.write_text(plan)
        env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "capsule", "agents", "run", str(path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def wait_running(capsule, *tasks: str, timeout: float = 15) -> list[dict]:
    """`agents ps --json` once every named task is listed."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = capsule("agents", "ps", "--json")
        rows = orjson.loads(done.stdout) if done.returncode == 0 else []
        if {r["task"] for r in rows} >= set(tasks):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"tasks {tasks} never ran")


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_ps_logs_kill_and_result_against_a_live_run(
    capsule, capsule_home: Path, scheduler, tmp_path: Path
) -> None:
    """ps lists the running task; logs -f follows it; kill ends its whole tree as `killed`; result says so."""
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $! > {pids}; for i in 1 2 3 4 5 6; do echo line$i; sleep 0.2; done; wait"
    proc = scheduler(f'[[task]]\nid = "work"\ncommand = "{script}"\n')
    rows = wait_running(capsule, "work")
    row = rows[0]
    assert row["pid"] > 0
    assert {"cpu_s", "rss", "elapsed_s", "attempt"} <= set(row)
    assert row["rss"] > 0
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home)}
    follower = subprocess.Popen(
        [sys.executable, "-m", "capsule", "agents", "logs", "work", "-f"], env=env, stdout=subprocess.PIPE
    )
    try:
        assert follower.stdout is not None
        seen = []
        deadline = time.time() + 10
        while "line6" not in seen and time.time() < deadline:
            line = follower.stdout.readline().decode().strip()
            seen.append(line)
        assert [s for s in seen if s.startswith("line")] == [f"line{i}" for i in range(1, 7)]
    finally:
        follower.terminate()
        follower.wait(5)
        if follower.stdout is not None:
            follower.stdout.close()
    child = int(pids.read_text())
    done = capsule("agents", "kill", "work", "--grace", "1")
    assert done.returncode == 0, done.stderr
    assert proc.wait(15) == 1
    assert dead(row["pid"])
    assert dead(child)
    events = session_events(capsule_home)
    assert of(events, "task.failed", "work")[0]["outcome"] == "killed"
    result = orjson.loads(capsule("agents", "result", "work", "--json").stdout)
    assert result["state"] == "killed"
    assert result["attempts"][0]["pid"] == row["pid"]
    assert capsule("agents", "result", "nope").returncode == 3


def test_kill_all(capsule, capsule_home: Path, scheduler) -> None:
    """kill --all ends every running task; the run finishes with both `killed`."""
    proc = scheduler('[[task]]\nid = "a"\ncommand = "sleep 30"\n[[task]]\nid = "b"\ncommand = "sleep 30"\n')
    rows = wait_running(capsule, "a", "b")
    done = capsule("agents", "kill", "--all", "--grace", "1")
    assert done.returncode == 0, done.stderr
    assert proc.wait(15) == 1
    assert all(dead(r["pid"]) for r in rows)
    status = orjson.loads(capsule("agents", "status", "--json").stdout)
    assert {t["id"]: t["state"] for t in status["tasks"]} == {"a": "killed", "b": "killed"}
    assert capsule("agents", "kill", "--all").returncode == 3


def pty_run(
    argv: list[str], env: dict[str, str], *, until: bytes | None = None, timeout: float = 20
) -> tuple[bytes, int]:
    """Run argv on a pseudo-terminal; read until it exits (or `until` shows, then SIGINT it)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, nothing else
        os.execve(argv[0], argv, env)  # noqa: S606 - the test's own fixed argv, no shell wanted
    out = b""
    status = None
    interrupted = False
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if until is not None and not interrupted and until in ANSI.sub(b"", out):
                time.sleep(0.3)
                os.kill(pid, signal.SIGINT)
                interrupted = True
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    break
                out += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    return out, os.waitstatus_to_exitcode(status)


def test_run_on_a_terminal_shows_the_live_table(capsule_home: Path, tmp_path: Path) -> None:
    """On a TTY, `agents run` draws the live table and its final screen holds every task's state."""
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[[task]]\nid = "fine"\ncommand = "sleep 0.5"\n'
        '[[task]]\nid = "broken"\ncommand = "exit 3"\n'
        '[[task]]\nid = "after"\ncommand = "true"\ndepends_on = ["broken"]\n'
    )
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
    env.pop("CAPSULE_PLAIN", None)
    out, code = pty_run([sys.executable, "-m", "capsule", "agents", "run", str(plan)], env)
    text = ANSI.sub(b"", out).decode(errors="replace")
    assert code == 1
    assert "Traceback" not in text
    final = text[text.rindex("task") :]  # the last table drawn
    for task, state in (("fine", "succeeded"), ("broken", "failed"), ("after", "skipped")):
        assert re.search(rf"{task}\s+{state}", final), final


def test_top_on_a_terminal_shows_the_running_task_and_ends_on_sigint(
    capsule, capsule_home: Path, scheduler
) -> None:
    """`agents top` shows the running task and ends on SIGINT with no traceback."""
    proc = scheduler('[[task]]\nid = "toptask"\ncommand = "sleep 30"\n')
    wait_running(capsule, "toptask")
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
    out, code = pty_run(
        [sys.executable, "-m", "capsule", "agents", "top", "-n", "0.2"], env, until=b"toptask", timeout=15
    )
    text = ANSI.sub(b"", out).decode(errors="replace")
    assert "toptask" in text
    assert "Traceback" not in text
    assert "KeyboardInterrupt" not in text
    assert code == 0
    assert capsule("agents", "kill", "--all", "--grace", "0.5").returncode == 0
    assert proc.wait(15) == 1


class PtyReader:
    """A command on a pseudo-terminal, read as it draws: `until(pattern)` waits for it on the screen text."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec at once, nothing else
            os.execve(argv[0], argv, env)  # noqa: S606 - the test's own fixed argv, no shell wanted
        self.out = b""
        self.closed = False
        self.status: int | None = None

    @property
    def text(self) -> str:
        return ANSI.sub(b"", self.out).decode(errors="replace")

    def _read(self, wait: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], wait)
        if ready:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            self.out += chunk
            self.closed = not chunk

    def until(self, pattern: str, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while not re.search(pattern, self.text):
            assert not self.closed, f"ended before {pattern!r}: {self.text[-2000:]}"
            assert time.time() < deadline, f"never drew {pattern!r}: {self.text[-2000:]}"
            self._read(0.1)

    def wait(self, timeout: float = 30) -> int:
        """Read to the end; its exit code (it must end by itself)."""
        deadline = time.time() + timeout
        while not self.closed:
            assert time.time() < deadline, f"still running: {self.text[-2000:]}"
            self._read(0.1)
        _, status = os.waitpid(self.pid, 0)
        self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def close(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def test_status_watch_redraws_a_live_detached_run_and_ends_with_it(
    capsule, capsule_home: Path, tmp_path: Path
) -> None:
    """`agents status RUN --watch` on a running detached run redraws as tasks end (0, 25, 50, 75 %: each
    task is let go by a file once the previous figure is on the screen) and ends by itself, exit 0, with
    the run's final state once the last task ended."""
    gates = [tmp_path / f"go{i}" for i in range(4)]
    plan = tmp_path / "plan.toml"
    plan.write_text(
        "[run]\nparallel = 4\n"
        + "".join(
            f'[[task]]\nid = "t{i}"\ncommand = "while [ ! -e {g} ]; do sleep 0.02; done"\n'
            for i, g in enumerate(gates)
        )
    )
    started = capsule("agents", "run", str(plan), "--detach")
    assert started.returncode == 0, started.stderr
    run = started.stdout.strip()
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
    watcher = PtyReader([sys.executable, "-m", "capsule", "agents", "status", run, "--watch"], env)
    try:
        watcher.until(rf"{run} · running · 0%")
        for gate, percent in zip(gates[:3], (25, 50, 75), strict=True):
            gate.touch()
            watcher.until(rf"{run} · running · {percent}%")
        gates[3].touch()
        assert watcher.wait() == 0
        drawn = re.findall(rf"{run} · (\w+) · (\d+)%", watcher.text)
        assert drawn[-1] == ("succeeded", "100")  # the last screen: the run as it ended
        assert "Traceback" not in watcher.text
    finally:
        for gate in gates:
            gate.touch()  # a failed test must not leave the tasks' loops behind
        watcher.close()
    assert capsule("agents", "wait", run, timeout=60).returncode == 0
