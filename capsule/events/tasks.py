"""Agent-run events: a plan of tasks run by the scheduler (DESIGN §3, `run.*`, `task.*`, `hook.*`…)."""

from __future__ import annotations

from capsule.events.base import Event

# Every kind defined here, for the registry in capsule/events/__init__.py.
EVENTS: tuple[type[Event], ...] = ()
