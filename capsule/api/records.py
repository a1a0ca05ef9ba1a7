"""Records of the application door as plain data: what `--json` prints and MCP tools return."""

from __future__ import annotations

from capsule.stages.plain import plain

__all__ = ["plain"]
