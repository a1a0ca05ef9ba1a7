"""`isolate = "copy"` on the real two-node cluster of tests/ray/conftest.py: each task works on a copy of a
plain folder made on the node that runs it, under that node's home; the folder is untouched; each task's
outputs come from its copy, back to the driver, and on to a dependent on the other node; a retry starts
from a fresh copy; the copies are removed on their nodes once kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agents.conftest import of, session_events
from tests.ray.conftest import Cluster
from tests.ray.test_ray_executor import _capsule, _status
from tests.ray.test_ray_workspaces import _plan

pytestmark = [pytest.mark.ray]

COPIES = """
[run]
parallel = 3
[resources]
alpha = 2
beta = 2
[defaults]
isolate = "copy"
cwd = "plain"
[[task]]
id = "a"
uses = ["alpha"]
command = "echo a >> data.txt; mkdir out; cp data.txt out/a.txt; echo a-on-$CAPSULE_NODE"
outputs = ["out/*.txt"]
verify = ["test -f out/a.txt"]
[[task]]
id = "b"
uses = ["beta"]
command = "echo b >> data.txt; cp data.txt b.txt; pwd"
outputs = ["b.txt"]
[[task]]
id = "r"
uses = ["beta"]
command = "test -e {flags}/r-ran || {{ touch {flags}/r-ran; echo junk > junk.txt; exit 3; }}; test ! -e junk.txt && echo * > r.txt"
outputs = ["r.txt"]
retries = 1
backoff = "0.1s"
[[task]]
id = "c"
uses = ["beta"]
depends_on = ["a"]
command = "cat $CAPSULE_INPUTS/a/out/a.txt {{inputs.a.stdout}}; cat data.txt"
"""


def test_copy_workspaces_on_both_nodes_keep_each_tasks_outputs(cluster: Cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "data.txt").write_text("base\n")
    flags = tmp_path / "flags"
    flags.mkdir()
    plan = _plan(tmp_path, cluster, COPIES.format(flags=flags))
    done = _capsule(cluster, home, "agents", "run", str(plan))
    assert done.returncode == 0, done.stderr
    events = session_events(home)
    run = events[0]["session_id"]
    placed = sorted((e["task"], e["attempt"], e["node"]) for e in of(events, "task.placed"))
    assert placed == [
        ("a", 1, "node-a"), ("b", 1, "node-b"), ("c", 1, "node-b"), ("r", 1, "node-b"), ("r", 2, "node-b")
    ]  # fmt: skip
    # the folder is untouched: every task wrote to its own copy
    assert sorted(p.name for p in folder.iterdir()) == ["data.txt"]
    assert (folder / "data.txt").read_text() == "base\n"
    collected = {e["task"]: e for e in of(events, "task.collected")}
    assert collected["a"]["outputs"] == ["stdout", "out/a.txt"]
    assert collected["b"]["outputs"] == ["stdout", "b.txt"]
    assert collected["r"]["outputs"] == ["stdout", "r.txt"]
    assert {t: s["state"] for t, s in _status(cluster, home).items()} == dict.fromkeys("abrc", "succeeded")
    # each task's outputs came back from its copy, on its node, to the driver's run
    outputs = home / "runs" / run / "outputs"
    assert (outputs / "a" / "out" / "a.txt").read_text() == "base\na\n"
    assert (outputs / "a" / "stdout").read_text() == "a-on-node-a\n"
    assert (outputs / "b" / "b.txt").read_text() == "base\nb\n"
    # b ran in its copy, under node-b's home
    assert (outputs / "b" / "stdout").read_text() == f"{cluster.homes['node-b'] / 'workspaces' / run / 'b'}\n"
    # the retry started from a fresh copy: no junk of the first attempt
    assert (outputs / "r" / "r.txt").read_text().split() == ["data.txt"]
    # a's outputs reached c on the other node; c's own copy has the folder's data, not a's
    started = {e["task"]: e for e in of(events, "task.started")}
    assert (Path(started["c"]["log_dir"]) / "1.out").read_text() == "base\na\na-on-node-a\nbase\n"
    # the copies were made on the nodes and removed there once kept; none on the driver
    for node in ("node-a", "node-b"):
        copies = cluster.homes[node] / "workspaces" / run
        assert copies.is_dir(), node
        assert not list(copies.iterdir()), node
    assert not (home / "workspaces").exists()
