"""Batches of agent tasks: `capsule agents run|check|status|result|logs|ps|top|kill|resume`."""

from __future__ import annotations

import typer

from capsule.cli.base import app

agents_app = typer.Typer(
    help="Run many agent tasks as a DAG, with limits, retries, hooks and policy.", no_args_is_help=True
)
app.add_typer(agents_app, name="agents")
