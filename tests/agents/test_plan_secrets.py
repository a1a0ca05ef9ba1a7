"""A plan as a session keeps it: env names, never values; the writer redacts what plans put in events."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from capsule.codec import decode_line
from capsule.events import SessionStarted
from capsule.events.env import SvcStarting
from capsule.events.tasks import RunPlanned
from capsule.plan import PlanError, parse_plan, plan_from_json
from capsule.stages.record import SessionWriter

PLAN = """
[run]
name = "p"
[[task]]
id = "deploy"
command = "deploy --token=planted-plan-token; echo done"
env = { DB_PASSWORD = "planted-env-value", REGION = "eu" }
"""


def test_stored_plan_keeps_env_names_only_and_the_same_hashes() -> None:
    """`Plan.to_json` drops env values; the plan restored from it has the same spec hashes."""
    plan = parse_plan(PLAN.replace("--token=planted-plan-token", "--verbose"), name="p")
    text = plan.to_json()
    assert "planted-env-value" not in text
    assert "eu" not in orjson.loads(text)["tasks"][0]["env_names"]
    restored = plan_from_json(text)
    (task,) = restored.tasks
    assert task.env == ()
    assert task.env_names == ("DB_PASSWORD", "REGION")
    assert task.spec_hash == plan.tasks[0].spec_hash


def test_v1_run_planned_is_read_without_its_env_values() -> None:
    """A session written before v2 still holds env values on disk; the upcaster drops them as it is read."""
    plan = parse_plan(PLAN, name="p")
    import attrs

    v1_plan = orjson.dumps(attrs.asdict(plan)).decode()
    assert "planted-env-value" in v1_plan
    line = orjson.dumps(
        {
            "kind": "run.planned",
            "v": 1,
            "seq": 1,
            "ts": 1.0,
            "name": "p",
            "parallel": 1,
            "halt": "never",
            "on_failure": "stop",
            "tasks": ["deploy"],
            "spec_hashes": ["x"],
            "depends_on": [""],
            "plan": v1_plan,
        }
    )
    _seq, event = decode_line(line)
    assert isinstance(event, RunPlanned)
    assert "planted-env-value" not in event.plan
    assert plan_from_json(event.plan).tasks[0].env_names == ("DB_PASSWORD", "REGION")


def test_writer_redacts_plan_events_unless_the_header_opts_out(tmp_path: Path) -> None:
    """Every event through the session writer is redacted; a `redacted = false` header turns it off."""
    header = SessionStarted(ts=1.0, capsule_version="x", session_id="s", session_kind="env")
    svc = SvcStarting(ts=1.0, name="api", argv=("srv", "--token=planted-svc-token"), cwd="/")
    writer = SessionWriter(tmp_path / "a.jsonl")
    writer.write([header, svc])
    writer.close()
    assert b"planted-svc-token" not in (tmp_path / "a.jsonl").read_bytes()
    raw = SessionWriter(tmp_path / "b.jsonl")
    raw.write(
        [SessionStarted(ts=1.0, capsule_version="x", session_id="s", session_kind="run", redacted=False), svc]
    )
    raw.close()
    assert b"planted-svc-token" in (tmp_path / "b.jsonl").read_bytes()


def test_stored_commands_are_redacted_and_such_a_plan_is_not_resumed_blindly() -> None:
    """Commands in the stored plan are masked; restoring one refuses (resume needs `--plan FILE`)."""
    plan = parse_plan(PLAN, name="p")
    text = plan.to_json()
    assert "planted-plan-token" not in text
    assert "; echo done" in text
    with pytest.raises(PlanError, match="resume with --plan FILE"):
        plan_from_json(text)
