"""Where an attempt ran: written by the driver beside the machine's events when the attempts run on a
cluster (`[run] executor = "ray"`), as the guard's decisions are. `capsule replay` neither derives nor
compares them; the fold reads them so `agents status`, reports and exports can say where each task ran.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from capsule.events.base import Event


@attrs.frozen(kw_only=True)
class RunExecutor(Event):
    """The run's attempts are performed by `executor` (local | ray) at `address` (a Ray address)."""

    KIND: ClassVar[str] = "run.executor"

    executor: str
    address: str | None = None


@attrs.frozen(kw_only=True)
class TaskPlaced(Event):
    """Attempt `attempt` of `task` was placed on a cluster node: its host name, address and node id."""

    KIND: ClassVar[str] = "task.placed"

    task: str
    attempt: int
    node: str  # the node's host name
    node_ip: str = ""
    node_id: str = ""
    resources: tuple[str, ...] = ()  # the custom resources it was placed by (one unit of each)


EVENTS: tuple[type[Event], ...] = (RunExecutor, TaskPlaced)
