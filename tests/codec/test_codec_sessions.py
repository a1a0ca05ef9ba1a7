"""Every line of every committed session, and a hand-built line of every kind, validates against schemas/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from capsule.codec import encode_line, encode_lines
from capsule.codec.schema import schema_filename
from capsule.events import EVENT_TYPES, Event
from capsule.stages import schemas as schemas_stage

SESSIONS_DIR = Path(__file__).resolve().parents[2] / "sessions"


@pytest.fixture(scope="module")
def validators() -> dict[str, Draft202012Validator]:
    """A validator per committed schema file, older versions included."""
    committed = schemas_stage.read_committed(schemas_stage.SCHEMA_DIR)
    return {name: Draft202012Validator(json.loads(text)) for name, text in committed.items()}


def line_errors(line: bytes, validators: dict[str, Draft202012Validator]) -> list[str]:
    """Why one line does not validate against the schema of its kind and version; [] when it does."""
    try:
        obj: Any = json.loads(line)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    if not isinstance(obj, dict):
        return ["not a JSON object"]
    name = schema_filename(str(obj.get("kind")), obj.get("v"))
    validator = validators.get(name)
    if validator is None:
        return [f"no schema {name}"]
    return [error.message for error in validator.iter_errors(obj)]


def test_committed_session_lines_validate(validators: dict[str, Draft202012Validator]) -> None:
    """Every line of every session under sessions/ (agents ones included) validates."""
    failures = []
    for path in sorted(SESSIONS_DIR.glob("**/events.jsonl")):
        data = path.read_bytes()
        lines = data.split(b"\n")
        if data.endswith(b"\n"):
            lines.pop()  # the empty string after the final newline is not a line; a torn tail is, and fails
        for line_no, line in enumerate(lines, 1):
            failures.extend(f"{path}:{line_no}: {error}" for error in line_errors(line, validators))
    assert failures == []


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.KIND)
def test_sample_line_of_every_kind_validates(
    cls: type[Event], sample_events: tuple[Event, ...], validators: dict[str, Draft202012Validator]
) -> None:
    """A hand-built event of each kind encodes to a line its committed schema accepts."""
    for seq, event in enumerate(sample_events):
        if type(event) is cls:
            assert line_errors(encode_line(seq, event), validators) == []


def test_sample_session_validates_line_by_line(
    sample_events: tuple[Event, ...], validators: dict[str, Draft202012Validator]
) -> None:
    """A whole encoded sample session validates, each line against its own kind's schema."""
    lines = encode_lines(0, list(sample_events)).splitlines()
    assert len(lines) == len(sample_events)
    assert [error for line in lines for error in line_errors(line, validators)] == []


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b'{"kind":"proc.exited","v":1,"seq":0,"ts":1.0,"pid":1,"extra":2}', "Additional properties"),
        (b'{"kind":"proc.exited","v":1,"seq":-1,"ts":1.0,"pid":1}', "less than the minimum"),
        (b'{"kind":"proc.exited","v":1,"seq":0,"ts":1.0}', "'pid' is a required property"),
        (b'{"kind":"proc.exited","v":1,"seq":0,"ts":1.0,"pid":"1"}', "is not of type 'integer'"),
        (b'{"kind":"proc.exited","v":1,"seq":0,"ts":1.0,"pid":1,"core_dumped":0}', "not of type 'boolean'"),
        (b'{"kind":"proc.exited","v":9,"seq":0,"ts":1.0,"pid":1}', "no schema proc.exited.v9.json"),
        (
            b'{"kind":"proc.exec","v":1,"seq":0,"ts":1.0,"pid":1,"path":"x","argv":[1],"ok":true}',
            "not of type",
        ),
        (b"[1]", "not a JSON object"),
        (b"{", "not JSON"),
    ],
)
def test_bad_lines_do_not_validate(
    line: bytes, error: str, validators: dict[str, Draft202012Validator]
) -> None:
    """The schemas are strict enough to catch extra, missing and ill-typed fields."""
    errors = line_errors(line, validators)
    assert errors
    assert any(error in message for message in errors), errors
