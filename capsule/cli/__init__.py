"""The front door: the typer app, a peer of the MCP server over `capsule.api`: arguments in, rendering out.

`base` holds the app, exit codes and shared helpers; each command group registers itself on it:
`record` (run, report, ls, import, replay, doctor), `export` (perfetto, otlp, jsonl, parquet), `retention`
(prune, archive), `env` (project environments), `agents` (batches of
agent tasks). Heavy modules are imported inside the commands that need them.
"""

from __future__ import annotations

from capsule.cli import agents, env, export, mcp, record, retention  # noqa: F401 (each registers its commands on `app`)
from capsule.cli.base import app, main

__all__ = ["app", "main"]
