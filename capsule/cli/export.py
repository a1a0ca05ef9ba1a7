"""`capsule export`: a session for the tools people already use — Perfetto, OpenTelemetry, DuckDB.

The renderers are pure (`capsule.report.perfetto`, `capsule.report.otlp`); this module loads and folds
the session, writes the result to stdout or `-o FILE` (atomically: a temporary name, then a rename), and
for `--endpoint` POSTs the OTLP to a collector's `/v1/traces` — as `application/x-protobuf` by default
(OTLP/HTTP's default encoding) or `application/json` with `--protocol http/json`. Like OpenTelemetry's
own exporters it honours OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, OTEL_EXPORTER_OTLP_(TRACES_)HEADERS and
OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL.
"""

from __future__ import annotations

import os
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
    parquet = "parquet"


class Protocol(StrEnum):
    json = "http/json"
    protobuf = "http/protobuf"


CONTENT_TYPES = {Protocol.json: "application/json", Protocol.protobuf: "application/x-protobuf"}


def _otel_env(name: str) -> str | None:
    """An OTLP exporter setting from the environment, the traces-specific variable first."""
    for var in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = os.environ.get(var, "").strip()
        if value:
            return value
    return None


def otlp_target(endpoint: str | None, output: Path | None) -> str | None:
    """Where to POST: `--endpoint`, else (when neither it nor -o is given) the OTEL_* environment. A
    signal-specific OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as is; the generic one is a base URL."""
    if endpoint is not None or output is not None:
        return endpoint
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return base.rstrip("/") + "/v1/traces" if base else None


def otlp_headers() -> dict[str, str]:
    """OTEL_EXPORTER_OTLP_HEADERS: `key=value,key2=value2`, values percent-decoded (the OTel spec)."""
    from urllib.parse import unquote

    headers: dict[str, str] = {}
    for item in (_otel_env("HEADERS") or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"OTEL_EXPORTER_OTLP_HEADERS: {item.strip()!r} is not key=value", 2)
        headers[unquote(key.strip())] = unquote(value.strip())
    return headers


def otlp_protocol(option: str | None, sending: bool) -> Protocol:
    """--protocol, else OTEL_EXPORTER_OTLP_PROTOCOL; a POST defaults to protobuf, a file to JSON."""
    value = option or _otel_env("PROTOCOL")
    if value is None:
        return Protocol.protobuf if sending else Protocol.json
    try:
        return Protocol(value)
    except ValueError:
        fail(f"unknown OTLP protocol {value!r}: choose http/protobuf or http/json (grpc is not supported)", 2)


@app.command(
    help="Export a session: Perfetto trace JSON, OpenTelemetry (OTLP), its raw JSONL events, or Parquet tables."
)
def export(
    session: SessionArg = "latest",
    fmt: Annotated[
        Format,
        typer.Option("--format", "-f", case_sensitive=False, help="perfetto, otlp, jsonl or parquet."),
    ] = Format.perfetto,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="POST the OTLP to this collector (http://host:4318 → …/v1/traces); otlp only. "
            "Default: $OTEL_EXPORTER_OTLP_ENDPOINT when neither this nor -o is given.",
        ),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every session in $CAPSULE_HOME (with --format parquet).")
    ] = False,
    protocol: Annotated[
        str | None,
        typer.Option(
            "--protocol",
            metavar="http/protobuf|http/json",
            help="OTLP encoding. Default: http/protobuf to a collector, http/json to a file or stdout.",
        ),
    ] = None,
    flush: Annotated[
        bool,
        typer.Option("--flush", help="Send the sessions queued for the [export] collector of config.toml."),
    ] = False,
) -> None:
    if flush:
        _flush()
        return
    if fmt is not Format.otlp and (endpoint is not None or protocol is not None):
        fail("--endpoint and --protocol need --format otlp", 2)
    if fmt is Format.otlp:
        endpoint = otlp_target(endpoint, output)
    if every and fmt is not Format.parquet:
        fail("--all needs --format parquet", 2)
    if fmt is Format.parquet:
        from capsule.cli.tables import export_parquet

        export_parquet(session, output, every)
        return
    from capsule.api import sessions

    session_dir = sessions.resolve(session)
    if fmt is Format.jsonl:
        _write(output, lambda out: _copy_events(session_dir, out))
        return
    encoding = otlp_protocol(protocol, sending=endpoint is not None) if fmt is Format.otlp else Protocol.json
    exported = sessions.export(str(session_dir), fmt.value, protobuf=encoding is Protocol.protobuf)
    body = exported.body
    for warning in exported.warnings:
        print(f"capsule: warning: {warning}", file=sys.stderr)
    if endpoint is not None:
        _post(endpoint, body, CONTENT_TYPES[encoding], otlp_headers())
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


def _post(endpoint: str, body: bytes, content_type: str, headers: dict[str, str]) -> None:
    from capsule.api.errors import BadInput
    from capsule.api.shipping import ShipFailed, post, traces_url

    try:
        url = traces_url(endpoint)
    except BadInput:
        fail(f"bad --endpoint {endpoint!r}: give an http(s) URL, e.g. http://localhost:4318", 2)
    try:
        post(url, body, content_type, headers, POST_TIMEOUT_S)
    except ShipFailed as exc:
        fail(str(exc), EXIT_OUTPUT)
    print(f"capsule: exported to {url}", file=sys.stderr)


def _flush() -> None:
    from capsule.api import shipping

    sent, waiting = shipping.flush()
    print(f"capsule: {len(sent)} session(s) exported, {len(waiting)} still queued", file=sys.stderr)
    if waiting:
        raise typer.Exit(EXIT_OUTPUT)
