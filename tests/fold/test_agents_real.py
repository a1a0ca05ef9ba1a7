"""The packaged rules against real agent CLIs, as recorded in `sessions/agent-*/`.

Each session is `capsule run` of an npm-installed agent started offline (a throwaway HOME, no network):
`--version`, or a prompt that stops at the login check (codex has none: it retries the network until
`timeout` stops it). Their shapes differ, and the rules must see each as one agent run:

- claude-code 2.x: `node_modules/.bin/claude` is the native binary itself (no node); it runs git and its
  bundled ripgrep, which is `claude.exe` exec'd with argv[0] = "rg".
- codex: a node shim (`node …/.bin/codex`) spawning the native `@openai/codex-<platform>/…/bin/codex`,
  which runs lsb_release, git and a login-shell snapshot script.
- gemini-cli: node re-launching itself as `node --max-old-space-size=N …/.bin/gemini`; the child runs git.

A re-recorded session must still fold to what is listed here; a new `sessions/agent-*` needs an entry.
"""

from __future__ import annotations

from collections import Counter
from importlib.resources import files
from pathlib import Path

import attrs
import pytest

from capsule.codec import LineDecoder
from capsule.fold import ProcessNode, RuleSet, SessionState, agent_runs
from capsule.fold.labels import basename

SESSIONS = Path(__file__).resolve().parents[2] / "sessions"

Kind = tuple[str, str | None]  # (label, workflow)
TOOL_VCS: Kind = ("tool", "vcs")
TOOL_EXPLORE: Kind = ("tool", "explore")


@attrs.frozen(kw_only=True)
class Expected:
    agent: str
    agent_processes: int  # the root and its re-launches
    # every non-agent process, by the basename of argv[0] (the program as invoked): its (label, workflow)s
    helpers: dict[str, set[Kind]]
    calls: dict[str, int]  # the run's tool calls by workflow


EXPECTED = {
    "agent-claude-version": Expected(agent="claude-code", agent_processes=1, helpers={}, calls={}),
    "agent-claude-prompt": Expected(
        agent="claude-code",
        agent_processes=1,
        helpers={
            "git": {TOOL_VCS},
            "rg": {TOOL_EXPLORE},  # the bundled ripgrep: claude.exe with argv[0] = "rg"
            "grep": {TOOL_EXPLORE},
            "ps": {("system", None)},
            # `sh -c 'git config …'` is a tool; `sh -c 'ps aux | grep -E "code|cursor|…"'` an IDE probe
            "sh": {("tool", "execute"), ("system", "execute")},
        },
        calls={"vcs": 7, "explore": 3},
    ),
    "agent-codex-version": Expected(agent="codex", agent_processes=2, helpers={}, calls={}),
    "agent-codex-exec": Expected(
        agent="codex",
        agent_processes=2,
        helpers={
            "git": {TOOL_VCS},
            "git-remote-https": {TOOL_VCS},
            "lsb_release": {("system", None)},
            "getopt": {("system", None)},
            "getconf": {("system", None)},
            "id": {("system", None)},
            "bash": {("system", "execute")},  # the shell-environment snapshot and its check
            # run by lsb_release and the snapshot script (system), so never tool calls of the agent
            "cut": {TOOL_EXPLORE},
            "tr": {TOOL_EXPLORE},
            "awk": {TOOL_EXPLORE},
            "sed": {TOOL_EXPLORE},
            "wc": {TOOL_EXPLORE},
            # re-recorded 2026-12-01: codex now probes its sandbox (bwrap running `true`) first
            "bwrap": {("system", None)},
            "true": {("system", None)},
        },
        calls={"vcs": 13},
    ),
    "agent-gemini-version": Expected(agent="gemini-cli", agent_processes=2, helpers={}, calls={}),
    "agent-gemini-prompt": Expected(
        agent="gemini-cli", agent_processes=2, helpers={"git": {TOOL_VCS}}, calls={"vcs": 2}
    ),
}


def packaged_rules() -> RuleSet:
    """The rules shipped in capsule/rules/, loaded as `capsule` loads them (no user rules)."""
    sources = [
        (f"capsule/rules/{f.name}", f.read_text(encoding="utf-8"))
        for f in sorted(files("capsule.rules").iterdir(), key=lambda f: f.name)
        if f.name.endswith(".toml")
    ]
    return RuleSet.from_sources(*sources)


def fold(session: Path) -> SessionState:
    decoder = LineDecoder()
    state = SessionState.new(packaged_rules())
    for _seq, event in decoder.feed((session / "events.jsonl").read_bytes()):
        state.apply(event)
    decoder.close()
    assert decoder.bad_lines == []
    assert decoder.torn_tail == b""
    return state


def invoked(node: ProcessNode) -> str:
    argv = node.display_argv
    return basename(argv[0]) if argv else "?"


def recorded() -> list[str]:
    return sorted(p.name for p in SESSIONS.glob("agent-*") if (p / "events.jsonl").is_file())


def test_every_recorded_agent_session_has_expectations() -> None:
    assert recorded(), "no sessions/agent-* recordings"
    assert recorded() == sorted(EXPECTED)


@pytest.mark.parametrize("slug", recorded())
def test_real_agent_session(slug: str) -> None:
    expected = EXPECTED[slug]
    state = fold(SESSIONS / slug)
    tree = state.tree

    (run,) = agent_runs(tree)  # re-launches (node running node, shim running native) are one run
    assert run.name == expected.agent
    root = state.root
    assert root is not None
    assert run.pid == root.pid  # the topmost process is the agent
    assert root.label == "agent"
    assert root.agent == expected.agent
    assert root.workflow is None

    agents = [n for n in tree.nodes if n.label == "agent"]
    assert len(agents) == expected.agent_processes
    for node in agents:
        assert node.agent == expected.agent
        assert node is root or any(a is root for a in tree.ancestors(node))

    helpers: dict[str, set[Kind]] = {}
    for node in tree.nodes:
        if node.label != "agent":
            helpers.setdefault(invoked(node), set()).add((node.label, node.workflow))
    assert helpers == expected.helpers
    assert run.processes == len(tree.nodes)  # everything ran under the agent

    assert dict(Counter(call.workflow for call in run.tool_calls)) == expected.calls
    assert all(tree.node(call.key).label == "tool" for call in run.tool_calls)
