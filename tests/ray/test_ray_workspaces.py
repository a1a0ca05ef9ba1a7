"""`executor = "ray"` with workspaces, outputs and the cache, hooks, compensate and limits, on the real
two-node cluster of tests/ray/conftest.py: each task's worktree is made, committed and removed on the
node that ran it; outputs reach a dependent on the other node; a second run is all cached; hooks and
compensate run on the task's node, in its worktree; a memory limit is enforced there."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.agents.conftest import of, session_events
from tests.agents.test_workspaces import git, repo  # noqa: F401 (repo: the fixture, one commit f.txt = base)
from tests.ray.conftest import Cluster
from tests.ray.test_ray_executor import _alive, _capsule, _status

pytestmark = [pytest.mark.ray]

WORKTREES = """
[run]
parallel = 3
author = "Capsule Bot <bot@example.com>"
[resources]
alpha = 2
beta = 2
[defaults]
isolate = "worktree"
cwd = "repo"
cache = true
[[task]]
id = "a"
uses = ["alpha"]
command = "echo from-a > f.txt; mkdir out; echo a-on-$CAPSULE_NODE > out/a.txt; echo a-stdout; while [ ! -e {flags}/b.started ]; do sleep 0.01; done"
outputs = ["out/*.txt"]
verify = ["grep -q from-a f.txt"]
[[task]]
id = "r"
uses = ["beta"]
command = "test -e {flags}/r-ran || { touch {flags}/r-ran; echo junk > junk.txt; exit 3; }; test ! -e junk.txt && echo r > r.txt"
retries = 1
backoff = "0.1s"
[[task]]
id = "b"
uses = ["beta"]
command = "touch {flags}/b.started; echo from-b > f.txt"
[[task]]
id = "c"
uses = ["beta"]
depends_on = ["a"]
command = "cat $CAPSULE_INPUTS/a/out/a.txt {inputs.a.stdout}"
"""


def _plan(tmp_path: Path, cluster: Cluster, text: str) -> Path:
    """A plan run on the cluster: `text`, which starts with its [run] table, told the executor."""
    plan = tmp_path / "plan.toml"
    plan.write_text(text.replace("[run]\n", f'[run]\nexecutor = "ray"\naddress = "{cluster.address}"\n', 1))
    return plan


def test_worktree_tasks_on_both_nodes_commit_branches_and_feed_a_dependent(
    cluster: Cluster,
    tmp_path: Path,
    repo: Path,  # noqa: F811
) -> None:
    """Two tasks writing the same file at once, each in a worktree on its node: both succeed, each branch
    holds its change, the checkout is untouched; a retried task starts afresh from the base; a's outputs
    reach c on the other node; a second run is all cached; `agents merge` merges a's and r's branches and
    stops at b's conflict."""
    home = tmp_path / "home"
    flags = tmp_path / "flags"
    flags.mkdir()
    head = git(repo, "rev-parse", "HEAD").strip()
    plan = _plan(tmp_path, cluster, WORKTREES.replace("{flags}", str(flags)))
    done = _capsule(cluster, home, "agents", "run", str(plan))
    assert done.returncode == 0, done.stderr
    events = session_events(home)
    run = events[0]["session_id"]
    placed = [(e["task"], e["attempt"], e["node"]) for e in of(events, "task.placed")]
    assert sorted(placed) == [
        ("a", 1, "node-a"), ("b", 1, "node-b"), ("c", 1, "node-b"), ("r", 1, "node-b"), ("r", 2, "node-b")
    ]  # fmt: skip
    # the checkout is untouched; each branch holds its task's change, from the checkout's HEAD
    assert (repo / "f.txt").read_text() == "base\n"
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "HEAD").strip() == head
    collected = {e["task"]: e for e in of(events, "task.collected")}
    assert sorted(collected["a"]["files"]) == ["f.txt", "out/a.txt"]
    assert collected["b"]["files"] == ["f.txt"]
    assert collected["c"]["commit"] is None  # c changed nothing
    assert collected["r"]["files"] == ["r.txt"]  # the retry started afresh: no junk of the first attempt
    for task, text in (("a", "from-a\n"), ("b", "from-b\n")):
        branch = f"capsule/{run}/{task}"
        assert collected[task]["branch"] == branch
        assert git(repo, "show", f"{branch}:f.txt") == text
        assert git(repo, "rev-parse", f"{branch}^").strip() == head
        assert git(repo, "log", "-1", "--format=%an <%ae>", branch).strip() == "Capsule Bot <bot@example.com>"
    # the worktrees were made on the nodes (under their homes), and removed there once kept
    assert git(repo, "worktree", "list").count("\n") == 1
    for node in ("node-a", "node-b"):
        assert (cluster.homes[node] / "worktrees" / run).is_dir(), node
        scratch = cluster.homes[node] / "ray"  # shared with the other tests' runs: this run's, none left
        assert not list(scratch.glob(f"attempt-*/{run}")), node
        assert not list(scratch.glob("keep-*")), node
    assert not (home / "worktrees").exists()
    # a's outputs came back to the driver, and went on to c on node-b
    outputs = home / "runs" / run / "outputs"
    assert (outputs / "a" / "out" / "a.txt").read_text() == "a-on-node-a\n"
    assert (outputs / "a" / "stdout").read_text() == "a-stdout\n"
    started = {e["task"]: e for e in of(events, "task.started")}
    assert (Path(started["c"]["log_dir"]) / "1.out").read_text() == "a-on-node-a\na-stdout\n"
    # the same plan again: every task from the cache, none placed on a node
    again = _capsule(cluster, home, "agents", "run", str(plan))
    assert again.returncode == 0, again.stderr
    second = session_events(home)
    assert second[0]["session_id"] != run
    assert not of(second, "task.placed")
    assert {t: s["state"] for t, s in _status(cluster, home).items()} == dict.fromkeys("arbc", "cached")
    # the branches are in the repository: merge a and r, then b's conflict in one line
    merged = _capsule(cluster, home, "agents", "merge", run, "--repo", str(repo))
    assert merged.returncode == 1, merged.stderr
    assert "merged a" in merged.stdout
    assert "merged r" in merged.stdout
    assert merged.stderr.strip() == (
        "capsule: error: merging task 'b' conflicts in f.txt; merge aborted, 2 merged before it"
    )
    assert (repo / "f.txt").read_text() == "from-a\n"
    assert (repo / "r.txt").read_text() == "r\n"
    assert git(repo, "status", "--porcelain") == ""


def test_hooks_compensate_and_a_memory_limit_on_the_task_node(
    cluster: Cluster,
    tmp_path: Path,
    repo: Path,  # noqa: F811
) -> None:
    """s runs in a worktree on node-b; hog, on node-a, passes its memory limit and is stopped there; the
    post and error hooks run on each task's node (s's in its worktree), and compensate undoes s on node-b
    in its worktree, which is removed at the run's end."""
    home = tmp_path / "home"
    hooks, marker = tmp_path / "hooks.log", tmp_path / "compensated"
    hog = f"{sys.executable} -c 'import time; b = bytearray(200 * 2**20); time.sleep(30)'"
    hook = f'echo \\"$CAPSULE_TASK $CAPSULE_NODE $(pwd)\\" >> {hooks}; echo continue'
    plan = _plan(
        tmp_path,
        cluster,
        f"""
[run]
on_failure = "compensate"
[resources]
alpha = 2
beta = 2
[[hook]]
on = "post"
command = "{hook}"
[[hook]]
on = "error"
command = "{hook}"
[[task]]
id = "s"
uses = ["beta"]
cwd = "repo"
isolate = "worktree"
command = "echo s > s.txt"
compensate = "echo \\"$CAPSULE_NODE $(pwd)\\" > {marker}; test -f s.txt"
[[task]]
id = "hog"
uses = ["alpha"]
depends_on = ["s"]
command = "{hog}"
limits = {{ memory = "100MiB" }}
timeout = "20s"
""",
    )
    done = _capsule(cluster, home, "agents", "run", str(plan))
    assert done.returncode == 1, done.stderr
    events = session_events(home)
    run = events[0]["session_id"]
    worktree = cluster.homes["node-b"] / "worktrees" / run / "s"
    assert {e["task"]: e["node"] for e in of(events, "task.placed")} == {"s": "node-b", "hog": "node-a"}
    # the limit, measured and enforced on node-a
    hit = of(events, "task.limit_exceeded", "hog")[0]
    assert hit["limit"] == "memory"
    assert hit["measured"] > 100 * 2**20
    assert of(events, "task.failed", "hog")[0]["outcome"] == "limit_exceeded"
    leader = of(events, "task.started", "hog")[0]
    assert not _alive(leader["pid"], leader["started"])
    # each hook where its task ran: s's post hook in s's worktree on node-b, hog's error hook on node-a
    assert sorted(hooks.read_text().splitlines()) == sorted(
        [f"s node-b {worktree}", f"hog node-a {tmp_path}"]
    )
    assert of(events, "task.compensated", "s")[0]["ok"] is True
    assert marker.read_text() == f"node-b {worktree}\n"
    # s's worktree went at the end, on its node; its branch stays
    assert not worktree.exists()
    assert git(repo, "worktree", "list").count("\n") == 1
    assert git(repo, "show", f"capsule/{run}/s:s.txt") == "s\n"


def test_a_cwd_missing_on_the_node_is_one_line(cluster: Cluster, tmp_path: Path) -> None:
    """A task whose cwd is not on the node that takes it ends `spawn_failed`, saying so in one line."""
    home = tmp_path / "home"
    plan = _plan(
        tmp_path,
        cluster,
        '[run]\n[resources]\nbeta = 2\n[[task]]\nid = "t"\nuses = ["beta"]\ncwd = "gone"\n'
        'isolate = "worktree"\ncommand = "true"\n',
    )
    done = _capsule(cluster, home, "agents", "run", str(plan))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    failed = of(session_events(home), "task.failed", "t")[0]
    assert failed["outcome"] == "spawn_failed"
    assert failed["reason"] == (
        f"cannot start sh: {tmp_path / 'gone'} is not on node node-b: on a Ray cluster the task's cwd (its repository) "
        "must be at the same path on every node that may take it"
    )
