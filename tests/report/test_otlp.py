"""The OTLP export: parsed by opentelemetry-proto's own message classes, on every golden session."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from capsule.report.otlp import export_request
from tests.fold.builders import Script, packaged_rules
from tests.golden import discover, fold, load_events

ID_KEYS = ("traceId", "spanId", "parentSpanId")


def parse_otlp_json(data: dict[str, Any]) -> ExportTraceServiceRequest:
    """Parse OTLP/JSON with the protobuf classes. OTLP/JSON differs from the protobuf JSON mapping in one
    way only: trace and span ids are hex, not base64; convert them (checking they are hex) and parse."""
    data = copy.deepcopy(data)
    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ID_KEYS:
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    request = ExportTraceServiceRequest()
    json_format.Parse(orjson.dumps(data), request)
    return request


def _attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        value = getattr(kv.value, which)
        out[kv.key] = (
            [getattr(v, v.WhichOneof("value")) for v in value.values] if which == "array_value" else value
        )
    return out


@pytest.mark.parametrize("session", discover(), ids=lambda p: p.name)
def test_golden_sessions_export_valid_otlp(session: Path) -> None:
    """Every golden session parses as an ExportTraceServiceRequest: one trace, a span per process,
    each parent span present in the same trace."""
    state = fold(load_events(session), packaged_rules())
    request = parse_otlp_json(orjson.loads(orjson.dumps(export_request(state))))
    (rs,) = request.resource_spans
    resource = _attrs(rs.resource.attributes)
    assert resource["service.name"] == "capsule"
    assert resource["capsule.session.id"] == state.header.session_id
    (ss,) = rs.scope_spans
    spans = list(ss.spans)
    assert len(spans) == len(state.tree.nodes)
    assert len({s.trace_id for s in spans}) == (1 if spans else 0)
    assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in spans)
    ids = {s.span_id for s in spans}
    assert len(ids) == len(spans)
    for span, node in zip(spans, state.tree.nodes, strict=True):
        if node.parent is None:
            assert span.parent_span_id == b""
        else:
            assert span.parent_span_id == spans[node.parent].span_id
        assert span.end_time_unix_nano >= span.start_time_unix_nano
        failed = span.status.code == Status.STATUS_CODE_ERROR
        assert failed == node.failed


def test_span_attributes_and_error_status() -> None:
    """A span carries pid, argv, label, workflow and exit code; a failure is ERROR with its reason."""
    s = Script().start("sh", "-c", "x", session_id="20251121-043000-beef")
    s.spawn(10, None, via="root").exec(10, "/bin/sh", "sh", "-c", "x")
    s.spawn(11, 10).exec(11, "/usr/bin/git", "git", "status").exit(11, 0)
    s.spawn(12, 10).exec(12, "/usr/bin/sleep", "sleep", "9").signaled(12, "SIGTERM").exit(
        12, signal="SIGTERM"
    )
    s.exit(10, 2).end(exit_code=2)
    state = fold(s.events, packaged_rules())
    request = parse_otlp_json(export_request(state, "9.9.9"))
    rs = request.resource_spans[0]
    resource = _attrs(rs.resource.attributes)
    assert resource["host.name"] == "test-host"
    assert resource["process.command_args"] == ["sh", "-c", "x"]
    assert rs.scope_spans[0].scope.version == "9.9.9"
    sh, git, sleep = rs.scope_spans[0].spans
    assert git.kind == Span.SPAN_KIND_INTERNAL
    a = _attrs(git.attributes)
    assert a["process.pid"] == 11
    assert a["process.parent_pid"] == 10
    assert a["process.command_args"] == ["git", "status"]
    assert a["capsule.label"] == "tool"
    assert a["capsule.workflow"] == "vcs"
    assert a["process.exit.code"] == 0
    assert git.status.code == Status.STATUS_CODE_UNSET
    assert sh.status.code == Status.STATUS_CODE_ERROR
    assert "2" in sh.status.message
    assert sleep.status.code == Status.STATUS_CODE_ERROR
    assert "SIGTERM" in sleep.status.message
    assert [e.name for e in sleep.events] == ["SIGTERM"]
    assert git.parent_span_id == sh.span_id == sleep.parent_span_id


def test_ids_are_deterministic() -> None:
    """The same session exports the same ids twice (nothing random is drawn)."""
    s = Script().start("true")
    s.spawn(10, None, via="root").exec(10, "/bin/true", "true").exit(10, 0).end()
    state = fold(s.events, packaged_rules())
    assert export_request(state) == export_request(state)
