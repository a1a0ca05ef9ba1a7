"""The base of every event record: a frozen, keyword-only attrs class with a KIND and a VERSION.

`seq` is not a field: it belongs to the line a record is written on, and the single writer assigns it.
"""

from __future__ import annotations

from typing import ClassVar

import attrs


@attrs.frozen(kw_only=True)
class Event:
    """A fact or an observation, stamped with the time it happened (seconds since the epoch)."""

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    ts: float
