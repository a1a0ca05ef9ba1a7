"""Coming from Runcept: its `.runcept.toml` as written, stand-ins for postgres/redis/celery on loopback ports,
reload on `env up`, restart on unhealthy, dependency-aware stop and restart. Real processes, a real
detached supervisor, loopback only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from dotenv import dotenv_values

from tests.conftest import CapsuleRunner
from tests.env.test_features import proc_of, session_events
from tests.env.test_supervise import PY, TCP_SERVER, free_port, status, wait_for

# An HTTP server that answers its first `limit` requests, then hangs (a service that stops answering).
HANGING = """
import http.server, sys, time
limit = int(sys.argv[2]); seen = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global seen
        seen += 1
        if seen > limit:
            time.sleep(3600)
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

# celery's stand-in: writes the environment it got, then works forever
WORKER = """
import json, os, sys, time
json.dump(dict(os.environ), open(sys.argv[1], "w"))
while True: time.sleep(1)
"""

ENV_LINES = [  # the common shapes of a .env line (python-dotenv is the reference)
    "PLAIN=value",
    "export EXPORTED=yes",
    "COMMENTED=kept # an inline comment",
    'ESCAPED="line one\\nline two"',
    "SINGLE='no ${EXPANSION} here'",
    'EXPANDED="${PLAIN}-and-more"',
    'MULTI="first\nsecond"',
    "SPACED = around the equals ",
    "EMPTY=",
    "# a whole-line comment",
    'HASH_IN_QUOTES="a # not a comment"',
]


@pytest.fixture
def project(tmp_path: Path, capsule: CapsuleRunner) -> Iterator[Path]:
    root = tmp_path / "shop"
    root.mkdir()
    (root / "tcp.py").write_text(TCP_SERVER.replace("\\n", "\n"))
    (root / "hang.py").write_text(HANGING)
    (root / "worker.py").write_text(WORKER)
    yield root
    capsule("env", "kill-all", timeout=60)


def up(capsule: CapsuleRunner, where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return capsule("env", "up", *args, cwd=where)


def runcept(pg: int, redis: int, web: int) -> str:
    return f"""
[project]
name = "shop"
description = "A Runcept example: a web app on postgres and redis, with a worker"
inactivity_timeout = "30m"
working_dir = "."

[[process]]
name = "postgres"
command = "{PY} tcp.py {pg}"
health_check = "tcp://127.0.0.1:{pg}"
health_check_interval = 0.2
auto_restart = true

[[process]]
name = "redis"
command = "{PY} tcp.py {redis}"
health_check = "tcp://127.0.0.1:{redis}"
health_check_interval = 0.2

[[process]]
name = "web"
command = "{PY} -m http.server {web} --bind 127.0.0.1"
working_dir = "."
health_check = "http://127.0.0.1:{web}/"
health_check_interval = 0.2
depends_on = ["postgres", "redis"]
env = {{ APP_ENV = "dev" }}

[[process]]
name = "celery"
command = "{PY} worker.py celery-env.json"
env_file = ".env"
env = {{ CELERY_QUEUE = "default" }}
depends_on = ["redis"]
auto_restart = false
"""


def first(evs: list[dict], kind: str, name: str) -> dict:
    return next(e for e in evs if e["kind"] == kind and e.get("name") == name)


def test_runcept_example_comes_up_in_dependency_order_from_a_subfolder(
    project: Path, capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """.runcept.toml as written comes up from a subfolder; web starts after postgres and redis are ready;
    the worker's env_file reads as python-dotenv reads it."""
    pg, redis, web = free_port(), free_port(), free_port()
    (project / ".runcept.toml").write_text(runcept(pg, redis, web))
    (project / ".env").write_text("\n".join(ENV_LINES) + "\n")
    sub = project / "src" / "app"
    sub.mkdir(parents=True)
    done = up(capsule, sub)
    assert done.returncode == 0, done.stderr
    data = status(capsule, project)
    assert data["config"] == str(project / ".runcept.toml")
    assert {p["name"]: p["state"] for p in data["processes"]} == {
        "postgres": "ready", "redis": "ready", "web": "ready", "celery": "running",
    }  # fmt: skip
    evs = session_events(capsule_home, data["session"])
    web_starting = first(evs, "svc.starting", "web")["seq"]
    assert first(evs, "svc.ready", "postgres")["seq"] < web_starting
    assert first(evs, "svc.ready", "redis")["seq"] < web_starting
    assert first(evs, "svc.ready", "redis")["seq"] < first(evs, "svc.starting", "celery")["seq"]
    wait_for(lambda: (project / "celery-env.json").is_file() and (project / "celery-env.json").stat().st_size)
    got = json.loads((project / "celery-env.json").read_text())
    wanted = dotenv_values(project / ".env")
    assert {k: got.get(k) for k in wanted if wanted[k] is not None} == {
        k: v for k, v in wanted.items() if v is not None
    }
    assert got["CELERY_QUEUE"] == "default"
    # the same from the status of a subfolder: found upward as well
    assert status(capsule, sub)["session"] == data["session"]


def test_dotenv_parity_line_by_line(tmp_path: Path) -> None:
    """Each common .env line reads exactly as python-dotenv reads it (the supervisor's reader)."""
    from capsule.stages.envio import env_file_values

    for line in ENV_LINES:
        path = tmp_path / "one.env"
        path.write_text(f"PLAIN=value\n{line}\n")
        want = {k: v for k, v in dotenv_values(path).items() if v is not None}
        assert env_file_values(path.read_text()) == want, line


def test_reload_keeps_unchanged_pids_and_says_what_changed(project: Path, capsule: CapsuleRunner) -> None:
    """`env up` of a changed config: added starts, removed stops, changed restarts, the rest keep their pid."""
    pg, redis, web = free_port(), free_port(), free_port()
    config = project / ".runcept.toml"
    config.write_text(runcept(pg, redis, web))
    (project / ".env").write_text("PLAIN=1\n")
    assert up(capsule, project).returncode == 0
    before = {p["name"]: p["pid"] for p in status(capsule, project)["processes"]}
    web2, extra = free_port(), free_port()
    # web moves to another port; celery goes; cache comes
    text = runcept(pg, redis, web2).split('[[process]]\nname = "celery"')[0] + (
        f'[[process]]\nname = "cache"\ncommand = "{PY} tcp.py {extra}"\n'
        f'health_check = "tcp://127.0.0.1:{extra}"\nhealth_check_interval = 0.2\n'
    )
    config.write_text(text)
    done = up(capsule, project)
    assert done.returncode == 0, done.stderr
    assert "added cache" in done.stderr
    assert "removed celery" in done.stderr
    assert "restarted web" in done.stderr
    assert "unchanged (still running): postgres, redis" in done.stderr
    after = {p["name"]: p for p in status(capsule, project)["processes"]}
    assert set(after) == {"postgres", "redis", "web", "cache"}
    assert after["postgres"]["pid"] == before["postgres"]
    assert after["redis"]["pid"] == before["redis"]
    assert after["web"]["pid"] != before["web"]
    assert after["web"]["state"] == after["cache"]["state"] == "ready"
    # once more unchanged: nothing restarts
    again = up(capsule, project)
    assert again.returncode == 0, again.stderr
    assert "config changed" not in again.stderr
    assert {p["name"]: p["pid"] for p in status(capsule, project)["processes"]} == {
        n: p["pid"] for n, p in after.items()
    }


def test_restart_on_unhealthy_restarts_a_server_that_stops_answering(
    project: Path, capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """restart_on_unhealthy = 2: a server that hangs after 3 answers is restarted (a new pid), ready again."""
    port = free_port()
    (project / "capsule.toml").write_text(f"""
[[process]]
name = "api"
command = "{PY} hang.py {port} 3"
health_check = "http://127.0.0.1:{port}/"
health_check_interval = "100ms"
health_timeout = "300ms"
restart_on_unhealthy = 2
backoff = "100ms"
stop_timeout = "2s"
""")
    assert up(capsule, project).returncode == 0
    session = status(capsule, project)["session"]

    def restarted() -> bool:
        evs = session_events(capsule_home, session)
        return sum(e["kind"] == "svc.ready" for e in evs) >= 2

    wait_for(restarted, timeout=30)
    evs = session_events(capsule_home, session)
    kinds = [e["kind"] for e in evs if e.get("name") == "api" and e["kind"].startswith("svc.")]
    at = kinds.index("svc.unhealthy")
    assert kinds[at : at + 4] == ["svc.unhealthy", "svc.stopping", "svc.exited", "svc.restarting"]
    stopping = next(e for e in evs if e["kind"] == "svc.stopping" and e["name"] == "api")
    assert stopping["reason"] == "unhealthy"
    pids = [e["pid"] for e in evs if e["kind"] == "svc.started"]
    assert len(set(pids)) >= 2
    replay = capsule("replay", str(capsule_home / "runs" / session), "--check")
    assert replay.returncode == 0, replay.stdout + replay.stderr


def chain(project: Path) -> int:
    port = free_port()
    (project / "capsule.toml").write_text(f"""
[[process]]
name = "db"
command = "{PY} tcp.py {port}"
health_check = "tcp://127.0.0.1:{port}"
health_check_interval = "100ms"
[[process]]
name = "web"
command = "sleep 600"
depends_on = ["db"]
[[process]]
name = "worker"
command = "sleep 600"
depends_on = ["web"]
[[process]]
name = "other"
command = "sleep 600"
""")
    return port


def test_stop_and_restart_act_on_dependants(
    project: Path, capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """stop db stops worker, then web, then db (`stopped (dependency)`); start db brings them back after it;
    restart db restarts them once db is ready again; `other` is never touched."""
    chain(project)
    assert up(capsule, project).returncode == 0
    data = status(capsule, project)
    other = proc_of(data, "other")["pid"]
    done = capsule("env", "stop", "db", "--env", str(project))
    assert done.returncode == 0, done.stderr
    data = status(capsule, project)
    assert {p["name"]: (p["state"], p["stop_reason"]) for p in data["processes"]} == {
        "db": ("stopped", "stop"), "web": ("stopped", "dependency"), "worker": ("stopped", "dependency"),
        "other": ("running", None),
    }  # fmt: skip
    shown = capsule("env", "status", str(project))
    assert "stopped (dependency)" in shown.stdout
    evs = session_events(capsule_home, data["session"])
    order = [e["name"] for e in evs if e["kind"] == "svc.stopped"]
    assert order == ["worker", "web", "db"]

    assert capsule("env", "start", "db", "--env", str(project)).returncode == 0
    wait_for(lambda: {p["state"] for p in status(capsule, project)["processes"]} <= {"ready", "running"})
    evs = session_events(capsule_home, data["session"])
    ready = [e["seq"] for e in evs if e["kind"] == "svc.ready" and e["name"] == "db"][-1]
    assert [e["seq"] for e in evs if e["kind"] == "svc.starting" and e["name"] == "web"][-1] > ready

    before = {p["name"]: p["pid"] for p in status(capsule, project)["processes"]}
    assert capsule("env", "restart", "db", "--env", str(project)).returncode == 0
    wait_for(lambda: {p["state"] for p in status(capsule, project)["processes"]} <= {"ready", "running"})
    after = {p["name"]: p["pid"] for p in status(capsule, project)["processes"]}
    assert after["other"] == before["other"] == other
    assert all(after[n] != before[n] for n in ("db", "web", "worker"))
    evs = session_events(capsule_home, data["session"])
    ready = [e["seq"] for e in evs if e["kind"] == "svc.ready" and e["name"] == "db"][-1]
    assert [e["seq"] for e in evs if e["kind"] == "svc.starting" and e["name"] == "worker"][-1] > ready
    capsule("env", "down", str(project))
    replay = capsule("replay", str(capsule_home / "runs" / data["session"]), "--check")
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_a_dependency_that_fails_first_then_comes_back_lets_dependants_start(
    project: Path, capsule: CapsuleRunner
) -> None:
    """db exits before it was ever ready, comes back on restart: web (depends on db) starts then."""
    port = free_port()
    (project / "capsule.toml").write_text(f"""
[[process]]
name = "db"
command = "sh -c 'if [ -f once ]; then exec {PY} tcp.py {port}; fi; touch once; exit 1'"
health_check = "tcp://127.0.0.1:{port}"
health_check_interval = "100ms"
backoff = "100ms"
[[process]]
name = "web"
command = "sleep 600"
depends_on = ["db"]
""")
    done = up(capsule, project)
    assert done.returncode == 0, done.stderr
    data = status(capsule, project)
    assert {p["name"]: p["state"] for p in data["processes"]} == {"db": "ready", "web": "running"}
    assert proc_of(data, "db")["restarts"] == 1


def test_concurrent_up_gives_one_environment(
    project: Path, capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """Two `env up` of one config at once: one supervisor, one session; both report it."""
    pg, redis, web = free_port(), free_port(), free_port()
    (project / ".runcept.toml").write_text(runcept(pg, redis, web))
    (project / ".env").write_text("PLAIN=1\n")
    env = {"CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1"}
    both = [
        subprocess.Popen(
            [sys.executable, "-m", "capsule", "env", "up", str(project), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env},
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in both]
    assert [p.returncode for p in both] == [0, 0], [o[1] for o in outs]
    sessions = {orjson.loads(o[0])["session"] for o in outs}
    assert len(sessions) == 1
    rows = orjson.loads(capsule("env", "ls", "--json").stdout)["environments"]
    assert [r["session"] for r in rows] == list(sessions)


def test_stop_signal_by_number_and_name(project: Path, capsule: CapsuleRunner) -> None:
    """stop_signal = 10 (SIGUSR1) reaches the process; a name that is no signal is refused naming the key."""
    (project / "capsule.toml").write_text("""
[[process]]
name = "trap"
command = "sh -c 'trap \\"echo got >got; exit 0\\" USR1; while :; do sleep 0.05; done'"
stop_signal = 10
""")
    assert up(capsule, project).returncode == 0
    assert capsule("env", "down", str(project)).returncode == 0
    wait_for(lambda: (project / "got").is_file())
    (project / "capsule.toml").write_text(
        '[[process]]\nname = "x"\ncommand = "true"\nstop_signal = "SIGNOPE"\n'
    )
    bad = up(capsule, project)
    assert bad.returncode == 4
    assert "process 'x': stop_signal: no such signal" in bad.stderr


def test_global_config_is_merged_under_the_project(
    project: Path, capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """$CAPSULE_HOME/config.toml [env] defaults go under the project's; `env config` says where each came from."""
    capsule_home.mkdir(parents=True, exist_ok=True)
    (capsule_home / "config.toml").write_text(
        '[env]\nstop_timeout = "3s"\nenv = { GLOBAL_ONLY = "g", SHARED = "global" }\n[export]\nprotocol = "http/json"\n'
    )
    (project / "capsule.toml").write_text(f"""
[project]
env = {{ SHARED = "project" }}
[[process]]
name = "w"
command = "{PY} worker.py w-env.json"
stop_timeout = "1s"
[[process]]
name = "v"
command = "sleep 600"
""")
    shown = capsule("env", "config", str(project))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    config = str(capsule_home / "config.toml")

    def line(key: str) -> str:
        return next(x for x in lines if x.split(" = ")[0].strip() == key)

    assert line("process.w.stop_timeout").endswith(f"# {project / 'capsule.toml'}")
    assert line("process.v.stop_timeout").endswith(f"# {config}")
    assert '"3s"' in line("process.v.stop_timeout")
    assert line("project.env.GLOBAL_ONLY").endswith(f"# {config}")
    assert '"project"' in line("project.env.SHARED")
    assert line("process.v.health_check_interval").endswith("# built-in default")
    assert up(capsule, project).returncode == 0
    wait_for(lambda: (project / "w-env.json").is_file() and (project / "w-env.json").stat().st_size)
    got = json.loads((project / "w-env.json").read_text())
    assert (got["GLOBAL_ONLY"], got["SHARED"]) == ("g", "project")
    (capsule_home / "config.toml").write_text("[colors]\nx = 1\n")
    bad = capsule("env", "config", str(project))
    assert bad.returncode == 4
    assert "config.toml: colors: unknown section" in bad.stderr


def test_status_after_down_and_ls_one_row_per_environment(project: Path, capsule: CapsuleRunner) -> None:
    """After down every process is `stopped`; `env ls` shows one row per environment, `--all` each session,
    a name filter keeps matching projects; an error goes to the error column."""
    (project / "capsule.toml").write_text(
        '[project]\nname = "lsdemo"\n[[process]]\nname = "a"\ncommand = "sleep 600"\n'
        '[[process]]\nname = "b"\ncommand = "no-such-command-here"\n'
    )
    for _ in range(2):
        up(capsule, project)
        assert capsule("env", "down", str(project)).returncode == 0
    data = status(capsule, project)
    assert {p["name"]: p["state"] for p in data["processes"]} == {"a": "stopped", "b": "gave_up"}
    table = capsule("env", "status", str(project)).stdout
    header = next(x for x in table.splitlines() if x.startswith("name"))
    b_row = next(x for x in table.splitlines() if x.startswith("b "))
    assert header.index("error") <= b_row.index("command not found")
    rows = orjson.loads(capsule("env", "ls", "--json").stdout)["environments"]
    assert [r["project"] for r in rows] == ["lsdemo"]
    every = orjson.loads(capsule("env", "ls", "--all", "--json").stdout)["environments"]
    assert [r["project"] for r in every] == ["lsdemo", "lsdemo"]
    assert orjson.loads(capsule("env", "ls", "other*", "--json").stdout)["environments"] == []
    assert len(orjson.loads(capsule("env", "ls", "ls*", "--json").stdout)["environments"]) == 1


def test_logs_follow_across_rotations_misses_no_line(
    project: Path, capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """`env logs -f --json` follows the log by inode: every line, in order, across many rotations."""
    count = 400
    (project / "capsule.toml").write_text(f"""
[project]
log_max_bytes = 2048
[[process]]
name = "talker"
command = "sh -c 'while [ ! -f go ]; do sleep 0.05; done; i=0; while [ $i -lt {count} ]; do i=$((i+1)); echo line-$i; sleep 0.01; done; exec sleep 600'"
""")
    assert up(capsule, project).returncode == 0
    seen: list[int] = []
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "capsule",
            "env",
            "logs",
            "talker",
            "-f",
            "--json",
            "-n",
            "0",
            "--env",
            str(project),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CAPSULE_HOME": str(capsule_home)},
    ) as follower:
        try:
            (project / "go").touch()  # the follower goes on from where its first read ended: no gap
            assert follower.stdout is not None
            while not seen or seen[-1] < count:
                raw = follower.stdout.readline()
                assert raw, "the follower ended"
                line = orjson.loads(raw)
                assert set(line) == {"time", "process", "stream", "text"}
                if line["stream"] == "stdout":
                    seen.append(int(line["text"].removeprefix("line-")))
        finally:
            follower.kill()
    assert seen == list(range(seen[0], count + 1))
    logs = capsule_home / "runs" / status(capsule, project)["session"] / "logs"
    assert (logs / "talker.log.1").is_file()  # it did rotate
