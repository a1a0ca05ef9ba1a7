"""What follows an attempt: the ladder from its outcome, through the post or error hook, to a decision.

    succeeded ─▶ post hook: continue ─▶ Succeed
                            skip ─────▶ Skip (the result is not wanted; dependents are skipped)
                            deny ─────▶ outcome `denied`, then the error hook as for any failure
                            abort ────▶ Abort(denied)
    otherwise ─▶ error hook: continue ─▶ Retry(delay) when retryable (`capsule.plan.retry`), else Fail
                             skip ─────▶ Skip
                             deny ─────▶ Fail (no retry)
                             abort ────▶ Abort(outcome)

The shell asks for hook answers one at a time: `decide` returns `AskHook(on)` until it has the answer it
needs, so a hook runs only when the ladder reaches it.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from capsule.plan.retry import backoff_delay, should_retry
from capsule.plan.spec import Hook, TaskSpec

HOOK_ANSWERS = ("continue", "skip", "deny", "abort")


@attrs.frozen(kw_only=True)
class Ended:
    """How one attempt ended (verify included)."""

    outcome: str
    exit_code: int | None = None
    reason: str = ""


@attrs.frozen(kw_only=True)
class AskHook:
    on: str  # "post" | "error"


@attrs.frozen(kw_only=True)
class Succeed:
    pass


@attrs.frozen(kw_only=True)
class Retry:
    delay_s: float
    reason: str


@attrs.frozen(kw_only=True)
class Skip:
    reason: str


@attrs.frozen(kw_only=True)
class Fail:
    outcome: str
    reason: str
    exit_code: int | None = None


@attrs.frozen(kw_only=True)
class Abort:
    """A hook answered abort: the task fails with `outcome` and the whole run stops."""

    outcome: str
    reason: str
    exit_code: int | None = None


Decision = AskHook | Succeed | Retry | Skip | Fail | Abort


def decide(task: TaskSpec, ended: Ended, answers: Mapping[str, str], tries: int, jitter: float) -> Decision:
    """The next step after attempt number `tries` (1-based, counted in this run) ended as `ended`.

    `answers` holds the hook decisions gathered so far (`"post"`, `"error"` -> continue | skip | deny |
    abort); `jitter` in [0, 1) is drawn by the shell.
    """
    outcome, code, reason = ended.outcome, ended.exit_code, ended.reason
    if outcome == "succeeded":
        post = answers.get("post")
        if post is None:
            return AskHook(on="post")
        if post == "continue":
            return Succeed()
        if post == "skip":
            return Skip(reason="post hook said skip")
        if post == "abort":
            return Abort(outcome="denied", reason="post hook said abort")
        outcome, reason = "denied", "post hook said deny"
    error = answers.get("error")
    if error is None:
        return AskHook(on="error")
    if error == "skip":
        return Skip(reason=f"error hook said skip after: {reason}")
    if error == "abort":
        return Abort(outcome=outcome, reason=f"error hook said abort after: {reason}", exit_code=code)
    if error == "continue" and should_retry(task, tries, outcome, code):
        return Retry(delay_s=round(backoff_delay(task, tries, jitter), 6), reason=reason)
    return Fail(outcome=outcome, reason=reason, exit_code=code)


def hook_decision(hook: Hook, exit_code: int | None, answer: str) -> tuple[str, str]:
    """(decision, reason) from how a hook ended: no answer in time, a failure or a stray word deny."""
    if exit_code is None:
        return "deny", f"hook timed out after {hook.timeout_s}s"
    if exit_code != 0:
        return "deny", f"hook exited with {exit_code}"
    word = answer.lower()
    if word not in HOOK_ANSWERS:
        return "deny", f"hook answered {word!r}, not one of {', '.join(HOOK_ANSWERS)}"
    return word, ""
