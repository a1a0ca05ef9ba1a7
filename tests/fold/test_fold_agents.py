"""Agent runs: the topmost agent process, its tool calls and its workflow phases."""

from __future__ import annotations

from capsule.fold import agent_runs, fold_session
from tests.fold.builders import Script, packaged_rules

CLI = "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js"


def agent_session() -> Script:
    """claude (node) re-launches itself, then explores, edits, tests twice and commits."""
    s = Script(step=0.1).start("claude", "-p", "fix the bug")
    s.spawn(10, None, via="root")
    s.exec(10, "/usr/local/bin/claude", "claude", "-p", "fix the bug")
    s.exec(10, "/usr/bin/node", "node", "/usr/local/bin/claude", "-p", "fix the bug")
    s.spawn(11, 10).exec(11, "/usr/bin/node", "node", CLI, "-p", "fix the bug")  # the re-launch
    s.run(20, 11, "/usr/bin/rg", "rg", "-n", "bug")
    s.run(21, 11, "/usr/bin/ps", "ps", "aux")  # system: not a tool call
    s.spawn(22, 11).exec(22, "/bin/bash", "bash", "-c", "cat src/x.py | head")
    s.run(23, 22, "/bin/cat", "cat", "src/x.py").run(24, 22, "/usr/bin/head", "head").exit(22)
    s.run(25, 11, "/bin/sed", "sed", "-i", "s/bug/fix/", "src/x.py")
    s.spawn(26, 11).exec(26, "/bin/bash", "bash", "-c", "python -m pytest -q")
    s.run(27, 26, "/usr/bin/python3", "python", "-m", "pytest", "-q", code=1).exit(26, 1)
    s.spawn(28, 11).exec(28, "/bin/bash", "bash", "-c", "python -m pytest -q")
    s.run(29, 28, "/usr/bin/python3", "python", "-m", "pytest", "-q").exit(28)
    s.run(30, 11, "/usr/bin/git", "git", "commit", "-am", "fix")
    s.exit(11).exit(10).end()
    return s


def test_agent_run_is_the_topmost_agent() -> None:
    """node re-launching node is one agent run, rooted at the first process, named claude-code."""
    state = fold_session(agent_session().events, packaged_rules())
    (run,) = agent_runs(state.tree)
    assert run.pid == 10
    assert run.name == "claude-code"
    assert run.processes == 13  # pids 10, 11 and 20-30


def test_tool_calls_and_their_workflows() -> None:
    """Tool calls are the agent's non-system children; a shell call takes its inner workflow."""
    (run,) = agent_runs(fold_session(agent_session().events, packaged_rules()).tree)
    assert [(c.pid, c.workflow) for c in run.tool_calls] == [
        (20, "explore"),
        (22, "explore"),
        (25, "edit"),
        (26, "test"),
        (28, "test"),
        (30, "vcs"),
    ]
    assert [c.failed for c in run.tool_calls] == [False, False, False, True, False, False]
    assert run.workflows == {"explore": 2, "test": 2, "edit": 1, "vcs": 1}


def test_workflow_phases_over_time() -> None:
    """Consecutive calls of one workflow make one phase; phases are in time order."""
    (run,) = agent_runs(fold_session(agent_session().events, packaged_rules()).tree)
    assert [(p.workflow, p.tools, p.failed) for p in run.phases] == [
        ("explore", 2, 0),
        ("edit", 1, 0),
        ("test", 2, 1),
        ("vcs", 1, 0),
    ]
    starts = [p.start for p in run.phases]
    assert starts == sorted(starts)
    assert all(p.end >= p.start for p in run.phases)


def test_no_agent_no_runs() -> None:
    """A plain build has no agent runs."""
    s = Script().start("make")
    s.run(1, None, "/usr/bin/make", "make").end()
    assert agent_runs(fold_session(s.events, packaged_rules()).tree) == []
