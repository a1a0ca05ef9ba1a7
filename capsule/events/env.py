"""Environment lifecycle events: an environment's supervisor and the services it runs (DESIGN §3)."""

from __future__ import annotations

from capsule.events.base import Event

# Every kind defined here, for the registry in capsule/events/__init__.py.
EVENTS: tuple[type[Event], ...] = ()
