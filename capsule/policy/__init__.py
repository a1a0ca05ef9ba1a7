"""The guard's policy: the `[policy]` table parsed and validated (`rules`), and the decisions made on it
(`commands` for execs, `paths` for files). Pure: the guard in `capsule.stages.guard` does the I/O."""

from capsule.policy.commands import Verdict, decide_exec, denied_command, shell_commands
from capsule.policy.paths import protected_path, read_only_path
from capsule.policy.rules import MECHANISMS, Policy, PolicyError, parse_policy

__all__ = [
    "MECHANISMS",
    "Policy",
    "PolicyError",
    "Verdict",
    "decide_exec",
    "denied_command",
    "parse_policy",
    "protected_path",
    "read_only_path",
    "shell_commands",
]
