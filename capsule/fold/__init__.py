"""Pure reducers over events: the process tree, labels and workflows, agent runs, the session state.

state = SessionState.new(rules)          # rules = RuleSet.from_toml(labels, workflows, user_rules)
for event in events:
    state = apply(state, event)          # or fold_session(events, rules) in one call
"""

from __future__ import annotations

import importlib
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
    "AgentRun": "capsule.fold.agents",
    "Phase": "capsule.fold.agents",
    "ToolCall": "capsule.fold.agents",
    "agent_runs": "capsule.fold.agents",
    "LABELS": "capsule.fold.labels",
    "PACKAGED_RULE_FILES": "capsule.fold.labels",
    "WORKFLOWS": "capsule.fold.labels",
    "Classification": "capsule.fold.labels",
    "Rule": "capsule.fold.labels",
    "RuleError": "capsule.fold.labels",
    "RuleSet": "capsule.fold.labels",
    "ExecAttempt": "capsule.fold.process_tree",
    "ProcessNode": "capsule.fold.process_tree",
    "ProcessTree": "capsule.fold.process_tree",
    "fold_tree": "capsule.fold.process_tree",
    "SessionState": "capsule.fold.session",
    "apply": "capsule.fold.session",
    "fold_session": "capsule.fold.session",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
