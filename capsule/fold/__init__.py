"""Pure reducers over events: the process tree, labels and workflows, agent runs, the session state.

state = SessionState.new(rules)          # rules = RuleSet.from_toml(labels, workflows, user_rules)
for event in events:
    state = apply(state, event)          # or fold_session(events, rules) in one call
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capsule.fold.agents import AgentRun, Phase, ToolCall, agent_runs
    from capsule.fold.labels import (
        LABELS,
        PACKAGED_RULE_FILES,
        WORKFLOWS,
        Classification,
        Rule,
        RuleError,
        RuleSet,
    )
    from capsule.fold.process_tree import ExecAttempt, ProcessNode, ProcessTree, fold_tree
    from capsule.fold.session import SessionState, apply, fold_session

# Re-exports load on first use (PEP 562): `capsule run` needs only the tally, and importing the
# rules engine, agents and tree with it cost ~10 ms of every start.
_EXPORTS = {
    "AgentRun": "agents",
    "Phase": "agents",
    "ToolCall": "agents",
    "agent_runs": "agents",
    "LABELS": "labels",
    "PACKAGED_RULE_FILES": "labels",
    "WORKFLOWS": "labels",
    "Classification": "labels",
    "Rule": "labels",
    "RuleError": "labels",
    "RuleSet": "labels",
    "ExecAttempt": "process_tree",
    "ProcessNode": "process_tree",
    "ProcessTree": "process_tree",
    "fold_tree": "process_tree",
    "SessionState": "session",
    "apply": "session",
    "fold_session": "session",
}


def __getattr__(name: str) -> Any:
    # Static imports, not importlib: the layering check must see every module the core loads.
    match _EXPORTS.get(name):
        case "agents":
            from capsule.fold import agents as module
        case "labels":
            from capsule.fold import labels as module  # type: ignore[no-redef]
        case "process_tree":
            from capsule.fold import process_tree as module  # type: ignore[no-redef]
        case "session":
            from capsule.fold import session as module  # type: ignore[no-redef]
        case _:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)


__all__ = [
    "LABELS",
    "PACKAGED_RULE_FILES",
    "WORKFLOWS",
    "AgentRun",
    "Classification",
    "ExecAttempt",
    "Phase",
    "ProcessNode",
    "ProcessTree",
    "Rule",
    "RuleError",
    "RuleSet",
    "SessionState",
    "ToolCall",
    "agent_runs",
    "apply",
    "fold_session",
    "fold_tree",
]
