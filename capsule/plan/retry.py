"""Retry decisions: which outcomes are worth another attempt, and after how long.

Retryable: a non-zero exit (unless listed in `no_retry_exit_codes`), a timeout, a failing verify, an
attempt lost with the cluster node it ran on.
Not retryable: limits, policy denials, kills by the user, a command that cannot start. The delay doubles
per attempt from `backoff`, grows by up to `JITTER` of itself (`jitter`: a hash of the run, the task and
the attempt, so a replay draws the same), and never exceeds `backoff_cap`.
"""

from __future__ import annotations

import hashlib

from capsule.plan.spec import TaskSpec

JITTER = 0.25
RETRYABLE = ("failed", "timed_out", "lost")


def should_retry(task: TaskSpec, attempt: int, outcome: str, exit_code: int | None) -> bool:
    """After `attempt` (1-based) ended with `outcome`, is there another attempt?"""
    if attempt > task.retries or outcome not in RETRYABLE:
        return False
    return not (outcome == "failed" and exit_code is not None and exit_code in task.no_retry_exit_codes)


def backoff_delay(task: TaskSpec, attempt: int, jitter: float) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based)."""
    base = task.backoff_s * 2.0 ** (attempt - 1)
    return min(task.backoff_cap_s, base * (1 + JITTER * jitter))


def jitter(session_id: str, task: str, attempt: int) -> float:
    """A retry's jitter in [0, 1): random-looking across runs, the same on every replay of one."""
    digest = hashlib.sha256(f"{session_id}/{task}/{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
