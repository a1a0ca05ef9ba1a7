"""JSON Schemas (draft 2020-12), one per event kind and version, derived from the attrs records.

Pure: `all_schemas()` says what `schemas/` must hold, `render()` gives each file's exact text and `drift()`
compares that with what is committed; `stages/schemas.py` does the reading and writing.
Schemas of older versions stay in `schemas/` as history (their records no longer exist to regenerate them),
so old sessions still validate: only unknown kinds, versions newer than the record's, or odd names are stale.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from capsule.events import EVENT_TYPES, Event

DRAFT = "https://json-schema.org/draft/2020-12/schema"

# `proc.exec.v1.json`: the kind (dots allowed), then the version.
_FILENAME = re.compile(r"(?P<kind>[a-z_][a-z0-9_.]*)\.v(?P<version>[1-9][0-9]*)\.json")

_SCALARS: dict[object, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}

# The line envelope (architecture §3): `ts` is a field of every record but belongs to the envelope too.
_ENVELOPE = ("kind", "v", "seq", "ts")


def schema_filename(kind: str, version: int) -> str:
    """`proc.exec`, 1 -> `proc.exec.v1.json`."""
    return f"{kind}.v{version}.json"


def parse_schema_filename(name: str) -> tuple[str, int] | None:
    """`proc.exec.v1.json` -> (`proc.exec`, 1); None for a name that is not a schema file."""
    match = _FILENAME.fullmatch(name)
    if match is None:
        return None
    return match["kind"], int(match["version"])


def type_schema(annotation: object) -> dict[str, Any]:
    """The schema of one field's type. Raises TypeError for a type the line format has no spelling for."""
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1:
            inner = type_schema(rest[0])
            if inner.keys() == {"type"} and isinstance(inner["type"], str):
                return {"type": [inner["type"], "null"]}
            return {"anyOf": [inner, {"type": "null"}]}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"type": "array", "items": type_schema(args[0])}
    if origin is dict and len(args) == 2 and args[0] is str:
        return {"type": "object", "additionalProperties": type_schema(args[1])}
    raise TypeError(f"no JSON Schema for the field type {annotation!r}")


def _default(field: attrs.Attribute[Any]) -> tuple[bool, Any]:
    """(has a default, its JSON value). Factories are called: they build empty containers."""
    default: Any = field.default
    if default is attrs.NOTHING:
        return False, None
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]  # attrs types Factory as a function
        if default.takes_self:
            return False, None
        default = default.factory()
    if isinstance(default, tuple):
        default = list(default)
    return True, default


def schema_for(cls: type[Event]) -> dict[str, Any]:
    """The JSON Schema of one line of `cls.KIND` at `cls.VERSION`: the envelope plus the record's fields."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {
        "kind": {"const": cls.KIND},
        "v": {"const": cls.VERSION},
        "seq": {"type": "integer", "minimum": 0},
        "ts": {"type": "number"},
    }
    required = list(_ENVELOPE)
    for field in attrs.fields(cls):
        if field.name in properties:
            continue
        prop = type_schema(hints[field.name])
        has_default, default = _default(field)
        if has_default:
            prop["default"] = default
        else:
            required.append(field.name)
        properties[field.name] = prop
    return {
        "$schema": DRAFT,
        "$id": f"capsule/{cls.KIND}/v{cls.VERSION}",
        "title": f"{cls.KIND} v{cls.VERSION} ({cls.__name__})",
        "description": inspect.cleandoc(cls.__doc__ or ""),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    """Every current kind's schema by file name, e.g. `proc.exec.v1.json`."""
    return {schema_filename(cls.KIND, cls.VERSION): schema_for(cls) for cls in EVENT_TYPES}


def render(schema: Mapping[str, Any]) -> str:
    """The exact text of a schema file: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def stale(names: Iterable[str]) -> dict[str, str]:
    """The committed file names that must go, each with why: unknown kinds, unknown versions, odd names.

    A file for an older version of a known kind is history, not stale: old sessions validate against it.
    """
    current = {cls.KIND: cls.VERSION for cls in EVENT_TYPES}
    reasons = {}
    for name in sorted(names):
        parsed = parse_schema_filename(name)
        if parsed is None:
            reasons[name] = "not a schema file name (<kind>.v<N>.json)"
        elif parsed[0] not in current:
            reasons[name] = "stale, no such kind"
        elif parsed[1] > current[parsed[0]]:
            reasons[name] = f"stale, {parsed[0]} is at v{current[parsed[0]]}"
    return reasons


def drift(committed: Mapping[str, str]) -> list[str]:
    """What differs between committed schema files (name -> text) and the generated ones; [] when none."""
    problems = []
    for name, schema in sorted(all_schemas().items()):
        if name not in committed:
            problems.append(f"{name}: missing")
        elif committed[name] != render(schema):
            problems.append(f"{name}: differs from the generated schema")
    problems.extend(f"{name}: {reason}" for name, reason in stale(committed).items())
    return problems
