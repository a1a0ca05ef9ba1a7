"""env and agents sessions in `report --html` and `export --format perfetto|otlp`: services and tasks
as tracks and spans, with their states, restarts and attempts, and the traced trees beneath them."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.conftest import CapsuleRunner
from tests.env.test_supervise import PY, free_port, status, wait_for, write

pytestmark = pytest.mark.strace

PLAN = """
[run]
name = "nightly"
parallel = 2
trace = true

[[task]]
id = "lint"
command = "ls / >/dev/null && echo fine"

[[task]]
id = "flaky"
command = "grep -q no-such-text /etc/hostname || exit 3"
retries = 1
backoff = "10ms"
"""


def _export(capsule: CapsuleRunner, session: str, fmt: str) -> dict:
    done = capsule("export", session, "--format", fmt)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def _spans(request: dict) -> list[dict]:
    return request["resourceSpans"][0]["scopeSpans"][0]["spans"]


def test_agents_session_exports_tasks_attempts_and_traced_trees(
    capsule: CapsuleRunner, tmp_path: Path
) -> None:
    """Each task is a track with one slice per attempt; each attempt's traced processes follow it
    (perfetto) or hang beneath its span (otlp); the HTML page draws them all."""
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    assert capsule("agents", "run", str(plan)).returncode == 1  # flaky fails twice
    session = orjson.loads(capsule("ls", "--json").stdout)[0]["id"]

    trace = _export(capsule, session, "perfetto")["traceEvents"]
    names = [e["args"]["name"] for e in trace if e["ph"] == "M" and e["name"] == "process_name"]
    assert "task lint" in names
    assert "task flaky" in names
    assert any(n.startswith("flaky ▸ ") and "grep -q no-such-text" in n for n in names)
    attempts = [e for e in trace if e["ph"] == "X" and e["cat"] == "run" and e["name"].startswith("attempt")]
    assert sorted(e["name"] for e in attempts) == ["attempt 1", "attempt 1", "attempt 2"]
    states = {e["name"] for e in trace if e["ph"] == "X" and e["cat"] == "state"}
    assert {"running", "succeeded", "failed", "retrying"} <= states
    assert any(e["ph"] == "i" and e["name"] == "retry" for e in trace)

    spans = _spans(_export(capsule, session, "otlp"))
    by_id = {s["spanId"]: s for s in spans}
    flaky = next(s for s in spans if s["name"] == "task flaky")
    tries = [s for s in spans if s.get("parentSpanId") == flaky["spanId"]]
    assert sorted(s["name"] for s in tries) == ["flaky attempt 1", "flaky attempt 2"]
    assert all(t["status"]["code"] == 2 for t in tries)
    greps = [s for s in spans if s["name"] == "grep"]
    assert len(greps) == 2
    for grep in greps:  # grep -> sh -> the attempt's span
        assert by_id[by_id[grep["parentSpanId"]]["parentSpanId"]]["name"].startswith("flaky attempt")
    assert len({s["traceId"] for s in spans}) == 1

    page = tmp_path / "agents.html"
    assert capsule("report", session, "--html", str(page)).returncode == 0
    html = page.read_text(encoding="utf-8")
    data = orjson.loads(html.split('id="capsule-data">')[1].split("</script>")[0])
    rows = data["procs"]
    assert sum(1 for r in rows if r[3] == 0) == 2  # the two tasks
    assert sum(1 for r in rows if r[3] == 1) == 3  # three attempts
    assert any(r[11] and r[11][0].endswith("grep") for r in rows if r[3] >= 2)


def test_env_session_exports_services_restarts_and_states(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """A healthy traced service and one that crashes, restarts and gives up: states, starts, restarts,
    the give-up and the traced tree, in perfetto, otlp and the HTML page."""
    root = tmp_path / "proj"
    root.mkdir()
    port = free_port()
    write(
        root,
        f"""
[project]
name = "shop"
[[process]]
name = "web"
command = "sh -c 'ls / >/dev/null; exec {PY} -m http.server {port} --bind 127.0.0.1'"
health_check = "http://127.0.0.1:{port}/"
health_check_interval = "200ms"
trace = true
[[process]]
name = "crash"
command = "sh -c 'exit 1'"
restart = "on-failure"
backoff = "50ms"
max_restarts = 1
""",
    )
    try:
        capsule("env", "up", str(root))
        wait_for(
            lambda: (
                {p["name"]: p["state"] for p in status(capsule, root)["processes"]}
                == {"web": "ready", "crash": "gave_up"}
            ),
            timeout=60,
        )
        session = status(capsule, root)["session"]
    finally:
        capsule("env", "down", str(root), timeout=60)

    trace = _export(capsule, session, "perfetto")["traceEvents"]
    names = [e["args"]["name"] for e in trace if e["ph"] == "M" and e["name"] == "process_name"]
    assert {"service web", "service crash"} <= set(names)
    assert any(n.startswith("web ▸ ") and "http.server" in n for n in names)
    crash_pid = next(e["pid"] for e in trace if e["ph"] == "M" and e["args"].get("name") == "service crash")
    crash = [e for e in trace if e["pid"] == crash_pid and e["ph"] != "M"]
    assert [e["name"] for e in crash if e["cat"] == "run"] == ["start 1", "start 2"]
    assert {"backoff", "gave_up"} <= {e["name"] for e in crash if e["cat"] == "state"}
    assert {"restart", "gave up"} <= {e["name"] for e in crash if e["ph"] == "i"}
    web_pid = next(e["pid"] for e in trace if e["ph"] == "M" and e["args"].get("name") == "service web")
    assert "ready" in {e["name"] for e in trace if e["pid"] == web_pid and e.get("cat") == "state"}

    spans = _spans(_export(capsule, session, "otlp"))
    svc = next(s for s in spans if s["name"] == "service crash")
    assert svc["status"]["code"] == 2
    assert {e["name"] for e in svc["events"]} >= {"restart", "gave up"}
    web_start = next(s for s in spans if s["name"] == "web start 1")
    assert any(s.get("parentSpanId") == web_start["spanId"] for s in spans)  # the traced sh

    page = tmp_path / "env.html"
    assert capsule("report", session, "--html", str(page)).returncode == 0
    html = page.read_text(encoding="utf-8")
    assert "gave_up" in html
    assert "Services" in html
