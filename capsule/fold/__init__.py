"""Pure reducers over events: the process tree, labels and workflows, agent runs, the session state.

state = SessionState.new(rules)          # rules = RuleSet.from_toml(labels, workflows, user_rules)
for event in events:
    state = apply(state, event)          # or fold_session(events, rules) in one call
"""

from __future__ import annotations

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
