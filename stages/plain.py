"""Records as plain data: what `--json` prints and MCP tools return (`capsule.api.records` is their
door; here so that a supervisor can answer with the same data)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import attr  # attrs.asdict keeps tuples; the classic spelling can turn them into lists


def _value(_instance: Any, _field: Any, value: Any) -> Any:
    return str(value) if isinstance(value, PurePath) else value


def plain(record: Any) -> Any:
    """A record (or a tuple of them) as JSON-able dicts and lists, fields in declaration order; paths
    become strings."""
    if isinstance(record, tuple | list):
        return [plain(r) for r in record]
    return attr.asdict(record, retain_collection_types=False, value_serializer=_value)
