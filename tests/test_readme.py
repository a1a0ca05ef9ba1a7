"""The README's configuration examples parse with the real parsers (a copied example must work)."""

from __future__ import annotations

import re
from pathlib import Path

from capsule.env.config import parse_config
from capsule.fold.labels import RuleSet
from capsule.plan.spec import parse_plan

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
TOML = re.findall(r"```toml\n(.*?)```", README, re.S)


def test_rules_example_parses() -> None:
    """The rules.toml example compiles."""
    (block,) = [b for b in TOML if "[[label]]" in b]
    rules = RuleSet.from_toml(block)
    assert rules.classify([("/usr/bin/mylint", ("mylint", "--check-all"))]).workflow == "test"


def test_capsule_toml_example_parses() -> None:
    """The capsule.toml example is a valid environment, in dependency order."""
    (block,) = [b for b in TOML if "[[process]]" in b]
    assert [p.name for p in parse_config(block, "README").processes] == ["db", "web"]


def test_plan_example_parses() -> None:
    """The agent plan example is a valid plan."""
    (block,) = [b for b in TOML if "[[task]]" in b]
    assert [t.id for t in parse_plan(block, name="README").tasks] == ["fix-lint", "fix[a.py]", "fix[b.py]"]


def test_policy_example_parses() -> None:
    """The guardrails example is a valid [policy] table, and the same table fits a plan."""
    import tomllib

    from capsule.policy import parse_policy

    (block,) = [b for b in TOML if b.startswith("[policy]\ndeny_commands")]
    policy = parse_policy(tomllib.loads(block)["policy"])
    assert "curl * | sh" in policy.deny_commands
    assert policy.on_violation == "block"
    plan = parse_plan(block + '[[task]]\nid = "t"\ncommand = "true"\n', name="README")
    assert plan.policy == policy
