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
