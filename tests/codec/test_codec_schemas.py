"""schemas/: generated from the records, committed, and checked for drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from capsule.codec.schema import (
    all_schemas,
    drift,
    parse_schema_filename,
    render,
    schema_for,
    stale,
    type_schema,
)
from capsule.events import EVENT_TYPES, ProcExec
from capsule.stages import schemas as schemas_stage

SCHEMA_DIR = schemas_stage.SCHEMA_DIR


def test_committed_schemas_match_the_records() -> None:
    """schemas/ holds exactly what the records generate (run `python -m capsule.stages.schemas write` if not)."""
    assert drift(schemas_stage.read_committed(SCHEMA_DIR)) == []


def test_no_stale_schema_files() -> None:
    """Every committed schema file names a known kind at a version it has had."""
    assert stale(schemas_stage.read_committed(SCHEMA_DIR)) == {}
    assert set(all_schemas()) <= set(schemas_stage.read_committed(SCHEMA_DIR))


def test_every_kind_has_one_schema() -> None:
    """One schema per kind, named `<kind>.v<N>.json`."""
    names = all_schemas()
    assert sorted(names) == sorted(f"{cls.KIND}.v{cls.VERSION}.json" for cls in EVENT_TYPES)


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.KIND)
def test_schema_is_valid_draft_2020_12(cls: type) -> None:
    """Each generated schema is itself a valid draft 2020-12 schema."""
    Draft202012Validator.check_schema(schema_for(cls))


def test_schema_envelope_and_fields() -> None:
    """The envelope, $id, description, required fields and closed object of one kind."""
    schema = schema_for(ProcExec)
    assert schema["$id"] == "capsule/proc.exec/v2"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["description"] == ProcExec.__doc__
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["kind", "v", "seq", "ts", "pid", "path", "argv", "ok"]
    props = schema["properties"]
    assert props["kind"] == {"const": "proc.exec"}
    assert props["v"] == {"const": 2}
    assert props["argv"] == {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]}
    assert props["seq"] == {"type": "integer", "minimum": 0}
    assert props["ts"] == {"type": "number"}
    assert props["errno"] == {"type": ["string", "null"], "default": None}
    assert props["argv_truncated"] == {"type": "boolean", "default": False}


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (str, {"type": "string"}),
        (bool, {"type": "boolean"}),
        (int | None, {"type": ["integer", "null"]}),
        (tuple[str, ...], {"type": "array", "items": {"type": "string"}}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (
            tuple[str, ...] | None,
            {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        ),
    ],
    ids=str,
)
def test_type_schema(annotation: object, expected: dict[str, Any]) -> None:
    """Each supported field type has one JSON Schema spelling."""
    assert type_schema(annotation) == expected


@pytest.mark.parametrize("annotation", [list[int], dict[int, str], tuple[int, str], int | str, bytes])
def test_type_schema_refuses_unknown_types(annotation: object) -> None:
    """A field type the line format cannot spell fails loudly instead of producing a loose schema."""
    with pytest.raises(TypeError, match="no JSON Schema"):
        type_schema(annotation)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("proc.exec.v1.json", ("proc.exec", 1)),
        ("proc.spawn_failed.v12.json", ("proc.spawn_failed", 12)),
        ("proc.exec.v0.json", None),
        ("proc.exec.json", None),
        ("README.md", None),
    ],
)
def test_parse_schema_filename(name: str, expected: tuple[str, int] | None) -> None:
    """File names are `<kind>.v<N>.json` with N >= 1."""
    assert parse_schema_filename(name) == expected


def test_render_is_sorted_indented_and_ends_with_newline() -> None:
    """The file text is stable: sorted keys, 2-space indent, one trailing newline."""
    text = render({"b": 1, "a": {"d": 2, "c": 3}})
    assert text == '{\n  "a": {\n    "c": 3,\n    "d": 2\n  },\n  "b": 1\n}\n'


def test_drift_names_each_problem() -> None:
    """Missing, edited, stale and oddly named files are each reported; older versions are history."""
    committed = {name: render(schema) for name, schema in all_schemas().items()}
    del committed["proc.exec.v2.json"]
    committed["proc.exited.v1.json"] += " "
    committed["proc.exited.v2.json"] = "{}\n"
    committed["gone.kind.v1.json"] = "{}\n"
    committed["notes.json"] = "{}\n"
    assert drift(committed) == [
        "proc.exec.v2.json: missing",
        "proc.exited.v1.json: differs from the generated schema",
        "gone.kind.v1.json: stale, no such kind",
        "notes.json: not a schema file name (<kind>.v<N>.json)",
        "proc.exited.v2.json: stale, proc.exited is at v1",
    ]


def test_drift_keeps_older_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a version bump the previous version's file stays, so old sessions still validate."""
    monkeypatch.setattr(ProcExec, "VERSION", 3)
    committed = {name: render(schema) for name, schema in all_schemas().items()}
    committed["proc.exec.v2.json"] = "{}\n"
    assert drift(committed) == []


def test_write_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`write` fills an empty directory and removes stale files; `check` then passes, and fails on drift."""
    (tmp_path / "gone.kind.v1.json").write_text("{}\n")
    assert schemas_stage.main(["check", "--dir", str(tmp_path)]) == schemas_stage.DRIFT
    assert "gone.kind.v1.json: stale" in capsys.readouterr().err

    assert schemas_stage.main(["write", "--dir", str(tmp_path)]) == schemas_stage.OK
    assert "removed gone.kind.v1.json" in capsys.readouterr().out
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(all_schemas())
    assert schemas_stage.main(["check", "--dir", str(tmp_path)]) == schemas_stage.OK
    assert schemas_stage.write(tmp_path) == []

    (tmp_path / "proc.exec.v2.json").write_text("{}\n")
    assert schemas_stage.main(["check", "--dir", str(tmp_path)]) == schemas_stage.DRIFT
    assert "proc.exec.v2.json: differs" in capsys.readouterr().err


def test_kind_versions_table_matches_the_records() -> None:
    """capsule.events.VERSIONS (the session header's `kinds`, kept as a table so a writer need not load
    every kind) lists every record's kind and current version, in EVENT_TYPES order."""
    from capsule.events import VERSIONS, kind_versions

    assert list(VERSIONS.items()) == [(cls.KIND, cls.VERSION) for cls in EVENT_TYPES]
    assert kind_versions() == VERSIONS
