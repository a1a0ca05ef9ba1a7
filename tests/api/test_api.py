"""The application door in process: its error family and exit codes, its records as JSON and MCP schemas."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from capsule.api import agents, environments, sessions
from capsule.api.errors import (
    BadInput,
    CapsuleError,
    CheckFailed,
    NotDelivered,
    NotFound,
    RecordingFailed,
    Unavailable,
    UsageError,
    error,
)
from capsule.api.records import plain
from capsule.cli.base import CliError, fail


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (CheckFailed, 1),
        (UsageError, 2),
        (NotFound, 3),
        (BadInput, 4),
        (Unavailable, 5),
        (NotDelivered, 6),
        (RecordingFailed, 125),
    ],
)
def test_each_error_carries_its_exit_code(cls: type[CapsuleError], code: int) -> None:
    """The README's exit codes, one class each; `error(message, code)` picks the class."""
    assert cls("x").code == code
    made = error("one line", code)
    assert type(made) is cls
    assert str(made) == "one line"
    assert issubclass(cls, CapsuleError)


def test_the_cli_error_is_the_family() -> None:
    """The CLI raises and catches the door's errors: `fail` is `error`, `CliError` is `CapsuleError`."""
    assert CliError is CapsuleError
    with pytest.raises(NotFound, match="gone"):
        fail("gone", 3)
    odd = error("odd", 42)
    assert type(odd) is CapsuleError
    assert odd.code == 42


def test_bad_references_raise_the_family(capsule_home: Path, tmp_path: Path) -> None:
    """No session, no config, a broken plan: each a member of the family with a one-line message."""
    with pytest.raises(NotFound, match=r"^no sessions yet under .*`capsule run -- CMD`$"):
        sessions.resolve("latest")
    with pytest.raises(NotFound, match=r"no capsule\.toml"):
        environments.config_file(tmp_path)
    plan = tmp_path / "plan.toml"
    plan.write_text('[[task]]\nid = "a"\ncommand = "true"\ndepends_on = ["a"]\n')
    with pytest.raises(BadInput) as caught:
        agents.load_plan(plan)
    assert "\n" not in str(caught.value)
    good = tmp_path / "ok.toml"
    good.write_text('[[task]]\nid = "a"\ncommand = "true"\n')
    with pytest.raises(UsageError, match="--parallel must be at least 1"):
        agents.load_plan(good, None, 0)
    with pytest.raises(UsageError, match="unknown --level 'loud'"):
        sessions.check_level("loud")


@attrs.frozen(kw_only=True)
class _Inner:
    path: Path


@attrs.frozen(kw_only=True)
class _Outer:
    names: tuple[str, ...]
    inner: tuple[_Inner, ...]


def test_plain_is_json_ready() -> None:
    """Tuples become lists, paths strings, nested records dicts; fields keep their order."""
    record = _Outer(names=("a", "b"), inner=(_Inner(path=Path("/x")),))
    assert plain(record) == {"names": ["a", "b"], "inner": [{"path": "/x"}]}
    assert list(plain(record)) == ["names", "inner"]
    assert plain((record,)) == [plain(record)]


@pytest.mark.parametrize(
    "record",
    [
        sessions.SessionRow,
        sessions.Recorded,
        environments.EnvironmentStatus,
        environments.EnvironmentRow,
        environments.ManagedProcess,
        agents.RunStatus,
        agents.TaskResult,
        agents.RunningTask,
    ],
)
def test_mcp_schemas_follow_the_records(record: type) -> None:
    """Each MCP output model has exactly the record's fields (a field added reaches MCP by itself)."""
    from capsule.mcp.schema import model_of

    model = model_of(record)
    assert list(model.model_fields) == [f.name for f in attrs.fields(record)]
    schema = model.model_json_schema()
    assert schema["type"] == "object"
    assert "path" not in {p.get("format") for p in schema["properties"].values()}
