"""What lives on a node of the cluster (tests/ray/conftest.py) while tasks run there: `agents ps` and
`agents status` show them with their node, pid and what was last sampled there; each attempt's scratch
folder under the node's `$CAPSULE_HOME/ray/` is claimed by its worker (an flock held while it lives),
and a worker killed mid-attempt leaves one that the next attempt on that node removes, leaving the live
ones be."""

from __future__ import annotations

import signal
from pathlib import Path

import orjson
import psutil
import pytest

from tests.agents.conftest import of, session_events
from tests.ray.conftest import Cluster
from tests.ray.test_ray_executor import _capsule, _end, _start, _status, _wait_for

pytestmark = [pytest.mark.ray]


def _worker(pid: int) -> psutil.Process:
    """The Ray worker above a task's process (its proctitle starts `ray::`)."""
    p = psutil.Process(pid).parent()
    while p is not None and not p.name().startswith("ray::") and not p.cmdline()[0].startswith("ray::"):
        p = p.parent()
    assert p is not None, f"no Ray worker above {pid}"
    return p


def test_a_killed_workers_scratch_is_swept_by_the_next_attempt(cluster: Cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    flags = tmp_path / "flags"
    flags.mkdir()
    plan = tmp_path / "plan.toml"
    plan.write_text(f"""[run]
executor = "ray"
address = "{cluster.address}"
parallel = 2
[resources]
beta = 2
[[task]]
id = "long"
command = "test -e {flags}/long-ran || {{ touch {flags}/long-ran; sleep 120; }}; touch {flags}/retried"
uses = ["beta"]
retries = 1
backoff = "0.1s"
[[task]]
id = "steady"
command = "echo steady; while [ ! -e {flags}/retried ]; do sleep 0.05; done; echo after"
uses = ["beta"]
""")
    driver = _start(cluster, home, "agents", "run", str(plan))
    try:
        events = _wait_for(
            home,
            lambda ev: of(ev, "task.started", "long") and of(ev, "task.started", "steady"),
            driver,
            "both running",
        )
        run = events[0]["session_id"]
        # ps and status: the tasks on node-b, their pids the node's, their CPU and RSS as sampled there
        events = _wait_for(
            home,
            lambda ev: {e["task"] for e in of(ev, "obs.task.sampled") if e["rss"] > 0} >= {"long", "steady"},
            driver,
            "both sampled",
        )
        ps = orjson.loads(_capsule(cluster, home, "agents", "ps", "--json").stdout)
        rows = {r["task"]: r for r in ps if r["session"] == run}
        assert {t: (r["node"], r["pid"]) for t, r in rows.items()} == {
            t: ("node-b", of(events, "task.started", t)[0]["pid"]) for t in ("long", "steady")
        }
        assert all(r["rss"] > 0 for r in rows.values()), rows
        table = _capsule(cluster, home, "agents", "ps").stdout
        assert table.splitlines()[0].split()[:4] == ["session", "task", "attempt", "node"], table
        assert {t: s["node"] for t, s in _status(cluster, home).items()} == {
            "long": "node-b",
            "steady": "node-b",
        }
        scratch = cluster.homes["node-b"] / "ray"
        mine = {p.parent for p in scratch.glob(f"attempt-*/{run}")}
        assert len(mine) == 2, mine  # long's and steady's
        worker = _worker(of(events, "task.started", "long")[0]["pid"])
        worker.send_signal(signal.SIGKILL)
        events = _wait_for(home, lambda ev: of(ev, "task.exited", "long"), driver, "long's end")
        assert of(events, "task.exited", "long")[0]["outcome"] == "lost"
        assert driver.wait(120) == 0, driver.stderr.read() if driver.stderr else ""
    finally:
        _end(driver)
    events = session_events(home)
    assert [e["outcome"] for e in of(events, "task.exited", "long")] == ["lost", "succeeded"]
    # the retry's attempt swept the killed worker's folder while steady's, alive, stayed
    assert not [p for p in mine if p.exists()], mine
    assert not list(scratch.glob(f"attempt-*/{run}"))
    status = _status(cluster, home)
    assert status["steady"]["state"] == "succeeded"
    steady = of(events, "task.started", "steady")[0]
    assert (Path(steady["log_dir"]) / "1.out").read_text() == "steady\nafter\n"
