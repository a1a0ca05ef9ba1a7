"""`executor = "ray"` through Ray Client (`address = "ray://host:port"`, the head's client server) on the
real two-node cluster of tests/ray/conftest.py: the attempts' items come back through the driver's
mailbox actor instead of streaming generators (which Ray Client does not carry). A traced DAG placed
by resource on both nodes with a retry and a timeout; a node killed mid-task; `agents kill`; a driver
killed with SIGKILL and resumed. The driver is a Ray Client process with its own home, outside the
cluster's node processes: what the nodes record reaches that home only through the client."""

from __future__ import annotations

import signal
from pathlib import Path

import orjson
import pytest

from tests.agents.conftest import of, session_events
from tests.ray.conftest import Cluster
from tests.ray.test_ray_executor import (
    DAG,
    RESUMED,
    _alive,
    _capsule,
    _end,
    _start,
    _status,
    _wait_for,
    node_killed_mid_task,
)

pytestmark = [pytest.mark.ray, pytest.mark.strace]


def _plan(tmp_path: Path, cluster: Cluster, rest: str) -> Path:
    plan = tmp_path / "plan.toml"
    plan.write_text(f'[run]\nexecutor = "ray"\naddress = "{cluster.client_address}"\n{rest}')
    return plan


def test_a_traced_dag_runs_through_ray_client(cluster: Cluster, tmp_path: Path) -> None:
    """Tasks land on the node that has their resource, traced there; their events, logs and traced
    sessions reach the client driver's home; a retry and a timeout as locally."""
    home = tmp_path / "home"
    plan = _plan(
        tmp_path,
        cluster,
        f"""parallel = 4
trace = true
[resources]
alpha = 2
beta = 2
{DAG}""",
    )
    done = _capsule(cluster, home, "agents", "run", str(plan))
    assert done.returncode == 1, done.stderr  # `slow` timed out
    events = session_events(home)
    executor = of(events, "run.executor")[0]
    assert (executor["executor"], executor["address"]) == ("ray", cluster.client_address)
    placed = {(e["task"], e["attempt"]): e["node"] for e in of(events, "task.placed")}
    assert placed == {
        ("prep", 1): "node-a", ("build", 1): "node-b", ("flaky", 1): "node-a", ("flaky", 2): "node-a",
        ("slow", 1): "node-b",
    }  # fmt: skip
    status = _status(cluster, home)
    assert {t: s["state"] for t, s in status.items()} == {
        "prep": "succeeded", "build": "succeeded", "flaky": "succeeded", "slow": "timed_out",
    }  # fmt: skip
    assert {t: s["node"] for t, s in status.items()} == {
        "prep": "node-a", "build": "node-b", "flaky": "node-a", "slow": "node-b"
    }  # fmt: skip
    assert [e["outcome"] for e in of(events, "task.exited", "flaky")] == ["failed", "succeeded"]
    slow = of(events, "task.started", "slow")[0]
    assert not _alive(slow["pid"], slow["started"])  # the timeout stopped its tree on node-b
    assert of(events, "task.verified", "build")[0]["ok"] is True
    assert of(events, "task.members", "slow")  # the node's samples came back through the mailbox
    started = {e["task"]: e for e in of(events, "task.started")}
    assert (Path(started["prep"]["log_dir"]) / "1.out").read_text() == "prep on node-a\n"
    assert (Path(started["build"]["log_dir"]) / "1.out").read_text() == "build on node-b\n"
    for task in ("prep", "build"):
        assert Path(started[task]["log_dir"]).is_relative_to(home), task
        trace = home / "runs" / started[task]["trace_session"] / "events.jsonl"
        lines = [orjson.loads(x) for x in trace.read_bytes().splitlines()]
        assert lines[0]["session_kind"] == "run", task
        assert lines[-1]["kind"] == "session.ended", task
        assert any(x["kind"] == "proc.exec" for x in lines), task
    for node_home in cluster.homes.values():  # nothing of the run kept on the nodes
        assert not list(node_home.glob("runs/*/events.jsonl")), node_home


def test_a_node_killed_mid_task_gives_lost_through_ray_client(cluster: Cluster, tmp_path: Path) -> None:
    """As natively (the driver's mailbox is on the head, which lives on): `lost`, then the retry."""
    node_killed_mid_task(cluster, tmp_path, cluster.client_address)


def test_agents_kill_and_resume_through_ray_client(cluster: Cluster, tmp_path: Path) -> None:
    """`agents kill TASK` stops a task's tree on its node through the client; then the driver is killed
    with SIGKILL mid-task, and `agents resume` (the session's ray:// address) stops what it left on the
    node and re-runs only what did not succeed."""
    home = tmp_path / "home"
    plan = _plan(
        tmp_path,
        cluster,
        "parallel = 3\n[resources]\nalpha = 2\nbeta = 2\n"
        + RESUMED
        + '[[task]]\nid = "doomed"\ncommand = "test -e doomed-ran || { touch doomed-ran; sleep 120; }"\n'
        + 'uses = ["alpha"]\n',
    )
    driver = _start(cluster, home, "agents", "run", str(plan))
    try:
        events = _wait_for(
            home,
            lambda ev: of(ev, "task.members", "long") and of(ev, "task.members", "doomed"),
            driver,
            "long and doomed running",
        )
        done = _capsule(cluster, home, "agents", "kill", "doomed")
        assert done.returncode == 0, done.stderr
        events = _wait_for(home, lambda ev: of(ev, "task.exited", "doomed"), driver, "doomed's end")
        assert of(events, "task.exited", "doomed")[0]["outcome"] == "killed"
        doomed = of(events, "task.started", "doomed")[0]
        assert not _alive(doomed["pid"], doomed["started"])
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        _end(driver)
    leader = of(events, "task.started", "long")[0]
    done = _capsule(cluster, home, "agents", "resume", events[0]["session_id"])
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "quick-count").read_text() == "ran\n"  # not run again
    events = session_events(home)
    assert not _alive(leader["pid"], leader["started"])
    assert of(events, "run.resumed")
    assert [e["attempt"] for e in of(events, "task.placed", "long")] == [1, 2]
    status = _status(cluster, home)
    assert {t: s["state"] for t, s in status.items()} == dict.fromkeys(
        ("quick", "doomed", "long"), "succeeded"
    )
    assert status["long"]["node"] == "node-b"
