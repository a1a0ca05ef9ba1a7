"""Restart policy: after a process exits on its own, restart it (after how long), leave it, or give up.

Backoff doubles per consecutive restart up to `max_backoff`, and starts over after a stable run (one that
lasted at least `restart_window`). More than `max_restarts` restarts within `restart_window` gives up.
"""

from __future__ import annotations

import attrs

from capsule.env.config import ProcessConfig


@attrs.frozen(kw_only=True)
class RestartHistory:
    """What the policy remembers of one process: recent restart times and the current streak."""

    restarts_at: tuple[float, ...] = ()
    streak: int = 0  # consecutive restarts without a stable run
    total: int = 0


@attrs.frozen(kw_only=True)
class Decision:
    action: str  # restart | exit | give_up
    delay_s: float = 0.0
    history: RestartHistory = RestartHistory()
    reason: str = ""


def decide(
    process: ProcessConfig,
    history: RestartHistory,
    *,
    now: float,
    ran_s: float,
    exit_code: int | None,
    signal: str | None,
) -> Decision:
    failed = signal is not None or exit_code != 0
    if process.restart == "no" or (process.restart == "on-failure" and not failed):
        return Decision(action="exit", history=history)
    streak = 0 if ran_s >= process.restart_window else history.streak
    recent = tuple(t for t in history.restarts_at if now - t < process.restart_window)
    if len(recent) >= process.max_restarts:
        return Decision(
            action="give_up",
            history=attrs.evolve(history, restarts_at=recent, streak=streak),
            reason=f"{len(recent)} restarts within {process.restart_window:g}s (max_restarts = {process.max_restarts})",
        )
    delay = min(process.backoff * (2**streak), max(process.max_backoff, process.backoff))
    return Decision(
        action="restart",
        delay_s=delay,
        history=RestartHistory(restarts_at=(*recent, now), streak=streak + 1, total=history.total + 1),
    )
