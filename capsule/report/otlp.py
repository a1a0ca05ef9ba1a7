"""A folded session as OpenTelemetry traces in the OTLP/JSON encoding (an ExportTraceServiceRequest).

One trace per session, one span per process; a span's parent is the span of the process that spawned
it. The resource describes the session (`service.name` = "capsule", session id, kind, host, argv);
span attributes follow the semantic conventions where they have a name (`process.pid`,
`process.parent_pid`, `process.command_args`, `process.executable.path`, `process.exit.code`) and use
`capsule.*` otherwise. A failed process has status ERROR with the reason; others leave it UNSET, as the
conventions ask of instrumentation. Signals delivered become span events.

Ids are derived from the session id and the node key (sha256), so the same session always exports the
same ids and nothing random is drawn. As OTLP/JSON requires, ids are hex strings (not base64, unlike
the plain protobuf JSON mapping), enums are integers and 64-bit integers are decimal strings.
"""

from __future__ import annotations

import hashlib
from typing import Any

from capsule.fold.agents import tool_name
from capsule.fold.session import SessionState, paused_gc

SPAN_KIND_INTERNAL = 1
STATUS_UNSET = 0
STATUS_ERROR = 2
SCOPE = "capsule"


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": str(value)}


def attributes(pairs: dict[str, Any]) -> list[dict[str, Any]]:
    """OTLP KeyValue list; None values are left out (OTLP has no null)."""
    return [{"key": k, "value": _value(v)} for k, v in pairs.items() if v is not None]


def _nanos(ts: float) -> str:
    return str(round(ts * 1e6) * 1000)  # strace times are microseconds: no float noise below them


def trace_id(session_id: str) -> str:
    return hashlib.sha256(b"capsule-trace\0" + session_id.encode()).hexdigest()[:32]


def span_id(session_id: str, key: int) -> str:
    digest = hashlib.sha256(f"capsule-span\0{session_id}\0{key}".encode()).hexdigest()[:16]
    return digest if digest != "0" * 16 else "1".rjust(16, "0")  # an all-zero id is invalid


def export_request(state: SessionState, version: str | None = None) -> dict[str, Any]:
    """The session as one OTLP/JSON ExportTraceServiceRequest (a JSON-able dict)."""
    with paused_gc():
        return _export_request(state, version)


def _export_request(state: SessionState, version: str | None) -> dict[str, Any]:
    header = state.header
    session_id = header.session_id if header is not None else "unknown"
    version = version or (header.capsule_version if header is not None else None)
    tid = trace_id(session_id)
    last = state.last_ts if state.last_ts is not None else (state.started or 0.0)
    if state.ended is not None:
        last = max(last, state.ended.ts)
    nodes = state.tree.nodes
    spans: list[dict[str, Any]] = []
    for node in nodes:
        c = node.classification
        # An exit can carry a timestamp a little before the spawn (strace orders pids' lines loosely).
        end = max(node.end if node.end is not None else last, node.start)
        failure = node.failure
        span: dict[str, Any] = {
            "traceId": tid,
            "spanId": span_id(session_id, node.key),
            "name": tool_name(node),
            "kind": SPAN_KIND_INTERNAL,
            "startTimeUnixNano": _nanos(node.start),
            "endTimeUnixNano": _nanos(end),
            "attributes": attributes(
                {
                    "process.pid": node.pid,
                    "process.parent_pid": node.ppid,
                    "process.command_args": list(node.display_argv) if node.display_argv else None,
                    "process.executable.path": node.exe,
                    "process.exit.code": node.exit_code,
                    "capsule.signal": node.signal,
                    "capsule.label": c.label,
                    "capsule.workflow": c.workflow,
                    "capsule.agent": c.agent,
                    "capsule.end_seen": node.end is not None,
                }
            ),
            "status": (
                {"code": STATUS_ERROR, "message": failure} if failure is not None else {"code": STATUS_UNSET}
            ),
        }
        if node.parent is not None:
            span["parentSpanId"] = span_id(session_id, node.parent)
        if node.signals:
            span["events"] = [
                {"timeUnixNano": _nanos(ts), "name": sig, "attributes": attributes({"signal": sig})}
                for ts, sig in node.signals
            ]
        spans.append(span)
    resource = attributes(
        {
            "service.name": "capsule",
            "service.version": version,
            "capsule.session.id": session_id,
            "capsule.session.kind": header.session_kind if header is not None else None,
            "capsule.session.status": state.status,
            "host.name": header.host if header is not None and header.host else None,
            "process.command_args": list(header.argv) if header is not None else None,
            "process.working_directory": header.cwd if header is not None else None,
        }
    )
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": resource},
                "scopeSpans": [
                    {"scope": {"name": SCOPE, **({"version": version} if version else {})}, "spans": spans}
                ],
            }
        ]
    }


def _ids_to_base64(request: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON's hex trace and span ids as protobuf's JSON mapping spells bytes (base64)."""
    import base64

    def b64(hex_id: str) -> str:
        return base64.b64encode(bytes.fromhex(hex_id)).decode()

    out: dict[str, list[dict[str, Any]]] = {"resourceSpans": []}
    for rs in request["resourceSpans"]:
        scopes = []
        for ss in rs["scopeSpans"]:
            spans = []
            for span in ss["spans"]:
                span = {**span, "traceId": b64(span["traceId"]), "spanId": b64(span["spanId"])}
                if "parentSpanId" in span:
                    span["parentSpanId"] = b64(span["parentSpanId"])
                spans.append(span)
            scopes.append({**ss, "spans": spans})
        out["resourceSpans"].append({**rs, "scopeSpans": scopes})
    return out


def encode_protobuf(request: dict[str, Any]) -> bytes:
    """The request in OTLP/HTTP's default encoding (`application/x-protobuf`), built with OpenTelemetry's
    own generated messages (opentelemetry-proto), deterministically serialised."""
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    message = ParseDict(_ids_to_base64(request), ExportTraceServiceRequest())
    return bytes(message.SerializeToString(deterministic=True))
