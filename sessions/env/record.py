"""Record the golden `env` sessions in sessions/env/ with the real supervisor: `python sessions/env/record.py [SLUG...]`.

Each scenario writes a capsule.toml into a fresh project, runs `capsule env up`, waits for what it shows (read
from the session's events), brings the environment down and keeps `events.jsonl` as `sessions/env/<slug>/`.
pids, times, paths and ids are whatever they were: review the diff, never edit a session by hand.
`tests/env/test_env_sessions.py` replays each through the machine (`capsule replay --check`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
CAPSULE = [sys.executable, "-m", "capsule"]

SCENARIOS: dict[str, tuple[str, Callable[[list[dict]], bool]]] = {
    # crashes twice (exit 1), then stays up: two restarts, the second backoff twice the first
    "restart-backoff": (
        """
[[process]]
name = "flaky"
command = "sh -c 'n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) >count; [ $n -ge 2 ] || exit 1; exec sleep 600'"
backoff = "200ms"
""",
        lambda evs: (
            sum(e["kind"] == "svc.restarting" for e in evs) == 2
            and sum(e["kind"] == "svc.started" for e in evs) == 3
        ),
    ),
    # always fails with a line on stderr: restarts until max_restarts, then gives up naming that line
    "give-up": (
        """
[[process]]
name = "broken"
command = "sh -c 'echo config missing >&2; exit 3'"
backoff = "50ms"
max_restarts = 2
[[process]]
name = "steady"
command = "sleep 600"
""",
        lambda evs: any(e["kind"] == "svc.gave_up" for e in evs),
    ),
    # healthy, then not, then healthy again: a cmd health check on a file the service toggles
    "health-flapping": (
        """
[[process]]
name = "flapper"
command = "sh -c 'touch healthy; sleep 0.6; rm healthy; sleep 0.6; touch healthy; exec sleep 600'"
health_check = "cmd:test -f healthy"
health_check_interval = "100ms"
""",
        lambda evs: (
            sum(e["kind"] == "svc.ready" for e in evs) == 2 and any(e["kind"] == "svc.unhealthy" for e in evs)
        ),
    ),
    # db cannot start (no such command): web, which depends on it, fails too; cache runs
    "dependency-failure": (
        """
[[process]]
name = "db"
command = "no-such-database-server"
[[process]]
name = "web"
command = "sleep 600"
depends_on = ["db"]
[[process]]
name = "cache"
command = "sleep 600"
""",
        lambda evs: any(e["kind"] == "env.settled" for e in evs),
    ),
    # `sh -c 'sleep 600 & sleep 600'` killed with SIGKILL: its sleeps are swept before the restart
    "leftovers": (
        """
[[process]]
name = "forker"
command = "sh -c 'sleep 600 & sleep 600'"
backoff = "100ms"
""",
        lambda evs: sum(e["kind"] == "svc.started" for e in evs) == 2,
    ),
}


PY = sys.executable
TCP = "import socket,sys;s=socket.socket();s.bind(('127.0.0.1',int(sys.argv[1])));s.listen()\nwhile 1: s.accept()[0].close()"
# answers 2 requests, then hangs: a service that stops answering
HANG = (
    "import http.server,sys,time\nn=[0]\nclass H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n        n[0]+=1\n        if n[0]>2: time.sleep(3600)\n"
    "        self.send_response(200);self.end_headers()\n    def log_message(self,*a): pass\n"
    "http.server.HTTPServer(('127.0.0.1',int(sys.argv[1])),H).serve_forever()\n"
)
SCENARIOS.update(
    {
        # stop db: web (depends on db) stops first, `stopped (dependency)`; start db: web comes back after it
        "dependency-stop": (
            """
[[process]]
name = "db"
command = "sleep 600"
[[process]]
name = "web"
command = "sleep 600"
depends_on = ["db"]
""",
            lambda evs: sum(e["kind"] == "svc.started" and e["name"] == "web" for e in evs) == 2,
        ),
        # a server that stops answering its health check is restarted (restart_on_unhealthy = 2)
        "unhealthy-restart": (
            f"""
[[process]]
name = "api"
command = "{PY} hang.py 47811"
health_check = "http://127.0.0.1:47811/"
health_check_interval = "100ms"
health_timeout = "300ms"
restart_on_unhealthy = 2
backoff = "100ms"
""",
            lambda evs: sum(e["kind"] == "svc.ready" for e in evs) >= 2,
        ),
        # env up of a changed config: b changes, c is added, a keeps running
        "reload": (
            """
[[process]]
name = "a"
command = "sleep 600"
[[process]]
name = "b"
command = "sleep 600"
""",
            lambda evs: any(e["kind"] == "svc.started" and e["name"] == "c" for e in evs),
        ),
    }
)


def act(slug: str, project: Path, home: Path, env: dict[str, str]) -> None:
    """What a scenario does to its running environment before waiting for what it shows."""
    ctl = [*CAPSULE, "env"]
    if slug == "leftovers":
        pid = next(e["pid"] for e in events(home) if e["kind"] == "svc.started")
        wait(home, lambda evs: any(e["kind"] == "obs.svc.members" and len(e["pids"]) == 3 for e in evs))
        os.kill(pid, 9)
    elif slug == "dependency-stop":
        subprocess.run([*ctl, "stop", "db", "--env", str(project)], env=env, capture_output=True, check=True)
        subprocess.run([*ctl, "start", "db", "--env", str(project)], env=env, capture_output=True, check=True)
    elif slug == "reload":
        text = (
            (project / "capsule.toml")
            .read_text()
            .replace('name = "b"\ncommand = "sleep 600"', 'name = "b"\ncommand = "sleep 601"')
        )
        (project / "capsule.toml").write_text(text + '[[process]]\nname = "c"\ncommand = "sleep 600"\n')
        subprocess.run([*ctl, "up", str(project)], env=env, capture_output=True, check=True)


def events(home: Path) -> list[dict]:
    (session,) = list((home / "runs").iterdir())
    return [orjson.loads(line) for line in (session / "events.jsonl").read_bytes().splitlines()]


def wait(home: Path, done: Callable[[list[dict]], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done(events(home)):
        if time.monotonic() > deadline:
            raise SystemExit(f"not seen in {timeout}s; events: {[e['kind'] for e in events(home)]}")
        time.sleep(0.05)


def record(slug: str, toml: str, done: Callable[[list[dict]], bool]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        project = work / "project"
        project.mkdir()
        (project / "capsule.toml").write_text(toml)
        (project / "tcp.py").write_text(TCP)
        (project / "hang.py").write_text(HANG)
        home = work / "home"
        env = {**os.environ, "CAPSULE_HOME": str(home), "NO_COLOR": "1"}
        subprocess.run([*CAPSULE, "env", "up", str(project)], env=env, capture_output=True, check=False)
        act(slug, project, home, env)
        wait(home, done)
        subprocess.run([*CAPSULE, "env", "down", str(project)], env=env, capture_output=True, check=True)
        wait(home, lambda evs: evs[-1]["kind"] == "session.ended")
        (session,) = list((home / "runs").iterdir())
        target = HERE / slug
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        shutil.copyfile(session / "events.jsonl", target / "events.jsonl")
        print(f"recorded {slug} ({len(events(home))} events)")


def main(wanted: list[str]) -> None:
    for slug, (toml, done) in SCENARIOS.items():
        if not wanted or slug in wanted:
            record(slug, toml, done)


if __name__ == "__main__":
    main(sys.argv[1:])
