"""`capsule mcp`: the Model Context Protocol server over stdio, streamable HTTP on loopback, or a socket.

The server, its tools and transports live in capsule/mcp/; this module only starts it under trio.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from capsule.cli.base import app, fail


@app.command(
    help="Serve Capsule's tools to AI assistants over MCP: stdio, --http PORT on 127.0.0.1 (bearer "
    "token), or --socket PATH."
)
def mcp(
    http: Annotated[
        int | None,
        typer.Option(
            "--http",
            metavar="PORT",
            help="Serve streamable HTTP at http://127.0.0.1:PORT/mcp (0: a free port); every request "
            "needs the bearer token printed on start.",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="With --http: the bearer token to require (the file's first line; mode 0600).",
        ),
    ] = None,
    socket: Annotated[
        Path | None,
        typer.Option("--socket", metavar="PATH", help="Serve streamable HTTP on a 0600 Unix socket."),
    ] = None,
) -> None:
    import trio

    from capsule.api.sessions import home
    from capsule.mcp.http import bind_error, keep_token, new_token, read_token_file, serve_http, serve_socket
    from capsule.mcp.server import build_server

    if http is not None and socket is not None:
        fail("--http and --socket: choose one", 2)
    if token_file is not None and http is None:
        fail("--token-file goes with --http PORT", 2)
    if http is not None and not 0 <= http < 65536:
        fail(f"--http {http}: a port is 1-65535 (or 0: any free port)", 2)
    os.umask(0o077)
    server = build_server()
    if socket is not None:
        try:
            trio.run(lambda: serve_socket(server, socket))
        except (OSError, BaseExceptionGroup) as exc:
            if (err := bind_error(exc)) is None:
                raise
            fail(f"cannot serve on {socket}: {err.strerror or err}", 5)
        return
    if http is None:
        trio.run(server.run_stdio_async)
        return
    port = http
    kept: list[Path] = []
    token = new_token() if token_file is None else read_token_file(token_file)

    def announce(bound: int) -> None:
        url = f"http://127.0.0.1:{bound}/mcp"
        if token_file is not None:
            print(f"capsule: MCP at {url}; bearer token from {token_file}", file=sys.stderr, flush=True)
            return
        kept.append(keep_token(home(), bound, token))
        print(
            f"capsule: MCP at {url}; every request needs this header (the token is also in {kept[0]}, "
            f"mode 0600):\nAuthorization: Bearer {token}",
            file=sys.stderr,
            flush=True,
        )

    try:
        trio.run(lambda: serve_http(server, port, token=token, on_bound=announce))
    except (OSError, BaseExceptionGroup) as exc:
        if (err := bind_error(exc)) is None:
            raise
        fail(f"cannot serve on 127.0.0.1:{port}: {err.strerror or err}", 5)
    finally:
        for path in kept:
            path.unlink(missing_ok=True)  # the token was for this start only
