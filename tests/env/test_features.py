"""Environments, the rest of the spec: traced processes, per-process start errors, logs, env files, two
environments at once. Real processes under a real detached supervisor, loopback only."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest

from tests.conftest import CapsuleRunner
from tests.env.test_supervise import PY, free_port, status, wait_for, write

LOG_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} (stdout|stderr|capsule) .*$")


@pytest.fixture
def roots(tmp_path: Path, capsule: CapsuleRunner) -> Iterator[tuple[Path, Path]]:
    """Two project directories; every environment started from them is brought down afterwards."""
    pair = (tmp_path / "one", tmp_path / "two")
    for root in pair:
        root.mkdir()
    yield pair
    capsule("kill-all", timeout=60)


def proc_of(data: dict, name: str) -> dict:
    return next(p for p in data["processes"] if p["name"] == name)


def session_events(home: Path, session: str) -> list[dict]:
    return [
        orjson.loads(line) for line in (home / "runs" / session / "events.jsonl").read_bytes().splitlines()
    ]


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def gone(procs: list[psutil.Process]) -> bool:
    psutil.wait_procs(procs, timeout=5)
    return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in procs)


def test_traced_process_records_a_child_run_session(
    roots: tuple[Path, Path], capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """trace = true: the service runs under `capsule run --parent`; its tree is in that run session."""
    root = roots[0]
    port = free_port()
    write(
        root,
        f"""
[project]
name = "tr"
[[process]]
name = "web"
command = "sh -c 'ls / >/dev/null; exec {PY} -m http.server {port} --bind 127.0.0.1'"
health_check = "http://127.0.0.1:{port}/"
health_check_interval = "200ms"
trace = true
""",
    )
    done = capsule("env", "up", str(root))
    assert done.returncode == 0, done.stderr
    data = status(capsule, root)
    web = proc_of(data, "web")
    assert web["state"] == "ready"
    run_id = web["trace_session"]
    assert run_id
    started = next(e for e in session_events(capsule_home, data["session"]) if e["kind"] == "svc.started")
    assert started["trace_session"] == run_id
    header = session_events(capsule_home, run_id)[0]
    assert header["session_kind"] == "run"
    assert header["parent"] == data["session"]
    assert header["name"] == "tr.web"
    procs = tree(web["pid"])

    def execs() -> list[list[str]]:
        evs = session_events(capsule_home, run_id)
        return [e["argv"] for e in evs if e["kind"] == "proc.exec" and e.get("errno") is None]

    # the writer flushes at least every second
    wait_for(lambda: any("http.server" in argv for argv in execs()), timeout=5)
    argvs = execs()
    assert any(argv[0] == "ls" for argv in argvs)
    assert any(argv[:1] == ["sh"] for argv in argvs)
    done = capsule("env", "down", str(root))
    assert done.returncode == 0, done.stderr
    assert gone(procs)
    wait_for(lambda: session_events(capsule_home, run_id)[-1]["kind"] == "session.ended", timeout=5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


def test_report_of_an_env_session_shows_its_services(
    roots: tuple[Path, Path], capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """`capsule report` of an env session: each service's state, starts, restarts and last exit, what
    happened to it, and the run session of a traced start (was: an empty process tree)."""
    root = roots[0]
    write(
        root,
        f"""
[project]
name = "rep"
[[process]]
name = "worker"
command = "sh -c 'ls / >/dev/null; exec sleep 300'"
trace = true
[[process]]
name = "crash"
command = "{PY} -c 'raise SystemExit(4)'"
backoff = "100ms"
max_restarts = 2
""",
    )
    capsule("env", "up", str(root))  # exit 1: crash is not up
    wait_for(lambda: proc_of(status(capsule, root), "crash")["state"] == "gave_up", timeout=20)
    data = status(capsule, root)
    session, run_id = data["session"], proc_of(data, "worker")["trace_session"]
    assert run_id
    assert capsule("env", "down", str(root)).returncode == 0
    text = capsule("report", session).stdout
    assert "services" in text
    assert "no processes recorded" not in text
    rows: dict[str, list[str]] = {}  # the services table's rows (the traced starts' come later)
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")]
        rows.setdefault(cells[0], cells)
    assert rows["crash"][1:5] == ["gave_up", "3", "2", "exit 4"], rows["crash"]
    assert rows["worker"][1:4] == ["stopped", "1", "0"], rows["worker"]
    assert rows["worker"][4].startswith("stopped"), rows["worker"]  # the stop's, not a failure
    assert "gave up" in text
    # each restart says what it answers: the exit just before it
    marks = [
        line.split(None, 5)[4:] for line in text.splitlines() if re.match(r"^ +\+ +[\d.]+ m?s +crash ", line)
    ]
    assert [m[0] for m in marks] == ["exited", "restart", "exited", "restart", "exited", "gave"], text
    assert marks[0][1].startswith("exit 4 after "), marks
    assert run_id in text
    report = orjson.loads(capsule("report", session, "--json").stdout)
    assert report["session"]["kind"] == "env"
    assert report["session"]["outcome"] == "down"
    assert {"processes", "summary", "files", "network"} <= set(report)  # every report's keys stay
    services = {s["name"]: s for s in report["services"]}
    assert services["crash"]["state"] == "gave_up"
    assert services["crash"]["failed"] is True
    assert [r["exit_code"] for r in services["crash"]["runs"]] == [4, 4, 4]
    (run,) = services["worker"]["runs"]
    assert run["trace_session"] == run_id
    assert run["outcome"] == "stopped"
    assert run["processes"] >= 2  # sh and ls, in the traced start's own session
    # sleep died of the SIGTERM of `env down`: stopped, as its start was, not failed
    assert (run["failed"], run["stopped"]) == (0, 1), run
    assert re.search(rf"^ worker +│ +1 │ {run_id} │ +\d+ │ +0 │ +1$", text, re.M), text
    # and its own run session agrees: stopped by the supervisor, not a failure (was: failures table)
    child = capsule("report", run_id).stdout
    assert re.search(r"^status +complete · SIGTERM · stopped by supervisor \(\d+\)$", child, re.M), child
    assert "failures" not in child, child
    processes = orjson.loads(capsule("report", run_id, "--json").stdout)["processes"]
    sleep = next(p for p in processes if p["argv"] == ["sleep", "300"])
    assert (sleep["signal"], sleep["stopped"], sleep["failure"]) == ("SIGTERM", True, False), sleep
    # so does its recorder's count in session.ended, which `capsule ls` shows (was: 1 failed)
    (row,) = [r for r in orjson.loads(capsule("ls", "--all", "--json").stdout) if r["id"] == run_id]
    assert row["failed"] == 0, row


def test_report_of_a_live_env_says_running_and_of_a_dead_supervisor_interrupted(
    roots: tuple[Path, Path], capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """The report of an env session with no end asks whether its supervisor lives, as `env status`
    does (was: "running, or its supervisor died", whichever it was)."""
    root = roots[0]
    write(root, '[project]\nname = "live"\n[[process]]\nname = "a"\ncommand = "sleep 600"\n')
    assert capsule("env", "up", str(root)).returncode == 0
    data = status(capsule, root)
    session = data["session"]
    text = capsule("report", session).stdout
    assert re.search(r"^outcome +running$", text, re.M), text
    first, again = (orjson.loads(capsule("report", session, "--json").stdout) for _ in range(2))
    assert first["session"]["outcome"] == "running"
    ups = [report["services"][0]["up_s"] for report in (first, again)]
    assert ups[1] > ups[0], ups  # up till now, not till its last event (no event came between them)
    os.kill(data["supervisor"]["pid"], signal.SIGKILL)
    wait_for(lambda: not status(capsule, root)["supervisor"]["alive"])
    text = capsule("report", session).stdout
    assert re.search(r"^outcome +interrupted: its supervisor died", text, re.M), text
    done = capsule("report", session, "--json")  # was: a traceback, recovering a trace it never had
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["session"]["outcome"] == "interrupted"
    assert capsule("env", "down", str(root)).returncode == 0  # stops what the dead supervisor left
    text = capsule("report", session).stdout
    assert re.search(r"^outcome +recovered: its supervisor died", text, re.M), text
    (row,) = [r for r in orjson.loads(capsule("ls", "--json").stdout) if r["id"] == session]
    assert (row["status"], row["duration_s"]) == ("recovered", None)  # was: complete, 0 s
    # its services were not traced: no process count, rather than a 0 that reads "nothing ran"
    (line,) = [line for line in capsule("ls").stdout.splitlines() if line.startswith(session)]
    assert line.endswith(" recovered"), line
    assert not re.search(r" 0 +recovered$", line), line


def test_port_in_use_and_missing_working_dir_are_per_process_errors(
    roots: tuple[Path, Path], capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """A taken port and a missing working_dir: a clear error in status and logs; the rest stays ready."""
    root = roots[0]
    taken, taken2, ok = free_port(), free_port(), free_port()
    holders = []
    for port in (taken, taken2):
        holder = socket.socket()
        holder.bind(("127.0.0.1", port))
        holder.listen()
        holders.append(holder)
    try:
        write(
            root,
            f"""
[[process]]
name = "good"
command = "{PY} -m http.server {ok} --bind 127.0.0.1"
health_check = "http://127.0.0.1:{ok}/"
health_check_interval = "200ms"
[[process]]
name = "clash"
command = "{PY} -m http.server {taken} --bind 127.0.0.1"
health_check = "http://127.0.0.1:{taken}/"
[[process]]
name = "clash-unchecked"
command = "{PY} -m http.server {taken2} --bind 127.0.0.1"
backoff = "50ms"
max_restarts = 2
[[process]]
name = "nowhere"
command = "sleep 300"
working_dir = "no/such/dir"
""",
        )
        done = capsule("env", "up", str(root))
        assert done.returncode == 1
        assert "clash" in done.stderr
        assert "nowhere" in done.stderr
        wait_for(lambda: proc_of(status(capsule, root), "clash-unchecked")["state"] == "gave_up")
        data = status(capsule, root)
        assert proc_of(data, "good")["state"] == "ready"
        clash = proc_of(data, "clash")
        assert clash["state"] == "gave_up"
        assert f"port {taken} already in use" in clash["error"]
        # without a health check the port is unknown: the error carries the process's own last words
        unchecked = proc_of(data, "clash-unchecked")
        assert "Address already in use" in unchecked["error"]
        nowhere = proc_of(data, "nowhere")
        assert nowhere["state"] == "gave_up"
        assert "working_dir 'no/such/dir': no such directory" in nowhere["error"]
        for name, text in (("clash", "already in use"), ("nowhere", "no such directory")):
            log = capsule("logs", name, "-n", "5")
            assert log.returncode == 0, log.stderr
            assert f" capsule error: {'port' if name == 'clash' else 'working_dir'}" in log.stdout
            assert text in log.stdout
        assert "Address already in use" in capsule("logs", "clash-unchecked", "-n", "20").stdout
    finally:
        for holder in holders:
            holder.close()


TICKER = """
import sys, time
for i in range(400):
    print(f"out {i:04d} " + "x" * 40, flush=True)
    print(f"err {i:04d}", file=sys.stderr, flush=True)
i = 0
while True:
    i += 1
    print(f"tick {i}", flush=True)
    print(f"tock {i}", file=sys.stderr, flush=True)
    time.sleep(0.05)
"""


def test_logs_rotate_tail_and_follow(
    roots: tuple[Path, Path], capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """Logs rotate by size; `logs -n` prints timestamp, stream, text; `logs -f` follows new lines."""
    root = roots[0]
    (root / "ticker.py").write_text(TICKER)
    write(root, f'[project]\nlog_max_bytes = 4000\n[[process]]\nname = "tick"\ncommand = "{PY} ticker.py"\n')
    assert capsule("env", "up", str(root)).returncode == 0
    session = status(capsule, root)["session"]
    logs = capsule_home / "runs" / session / "logs"
    wait_for(lambda: b" stdout tick " in (logs / "tick.log").read_bytes(), timeout=10)  # past the burst
    old = logs / "tick.log.1"
    assert old.is_file()
    assert old.stat().st_size <= 4000
    assert (logs / "tick.log").stat().st_size <= 4000
    assert oct(old.stat().st_mode & 0o777) == "0o600"
    done = capsule("logs", "tick", "-n", "4")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.encode().splitlines()
    assert len(lines) == 4
    for line in lines:
        assert LOG_LINE.match(line), line
    assert {line.split(b" ", 2)[1] for line in lines} == {b"stdout", b"stderr"}
    assert any(line.split(b" ", 2)[2].startswith(b"tick ") for line in lines)
    # `env logs DIR NAME`, as `env up DIR` takes the project, from a directory that is not it
    elsewhere = capsule("env", "logs", str(root), "tick", "-n", "2", cwd=str(capsule_home.parent))
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert len(elsewhere.stdout.splitlines()) == 2
    other = capsule("env", "logs", str(roots[1]), "tick")  # the project given is the one asked
    assert other.returncode == 3, other
    twice = capsule("env", "logs", str(root), "tick", "--env", str(root))
    assert twice.returncode == 2, twice
    assert "give the project once" in twice.stderr
    many = capsule("logs", "tick", "-n", "1000").stdout.encode().splitlines()
    streams = {line.split(b" ", 2)[1] for line in many}
    assert {b"stdout", b"stderr"} <= streams
    assert all(LOG_LINE.match(line) for line in many)

    follow = subprocess.Popen(
        [sys.executable, "-m", "capsule", "logs", "tick", "-f", "-n", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "CAPSULE_HOME": str(capsule_home)},
    )
    try:
        assert follow.stdout is not None
        got: list[bytes] = []
        buf = b""
        sel = selectors.DefaultSelector()
        sel.register(follow.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 10
        # ten lines, five of them stdout's (the two streams' lines arrive in any mix: 4 ticks in 10 seen)
        while (len(got) < 10 or sum(b" stdout tick " in g for g in got) < 5) and time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                chunk = os.read(follow.stdout.fileno(), 65536)
                assert chunk, "logs -f exited"
                buf += chunk
                *complete, buf = buf.split(b"\n")
                got += complete
        sel.close()
    finally:
        follow.terminate()
        follow.wait(timeout=5)
        if follow.stdout is not None:
            follow.stdout.close()
    assert len(got) >= 10
    ticks = [int(line.rsplit(b" ", 1)[1]) for line in got if b" stdout tick " in line]
    assert len(ticks) >= 5
    assert ticks == sorted(ticks)
    assert ticks[-1] > ticks[0]  # lines written after `-f` started arrived
    assert all(LOG_LINE.match(line) for line in got)


def test_env_files_shell_and_cmd_health_check(
    roots: tuple[Path, Path], capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """Project and process env files reach the process (process level wins, then `env`); shell = true; cmd: check."""
    root = roots[0]
    (root / "svc").mkdir()
    (root / ".env").write_text("A=project\nB=project\n")
    (root / "svc" / "web.env").write_text("# the process's own\nB=process\nC=process\n")
    write(
        root,
        """
[project]
env_file = ".env"
[[process]]
name = "sh"
shell = true
working_dir = "svc"
env_file = "web.env"
env = { C = "inline" }
command = "echo \\"A=$A B=$B C=$C\\" | tr a-z A-Z > seen.txt; sleep 0.3; touch ok; exec sleep 300"
health_check = "cmd:test -f ok"
health_check_interval = "100ms"
""",
    )
    done = capsule("env", "up", str(root))
    assert done.returncode == 0, done.stderr
    data = status(capsule, root)
    sh = proc_of(data, "sh")
    assert sh["state"] == "ready"
    assert sh["health"] == "ok"
    assert (root / "svc" / "seen.txt").read_text() == "A=PROJECT B=PROCESS C=INLINE\n"
    starting = next(e for e in session_events(capsule_home, data["session"]) if e["kind"] == "svc.starting")
    assert starting["argv"][:2] == ["/bin/sh", "-c"]


def test_secret_values_reach_the_process_but_not_the_session(
    roots: tuple[Path, Path], capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """The session keeps the config masked, yet the process gets the real env value, argument and
    health check (the supervisor starts and probes from the live config, the machine from the recorded)."""
    root = roots[0]
    token = "sk-planted-4b8e2d1c9a7f6e5d3c2b1a09"  # noqa: S105 - planted on purpose
    write(
        root,
        f"""
[[process]]
name = "svc"
env = {{ API_TOKEN = "{token}" }}
command = '''sh -c 'echo "$API_TOKEN $1" > seen.txt; exec sleep 300' sh --api-key={token}'''
health_check = "cmd:grep -q {token} seen.txt"
health_check_interval = "100ms"
""",
    )
    done = capsule("env", "up", str(root))
    assert done.returncode == 0, done.stderr
    svc = proc_of(status(capsule, root), "svc")
    assert (svc["state"], svc["health"]) == ("ready", "ok")
    assert (root / "seen.txt").read_text() == f"{token} --api-key={token}\n"
    assert capsule("env", "down", str(root)).returncode == 0
    for path in (capsule_home / "runs").rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_two_environments_ls_ps_and_kill_all(roots: tuple[Path, Path], capsule: CapsuleRunner) -> None:
    """`env ls --json` and `ps --json` list both environments; kill-all leaves no survivor."""
    for i, root in enumerate(roots):
        write(
            root,
            f'[project]\nname = "p{i}"\n[[process]]\nname = "a"\ncommand = "sh -c \'sleep 300 & sleep 300\'"\n'
            '[[process]]\nname = "b"\ncommand = "sleep 300"\n',
        )
        done = capsule("env", "up", str(root))
        assert done.returncode == 0, done.stderr
    listed = orjson.loads(capsule("env", "ls", "--json").stdout)
    envs = {e["project"]: e for e in listed["environments"]}
    assert set(envs) == {"p0", "p1"}
    for i, root in enumerate(roots):
        e = envs[f"p{i}"]
        assert set(e) >= {"session", "project", "config", "state", "supervisor", "processes", "started"}
        assert e["state"] == "up"
        assert e["config"] == str((root / "capsule.toml").resolve())
        assert e["processes"] == 2
        assert e["supervisor"]["alive"] is True
        assert psutil.pid_exists(e["supervisor"]["pid"])
        supervisor = psutil.Process(e["supervisor"]["pid"])
        assert " ".join(supervisor.cmdline()).strip() == f"capsule: supervisor p{i}"  # setproctitle
    rows = orjson.loads(capsule("ps", "--json").stdout)["processes"]
    assert sorted((r["project"], r["name"]) for r in rows) == [
        ("p0", "a"),
        ("p0", "b"),
        ("p1", "a"),
        ("p1", "b"),
    ]
    for r in rows:
        assert set(r) >= {
            "project",
            "session",
            "supervisor_alive",
            "name",
            "state",
            "pid",
            "restarts",
            "health",
        }
        assert r["state"] == "running"
        assert r["supervisor_alive"] is True
        assert r["session"] == envs[r["project"]]["session"]
    procs = [p for r in rows for p in tree(r["pid"])]
    procs += [psutil.Process(e["supervisor"]["pid"]) for e in envs.values()]
    assert len(procs) >= 8  # per environment: a (sh and two sleeps), b, the supervisor
    done = capsule("kill-all", timeout=60)
    assert done.returncode == 0, done.stderr
    assert gone(procs)
    after = orjson.loads(capsule("env", "ls", "--json").stdout)["environments"]
    assert [e["state"] for e in after] == ["down", "down"]
    assert orjson.loads(capsule("ps", "--json").stdout)["processes"] == []
