"""`capsule export`: a session for the tools people already use — Perfetto, OpenTelemetry, DuckDB.

The renderers are pure (`capsule.report.perfetto`, `capsule.report.otlp`); this module loads and folds
the session, writes the result to stdout or `-o FILE` (atomically: a temporary name, then a rename), and
for `--endpoint` POSTs the OTLP/JSON to a collector's `/v1/traces`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from capsule.cli.base import SessionArg, app, fail

# The export could not be delivered: -o is not writable, or the collector is unreachable or refused it.
EXIT_OUTPUT = 6
POST_TIMEOUT_S = 30.0


class Format(StrEnum):
    perfetto = "perfetto"
    otlp = "otlp"
    jsonl = "jsonl"


@app.command(
    help="Export a session: Perfetto trace JSON, OpenTelemetry (OTLP/JSON), or its raw JSONL events."
)
def export(
    session: SessionArg = "latest",
    fmt: Annotated[
        Format,
        typer.Option("--format", "-f", case_sensitive=False, help="perfetto, otlp or jsonl."),
    ] = Format.perfetto,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="POST the OTLP/JSON to this collector (http://host:4318 → …/v1/traces); otlp only.",
        ),
    ] = None,
) -> None:
    if endpoint is not None and fmt is not Format.otlp:
        fail("--endpoint needs --format otlp", 2)
    from capsule.api import sessions

    session_dir = sessions.resolve(session)
    if fmt is Format.jsonl:
        _write(output, lambda out: _copy_events(session_dir, out))
        return
    exported = sessions.export(str(session_dir), fmt.value)
    body = exported.body
    for warning in exported.warnings:
        print(f"capsule: warning: {warning}", file=sys.stderr)
    if endpoint is not None:
        _post(endpoint, body)
        if output is not None:
            _write(output, lambda out: out.write(body))
        return
    _write(output, lambda out: out.write(body))


def _copy_events(session_dir: Path, out: BinaryIO) -> None:
    """The events file as it is stored (decompressed), minus a torn last line a JSONL reader would choke on."""
    from capsule.api.sessions import copy_events

    for warning in copy_events(session_dir, out):
        print(f"capsule: warning: {warning}", file=sys.stderr)


def _write(output: Path | None, produce: Callable[[BinaryIO], object]) -> None:
    if output is None or str(output) == "-":
        produce(sys.stdout.buffer)
        sys.stdout.flush()
        return
    from capsule.api.sessions import private_output

    try:
        with private_output(output) as out:  # 0600, like the session it comes from
            produce(out)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}", EXIT_OUTPUT)


def _traces_url(endpoint: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        fail(f"bad --endpoint {endpoint!r}: give an http(s) URL, e.g. http://localhost:4318", 2)
    # The OTLP/HTTP convention: a base URL gets /v1/traces appended; a URL with a path is used as is.
    path = parts.path if parts.path not in ("", "/") else "/v1/traces"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _post(endpoint: str, body: bytes) -> None:
    import urllib.error
    import urllib.request

    url = _traces_url(endpoint)
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked to be http or https)
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as exc:
        fail(f"collector {url} refused the export: HTTP {exc.code} {exc.reason}", EXIT_OUTPUT)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(f"cannot reach collector {url}: {reason}", EXIT_OUTPUT)
    print(f"capsule: exported to {url}", file=sys.stderr)
