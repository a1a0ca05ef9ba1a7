"""Upcasters bring old versions of a kind forward, one version at a time, as pure `dict -> dict` functions.

Register `(kind, from_version) -> function returning the dict at from_version + 1`. Every change to a
kind's fields bumps its VERSION, adds a schema file, an upcaster here and a `schemas/CHANGELOG.md` line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _session_started_v1_to_v2(fields: dict[str, Any]) -> dict[str, Any]:
    """v2 added `parent`: a v1 session was never recorded for another one."""
    return {**fields, "parent": None}


def _task_exited_v1_to_v2(fields: dict[str, Any]) -> dict[str, Any]:
    """v2 added `reason` (why a spawn failed): v1 kept it only in the verdict that followed."""
    return {**fields, "reason": ""}


def _session_started_v2_to_v3(fields: dict[str, Any]) -> dict[str, Any]:
    """v3 added `trace_clock` and `trace_origin`: unknown (null) for older sessions."""
    return {**fields, "trace_clock": None, "trace_origin": None}


def _session_started_v3_to_v4(fields: dict[str, Any]) -> dict[str, Any]:
    """v4 added `derivation`: a v3 session was derived by a Capsule that did not name its derivation."""
    return {**fields, "derivation": None}


def _session_ended_v1_to_v2(fields: dict[str, Any]) -> dict[str, Any]:
    """v2 made `duration_s` nullable and added `incomplete`: a v1 session's trace counted as whole."""
    return {**fields, "incomplete": None}


def _session_ended_v2_to_v3(fields: dict[str, Any]) -> dict[str, Any]:
    """v3 added `timed_out_s`: unknown (null) for older sessions, whose session.timed_out still says it."""
    return {**fields, "timed_out_s": None}


def _proc_exec_v1_to_v2(fields: dict[str, Any]) -> dict[str, Any]:
    """v2 made `argv` nullable (unknown); v1 always had a list."""
    return fields


def _proc_sampled_v1_to_v2(fields: dict[str, Any]) -> dict[str, Any]:
    """v2 added `cpu_s`: a v1 sample did not say how much CPU time the process had used."""
    return {**fields, "cpu_s": None}


def _run_planned_v1_to_v2(fields: dict[str, Any]) -> dict[str, Any]:
    """v2 stores env names only: a v1 plan's env values are dropped as it is read (names kept)."""
    if not fields.get("plan"):
        return fields
    plan = orjson.loads(fields["plan"])
    for task in plan.get("tasks", []):
        names = sorted({*(pair[0] for pair in task.get("env", [])), *task.get("env_names", [])})
        task["env"], task["env_names"] = [], names
    return {**fields, "plan": orjson.dumps(plan).decode()}


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("session.started", 1): _session_started_v1_to_v2,
    ("task.exited", 1): _task_exited_v1_to_v2,
    ("session.started", 2): _session_started_v2_to_v3,
    ("session.started", 3): _session_started_v3_to_v4,
    ("session.ended", 1): _session_ended_v1_to_v2,
    ("session.ended", 2): _session_ended_v2_to_v3,
    ("proc.exec", 1): _proc_exec_v1_to_v2,
    ("proc.sampled", 1): _proc_sampled_v1_to_v2,
    ("run.planned", 1): _run_planned_v1_to_v2,
}


def upcast(kind: str, version: int, target: int, fields: dict[str, Any]) -> dict[str, Any]:
    """Apply the chain of upcasters from `version` to `target`."""
    while version < target:
        step = UPCASTERS.get((kind, version))
        if step is None:
            raise KeyError(f"no upcaster for {kind} v{version}")
        fields = step(fields)
        version += 1
    return fields
