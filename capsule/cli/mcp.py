"""`capsule mcp`: the Model Context Protocol server, over stdio or streamable HTTP on loopback.

The server and its tools live in stages/mcp_server.py; this module only starts it under trio.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from capsule.cli.base import app, fail


@app.command(help="Serve Capsule's tools to AI assistants over MCP: stdio, or --http PORT on 127.0.0.1.")
def mcp(
    http: Annotated[
        int | None,
        typer.Option(
            "--http", metavar="PORT", help="Serve streamable HTTP at http://127.0.0.1:PORT/mcp instead."
        ),
    ] = None,
) -> None:
    import trio

    from capsule.stages.mcp_server import build_server, serve_http

    if http is not None and not 0 < http < 65536:
        fail(f"--http {http}: a port is 1-65535", 2)
    os.umask(0o077)
    server = build_server()
    if http is None:
        trio.run(server.run_stdio_async)
        return
    try:
        trio.run(lambda: serve_http(server, http))
    except OSError as exc:
        fail(f"cannot serve on 127.0.0.1:{http}: {exc.strerror or exc}", 5)
