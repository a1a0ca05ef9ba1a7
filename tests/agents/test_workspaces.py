"""Agent runs sharing a repository, with real git and real processes: worktrees per task, commits on
branches, the checkout untouched, `agents result` and `agents merge`; copies of non-git folders; outputs
reaching dependents; verify and compensate in the workspace."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from tests.agents.conftest import of


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit: f.txt = base."""
    where = tmp_path / "repo"
    where.mkdir()
    git(where, "init", "-q", "-b", "main")
    git(where, "config", "user.email", "dev@example.com")
    git(where, "config", "user.name", "Dev")
    (where / "f.txt").write_text("base\n")
    (where / "sub").mkdir()
    (where / "sub" / "keep.txt").write_text("k\n")
    git(where, "add", ".")
    git(where, "commit", "-q", "-m", "base")
    return where


PARALLEL = """
[run]
parallel = 2
author = "Capsule Bot <bot@example.com>"
[defaults]
isolate = "worktree"
cwd = "repo"
[[task]]
id = "a"
command = "echo from-a > f.txt; touch a.flag; while [ ! -e {flags}/b.started ]; do sleep 0.01; done"
verify = ["grep -q from-a f.txt"]
[[task]]
id = "b"
command = "touch {flags}/b.started; echo from-b > f.txt"
"""


def test_parallel_tasks_in_worktrees_commit_on_branches(agents, repo: Path, tmp_path: Path, capsule) -> None:
    """Two tasks writing the same file at once, each in its worktree: both succeed, each branch holds its
    change, the checkout is untouched, and the worktrees are gone (the branches stay)."""
    flags = tmp_path / "flags"
    flags.mkdir()
    head = git(repo, "rev-parse", "HEAD").strip()
    done, events = agents(PARALLEL.replace("{flags}", str(flags)))
    assert done.returncode == 0, done.stderr
    assert (repo / "f.txt").read_text() == "base\n"
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "HEAD").strip() == head
    run = events[0]["session_id"]
    collected = {e["task"]: e for e in of(events, "task.collected")}
    assert collected["a"]["branch"] == f"capsule/{run}/a"
    assert sorted(collected["a"]["files"]) == ["a.flag", "f.txt"]
    assert collected["a"]["insertions"] == 1
    assert collected["a"]["deletions"] == 1
    assert collected["b"]["files"] == ["f.txt"]
    for task, text in (("a", "from-a\n"), ("b", "from-b\n")):
        branch = f"capsule/{run}/{task}"
        assert git(repo, "show", f"{branch}:f.txt") == text
        assert git(repo, "rev-parse", f"{branch}^").strip() == head
        assert git(repo, "log", "-1", "--format=%an <%ae> %s", branch).strip() == (
            f"Capsule Bot <bot@example.com> capsule: run {run} task {task}"
        )
    assert git(repo, "worktree", "list").count("\n") == 1  # only the checkout
    replayed = capsule("replay", "--check", run)
    assert replayed.returncode == 0, replayed.stderr + replayed.stdout
    shown = capsule("agents", "result", "a", "--json")
    result = orjson.loads(shown.stdout)
    assert result["branch"] == f"capsule/{run}/a"
    assert result["commit"] == collected["a"]["commit"]
    assert f"branch capsule/{run}/a at " in (text := capsule("agents", "result", "a").stdout)
    assert "2 files changed, +1 -1" in text
    assert "\n  verify: grep -q from-a f.txt: ok\n" in text  # one readable line, not a dict


def test_merge_merges_in_plan_order_and_stops_at_conflict(
    agents, repo: Path, tmp_path: Path, capsule
) -> None:
    """`agents merge` merges a's branch, then stops at b's conflict with one line; the checkout is clean."""
    flags = tmp_path / "flags"
    flags.mkdir()
    done, events = agents(PARALLEL.replace("{flags}", str(flags)))
    assert done.returncode == 0, done.stderr
    run = events[0]["session_id"]
    merged = capsule("agents", "merge", run, "--repo", str(repo))
    assert merged.returncode == 1
    assert "merged a" in merged.stdout
    assert merged.stderr.strip() == (
        "capsule: error: merging task 'b' conflicts in f.txt; merge aborted, 1 merged before it"
    )
    assert (repo / "f.txt").read_text() == "from-a\n"
    assert git(repo, "status", "--porcelain") == ""
    again = capsule("agents", "merge", run, "a", "--repo", str(repo), "--json")
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout)["skipped"] == ["a"]


def test_merge_without_conflict_merges_all(agents, repo: Path, capsule) -> None:
    """Tasks changing different files merge one after the other."""
    plan = (
        '[defaults]\nisolate = "worktree"\ncwd = "repo"\n'
        '[[task]]\nid = "x"\ncommand = "echo x > x.txt"\n[[task]]\nid = "y"\ncommand = "echo y > sub/y.txt"\n'
        '[[task]]\nid = "none"\ncommand = "true"\n'
    )
    done, events = agents(plan)
    assert done.returncode == 0, done.stderr
    assert of(events, "task.collected", "none")[0]["commit"] is None
    merged = capsule("agents", "merge", "latest", "--repo", str(repo), "--json")
    assert merged.returncode == 0, merged.stderr
    assert orjson.loads(merged.stdout)["merged"] == ["x", "y"]
    assert (repo / "x.txt").read_text() == "x\n"
    assert (repo / "sub" / "y.txt").read_text() == "y\n"


def test_failed_task_keeps_its_worktree(agents, repo: Path, capsule) -> None:
    """A failure leaves the worktree (and its branch) for inspection; keep_worktree keeps a success's."""
    plan = (
        '[defaults]\nisolate = "worktree"\ncwd = "repo/sub"\n'
        '[[task]]\nid = "bad"\ncommand = "echo half > half.txt; pwd > where; exit 3"\n'
        '[[task]]\nid = "kept"\ncommand = "echo k >> keep.txt"\nkeep_worktree = true\n'
    )
    done, _events = agents(plan)
    assert done.returncode == 1
    bad = orjson.loads(capsule("agents", "result", "bad", "--json").stdout)
    where = Path(bad["workspace"])
    assert (where / "sub" / "half.txt").read_text() == "half\n"
    assert (where / "sub" / "where").read_text().strip() == str(where / "sub")
    kept = orjson.loads(capsule("agents", "result", "kept", "--json").stdout)
    assert Path(kept["workspace"], "sub", "keep.txt").read_text() == "k\nk\n"
    assert not (repo / "sub" / "half.txt").exists()
    assert (repo / "sub" / "keep.txt").read_text() == "k\n"


def test_copy_isolates_a_plain_folder(agents, tmp_path: Path) -> None:
    """isolate = "copy": the task works on a copy; the folder is untouched; outputs come from the copy."""
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "data.txt").write_text("1\n")
    plan = (
        '[[task]]\nid = "c"\ncwd = "plain"\nisolate = "copy"\n'
        'command = "echo 2 >> data.txt; cp data.txt out.txt; echo done"\noutputs = ["out.txt"]\n'
        'verify = ["test -f out.txt"]\n'
        '[[task]]\nid = "d"\ndepends_on = ["c"]\ncommand = "cat $CAPSULE_INPUTS/c/out.txt"\n'
    )
    done, events = agents(plan)
    assert done.returncode == 0, done.stderr
    assert (folder / "data.txt").read_text() == "1\n"
    assert not (folder / "out.txt").exists()
    assert of(events, "task.collected", "c")[0]["outputs"] == ["stdout", "out.txt"]
    log = Path(of(events, "task.started", "d")[0]["log_dir"]) / "1.out"
    assert log.read_text() == "1\n2\n"


def test_outputs_reach_dependents(agents, tmp_path: Path) -> None:
    """A dependency's stdout and output globs reach its dependent: CAPSULE_INPUTS and {inputs.…}."""
    plan = (
        '[[task]]\nid = "gen"\ncommand = "mkdir -p dist; echo w > dist/a.whl; echo r > report.json; echo hello"\n'
        'outputs = ["report.json", "dist/*.whl"]\ncwd = "w"\n'
        '[[task]]\nid = "use"\ndepends_on = ["gen"]\ncwd = "w"\n'
        'command = "cat {inputs.gen.stdout} {inputs.gen.path}/dist/a.whl $CAPSULE_INPUTS/gen/report.json; '
        'echo $CAPSULE_RUN $CAPSULE_TASK"\n'
    )
    (tmp_path / "w").mkdir()
    done, events = agents(plan)
    assert done.returncode == 0, done.stderr
    assert of(events, "task.collected", "gen")[0]["outputs"] == ["stdout", "report.json", "dist/a.whl"]
    log = Path(of(events, "task.started", "use")[0]["log_dir"]) / "1.out"
    assert log.read_text() == f"hello\nw\nr\n{events[0]['session_id']} use\n"


def test_compensate_runs_in_the_workspace(agents, repo: Path, tmp_path: Path) -> None:
    """compensate runs in the task's worktree (kept until the run ends), never in the checkout."""
    marker = tmp_path / "compensated-in"
    plan = (
        '[run]\non_failure = "compensate"\n[defaults]\ncwd = "repo"\nisolate = "worktree"\n'
        f'[[task]]\nid = "s"\ncommand = "echo s > s.txt"\ncompensate = "pwd > {marker}; test -f s.txt"\n'
        '[[task]]\nid = "boom"\ndepends_on = ["s"]\ncommand = "exit 1"\n'
    )
    done, events = agents(plan)
    assert done.returncode == 1
    assert of(events, "task.compensated", "s")[0]["ok"] is True
    assert Path(marker.read_text().strip()).name == "s"
    assert git(repo, "worktree", "list").count("\n") == 2  # the checkout and failed boom's worktree
