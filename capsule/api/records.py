"""Records of the application door as plain data: what `--json` prints and MCP tools return."""

from __future__ import annotations

from typing import Any

import attrs


def plain(record: Any) -> Any:
    """A record (or a tuple of them) as JSON-able dicts and lists, fields in declaration order."""
    if isinstance(record, tuple | list):
        return [plain(r) for r in record]
    return attrs.asdict(record)
