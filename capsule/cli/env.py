"""Project environments: `capsule env up|down|status|ls`, `start|stop|restart|logs|ps|kill-all`."""

from __future__ import annotations

import typer

from capsule.cli.base import app

env_app = typer.Typer(
    help="Project environments: supervised services from capsule.toml.", no_args_is_help=True
)
app.add_typer(env_app, name="env")
