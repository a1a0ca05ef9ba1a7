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
    assert [t.id for t in parse_plan(block, name="README").tasks] == ["fix-lint"]
