"""`executor = "ray"` on a real two-node Ray cluster (tests/ray/conftest.py): a DAG placed by resource on
both nodes, traced, with a timeout, a retry and a policy block; a node killed mid-task; a driver killed
with SIGKILL and resumed. The driver runs inside the cluster's network namespace, with its own home."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from tests.agents.conftest import of, session_events
from tests.ray.conftest import Cluster

pytestmark = [pytest.mark.ray, pytest.mark.strace]


# a traced DAG's tasks, placed by resource on both nodes: a dependency across nodes, a retry, a timeout
DAG = """[[task]]
id = "prep"
command = "echo prep on $CAPSULE_NODE"
uses = ["alpha"]
[[task]]
id = "build"
command = "cat /dev/null; echo build on $CAPSULE_NODE"
uses = ["beta"]
depends_on = ["prep"]
verify = ["test \\"$CAPSULE_NODE\\" = node-b"]
[[task]]
id = "flaky"
command = "test -e flaky-ran || { touch flaky-ran; exit 3; }"
uses = ["alpha"]
retries = 1
backoff = "0.1s"
[[task]]
id = "slow"
command = "sleep 60"
uses = ["beta"]
timeout = "1s"
grace = "0.5s"
"""


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "CAPSULE_HOME": str(home), "NO_COLOR": "1", "CAPSULE_PLAIN": "1"}


def _capsule(
    cluster: Cluster, home: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    argv = cluster.command([sys.executable, "-m", "capsule", *args])
    return subprocess.run(argv, env=_env(home), capture_output=True, text=True, timeout=timeout, check=False)


def _start(cluster: Cluster, home: Path, *args: str) -> subprocess.Popen[bytes]:
    argv = cluster.command([sys.executable, "-m", "capsule", *args])
    return subprocess.Popen(argv, env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(home: Path, found: Any, proc: subprocess.Popen[bytes], what: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 120
    while True:
        try:
            events = session_events(home)
        except (AssertionError, FileNotFoundError, IndexError, orjson.JSONDecodeError):  # not written yet
            events = []
        if found(events):
            return events
        assert proc.poll() is None, (
            f"the driver ended before {what}: {proc.stderr.read() if proc.stderr else ''}"
        )
        assert time.monotonic() < deadline, f"no {what}"
        time.sleep(0.05)


def _plan(tmp_path: Path, cluster: Cluster, rest: str, address: str | None = None) -> Path:
    """A plan run on the cluster (at `address`, else the head's): [run] executor and address, then
    `rest` (its [resources] table first)."""
    plan = tmp_path / "plan.toml"
    plan.write_text(f'[run]\nexecutor = "ray"\naddress = "{address or cluster.address}"\n[resources]\n{rest}')
    return plan


def _status(cluster: Cluster, home: Path) -> dict[str, Any]:
    done = _capsule(cluster, home, "agents", "status", session_events(home)[0]["session_id"], "--json")
    assert done.returncode in (0, 1), done.stderr
    return {t["id"]: t for t in orjson.loads(done.stdout)["tasks"]}


@pytest.fixture
def sudo_bin(tmp_path: Path) -> tuple[Path, Path]:
    """A `sudo` that leaves a marker if it ever runs (the guard must refuse it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "sudo-ran"
    (bin_dir / "sudo").write_text(f"#!/bin/sh\necho ran >> {marker}\n")
    (bin_dir / "sudo").chmod(0o755)
    return bin_dir, marker


def test_a_traced_dag_runs_on_both_nodes(
    cluster: Cluster, tmp_path: Path, sudo_bin: tuple[Path, Path]
) -> None:
    """Tasks land on the node that has their resource; each is traced there and its run session, logs and
    the guard's refusals reach the driver; a timeout, a retry and a policy block as locally."""
    home = tmp_path / "home"
    bin_dir, sudo_ran = sudo_bin
    (tmp_path / "tool.py").write_text(  # sudo out of the plan's sight: the guard's, on the node
        "import subprocess\ntry:\n    subprocess.run(['sudo', 'id'])\nexcept PermissionError as e:\n"
        "    print('EPERM', e.errno)\nprint('after', flush=True)\n"
    )
    plan = tmp_path / "plan.toml"
    plan.write_text(f"""
[run]
name = "cluster"
parallel = 4
trace = true
executor = "ray"
address = "{cluster.address}"
[resources]
alpha = 2
beta = 2
[policy]
deny_commands = ["sudo *"]
{DAG}[[task]]
id = "sneaky"
command = ["{sys.executable}", "tool.py"]
uses = ["beta"]
env = {{ PATH = "{bin_dir}:/usr/bin:/bin" }}
""")
    done = _capsule(cluster, home, "agents", "run", str(plan))
    assert done.returncode == 1, done.stderr  # `slow` timed out
    events = session_events(home)
    placed = {(e["task"], e["attempt"]): e["node"] for e in of(events, "task.placed")}
    assert placed == {
        ("prep", 1): "node-a", ("build", 1): "node-b", ("flaky", 1): "node-a", ("flaky", 2): "node-a",
        ("slow", 1): "node-b", ("sneaky", 1): "node-b",
    }  # fmt: skip
    assert of(events, "run.executor")[0]["executor"] == "ray"
    status = _status(cluster, home)
    assert {t: s["state"] for t, s in status.items()} == {
        "prep": "succeeded", "build": "succeeded", "flaky": "succeeded", "slow": "timed_out",
        "sneaky": "succeeded",
    }  # fmt: skip
    assert {t: s["node"] for t, s in status.items()} == {
        "prep": "node-a", "build": "node-b", "flaky": "node-a", "slow": "node-b", "sneaky": "node-b"
    }  # fmt: skip
    assert status["flaky"]["attempts"] == 2
    slow = of(events, "task.started", "slow")[0]
    assert not _alive(slow["pid"], slow["started"])  # the timeout stopped its tree on node-b
    assert of(events, "task.verified", "build")[0]["ok"] is True  # verify ran where build ran
    # the guard refused sudo on node-b; its decision is in the agents session
    assert not sudo_ran.exists()
    assert [b["argv"] for b in of(events, "policy.blocked", "sneaky")] == [["sudo", "id"]]
    assert status["sneaky"]["blocked"] == 1
    # logs and traced sessions were shipped to the driver's home; nothing of the run is left on the nodes
    started = {e["task"]: e for e in of(events, "task.started")}
    assert (Path(started["prep"]["log_dir"]) / "1.out").read_text() == "prep on node-a\n"
    assert (Path(started["sneaky"]["log_dir"]) / "1.out").read_text().endswith("after\n")
    for task in ("prep", "build", "sneaky"):
        trace = home / "runs" / started[task]["trace_session"] / "events.jsonl"
        lines = [orjson.loads(x) for x in trace.read_bytes().splitlines()]
        assert lines[0]["session_kind"] == "run", task
        assert lines[-1]["kind"] == "session.ended", task
        assert any(x["kind"] == "proc.exec" for x in lines), task
    for node_home in cluster.homes.values():
        assert (
            not list((node_home / "runs").glob("*/events.jsonl")) if (node_home / "runs").exists() else True
        )
    # status, report, HTML and exports say where each task ran
    shown = _capsule(cluster, home, "agents", "status", events[0]["session_id"]).stdout
    assert "node" in shown.splitlines()[1], shown
    assert "node-b" in shown
    run = events[0]["session_id"]
    assert "prep: succeeded exit 0, 1 attempt(s) on node-a" in _capsule(cluster, home, "report", run).stdout
    html = tmp_path / "run.html"
    assert _capsule(cluster, home, "report", run, "--html", str(html)).returncode == 0
    assert "<th>node</th>" in html.read_text()
    assert "<td>node-b</td>" in html.read_text()
    otlp = orjson.loads(_capsule(cluster, home, "export", run, "--format", "otlp").stdout)
    spans = [s for rs in otlp["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    nodes = {
        s["name"]: a["value"]["stringValue"]
        for s in spans
        for a in s["attributes"]
        if a["key"] == "capsule.node"
    }
    assert nodes["build attempt 1"] == "node-b", nodes
    assert nodes["prep attempt 1"] == "node-a", nodes
    # the fleet's sessions as one dataset: every session of the home, the tasks with their nodes
    import duckdb

    out = tmp_path / "parquet"
    assert _capsule(cluster, home, "export", "--all", "--format", "parquet", "-o", str(out)).returncode == 0
    rows = duckdb.sql(f"SELECT task, node FROM '{out}/tasks.parquet' WHERE session = '{run}'").fetchall()
    assert dict(rows) == {t: s["node"] for t, s in status.items()}
    ((traced,),) = duckdb.sql(f"SELECT count(DISTINCT session) FROM '{out}/processes.parquet'").fetchall()
    # the traced run session of each attempt, shipped from its node
    assert traced == len({e["trace_session"] for e in of(events, "task.started")})


def test_a_node_killed_mid_task_gives_lost_and_a_retry(cluster: Cluster, tmp_path: Path) -> None:
    node_killed_mid_task(cluster, tmp_path, cluster.address)


def node_killed_mid_task(cluster: Cluster, tmp_path: Path, address: str) -> None:
    """The node running an attempt dies: the attempt ends `lost`, the retry runs once a node with the
    resource is back (node-b, restarted), and the run succeeds."""
    home = tmp_path / "home"
    plan = _plan(
        tmp_path,
        cluster,
        """
beta = 2
[[task]]
id = "long"
command = "test -e long-ran || { touch long-ran; sleep 120; }"
uses = ["beta"]
retries = 1
backoff = "0.1s"
""",
        address,
    )
    driver = _start(cluster, home, "agents", "run", str(plan))
    try:
        events = _wait_for(home, lambda ev: of(ev, "task.started", "long"), driver, "a started attempt")
        leader = of(events, "task.started", "long")[0]
        cluster.kill("node-b")
        events = _wait_for(home, lambda ev: of(ev, "task.exited", "long"), driver, "the attempt's end")
        exited = of(events, "task.exited", "long")[0]
        assert exited["outcome"] == "lost", exited
        assert "node-b" in exited["reason"]
        assert not _alive(leader["pid"], leader["started"])  # gone with its node
        cluster.start("node-b", {"beta": 2})
        assert driver.wait(180) == 0, driver.stderr.read() if driver.stderr else ""
    finally:
        _end(driver)
    events = session_events(home)
    assert [e["outcome"] for e in of(events, "task.exited", "long")] == ["lost", "succeeded"]
    assert of(events, "task.retrying", "long")
    status = _status(cluster, home)
    assert status["long"]["state"] == "succeeded"
    assert status["long"]["attempts"] == 2


# A driver killed while `long` runs on node-b: `quick` (node-a) succeeded, `long` runs until killed once.
RESUMED = """[[task]]
id = "quick"
command = "echo ran >> quick-count"
uses = ["alpha"]
[[task]]
id = "long"
command = "test -e long-ran || { touch long-ran; sleep 120; }"
uses = ["beta"]
depends_on = ["quick"]
"""


def test_a_killed_driver_resumes_without_rerunning_what_succeeded(cluster: Cluster, tmp_path: Path) -> None:
    """SIGKILL the driver while a task runs on node-b: `agents resume` stops what it left on the node,
    re-runs the interrupted task and leaves the succeeded one alone."""
    home = tmp_path / "home"
    plan = _plan(
        tmp_path,
        cluster,
        "\nalpha = 2\nbeta = 2\n" + RESUMED,
    )
    driver = _start(cluster, home, "agents", "run", str(plan))
    try:
        events = _wait_for(home, lambda ev: of(ev, "task.members", "long"), driver, "long running")
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        _end(driver)
    leader = of(events, "task.started", "long")[0]
    done = _capsule(cluster, home, "agents", "resume", events[0]["session_id"])  # executor: the session's
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "quick-count").read_text() == "ran\n"  # not run again
    events = session_events(home)
    assert not _alive(leader["pid"], leader["started"])  # stopped on its node by the resume
    # the resume reaped on every live node (Ray may already have ended a dead job's worker's children)
    assert of(events, "run.resumed")
    assert [e["attempt"] for e in of(events, "task.placed", "long")] == [1, 2]
    assert len(of(events, "task.placed", "quick")) == 1
    status = _status(cluster, home)
    assert status["long"]["state"] == "succeeded"
    assert status["quick"]["state"] == "succeeded"


def test_agents_kill_stops_the_task_on_its_node(cluster: Cluster, tmp_path: Path) -> None:
    """`agents kill TASK` of a task running on node-b stops its tree there; the run ends it `killed`."""
    home = tmp_path / "home"
    plan = _plan(
        tmp_path,
        cluster,
        """
beta = 2
[[task]]
id = "long"
command = "sleep 120"
uses = ["beta"]
""",
    )
    driver = _start(cluster, home, "agents", "run", str(plan))
    try:
        events = _wait_for(home, lambda ev: of(ev, "task.members", "long"), driver, "long running")
        done = _capsule(cluster, home, "agents", "kill", "long")
        assert done.returncode == 0, done.stderr
        assert driver.wait(60) == 1
    finally:
        _end(driver)
    leader = of(events, "task.started", "long")[0]
    assert not _alive(leader["pid"], leader["started"])
    assert of(session_events(home), "task.exited", "long")[0]["outcome"] == "killed"


def test_no_cluster_at_the_address_is_one_line_and_exit_5(cluster: Cluster, tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text('[run]\nexecutor = "ray"\n[[task]]\nid = "t"\ncommand = "true"\n')
    # a port of the namespace's loopback nobody listens on (the head listens on cluster.port)
    done = _capsule(cluster, tmp_path / "home", "agents", "run", str(plan), "--address", "127.0.0.1:9")
    assert done.returncode == 5, done.stderr
    assert done.stderr.startswith("capsule: error: no Ray cluster at 127.0.0.1:9: Connection refused")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "home" / "runs").exists() or not list((tmp_path / "home" / "runs").iterdir())
    # a Ray Client address nobody answers at: the same one line
    client = _capsule(
        cluster, tmp_path / "home", "agents", "run", str(plan), "--address", "ray://127.0.0.1:9"
    )
    assert client.returncode == 5, client.stderr
    assert client.stderr.startswith("capsule: error: no Ray cluster at ray://127.0.0.1:9: Connection refused")
    assert len(client.stderr.strip().splitlines()) == 1, client.stderr
    assert not (tmp_path / "home" / "runs").exists() or not list((tmp_path / "home" / "runs").iterdir())
    bad = _capsule(cluster, tmp_path / "home", "agents", "run", str(plan), "--executor", "slurm")
    assert bad.returncode == 4, bad.stderr
    assert "--executor: expected one of local, ray" in bad.stderr


def _end(driver: subprocess.Popen[bytes]) -> None:
    if driver.poll() is None:
        driver.kill()
        driver.wait()
    if driver.stderr is not None:
        driver.stderr.close()


def _alive(pid: int, started: float) -> bool:
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - started) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
