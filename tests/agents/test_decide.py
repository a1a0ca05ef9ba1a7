"""The post-attempt decision ladder, table-driven: outcome x hook answers -> the next step."""

from __future__ import annotations

import pytest

from capsule.plan.decide import Abort, AskHook, Decision, Ended, Fail, Retry, Skip, Succeed, decide
from capsule.plan.spec import TaskSpec

TASK = TaskSpec(id="t", command=("true",), retries=2, backoff_s=1.0, no_retry_exit_codes=(2,))
OK = Ended(outcome="succeeded", exit_code=0)
EXIT1 = Ended(outcome="failed", exit_code=1, reason="exit code 1")
EXIT2 = Ended(outcome="failed", exit_code=2, reason="exit code 2")
TIMEOUT = Ended(outcome="timed_out", reason="timed out after 1s")
LIMIT = Ended(outcome="limit_exceeded", reason="limit exceeded")

CASES: list[tuple[str, Ended, dict[str, str], int, Decision]] = [
    ("success asks the post hook", OK, {}, 1, AskHook(on="post")),
    ("post continue succeeds", OK, {"post": "continue"}, 1, Succeed()),
    ("post skip skips", OK, {"post": "skip"}, 1, Skip(reason="post hook said skip")),
    ("post abort aborts as denied", OK, {"post": "abort"}, 1, Abort(outcome="denied", reason="post hook said abort")),
    ("post deny then asks the error hook", OK, {"post": "deny"}, 1, AskHook(on="error")),
    ("post deny is never retried", OK, {"post": "deny", "error": "continue"}, 1,
     Fail(outcome="denied", reason="post hook said deny", exit_code=0)),
    ("failure asks the error hook", EXIT1, {}, 1, AskHook(on="error")),
    ("error continue retries", EXIT1, {"error": "continue"}, 1, Retry(delay_s=1.0, reason="exit code 1")),
    ("second retry doubles", EXIT1, {"error": "continue"}, 2, Retry(delay_s=2.0, reason="exit code 1")),
    ("retries exhausted fail", EXIT1, {"error": "continue"}, 3,
     Fail(outcome="failed", reason="exit code 1", exit_code=1)),
    ("no-retry exit code fails", EXIT2, {"error": "continue"}, 1,
     Fail(outcome="failed", reason="exit code 2", exit_code=2)),
    ("timeout retries", TIMEOUT, {"error": "continue"}, 1, Retry(delay_s=1.0, reason="timed out after 1s")),
    ("limit is never retried", LIMIT, {"error": "continue"}, 1,
     Fail(outcome="limit_exceeded", reason="limit exceeded")),
    ("error skip skips", EXIT1, {"error": "skip"}, 1, Skip(reason="error hook said skip after: exit code 1")),
    ("error deny fails without retry", EXIT1, {"error": "deny"}, 1,
     Fail(outcome="failed", reason="exit code 1", exit_code=1)),
    ("error abort aborts", EXIT1, {"error": "abort"}, 1,
     Abort(outcome="failed", reason="error hook said abort after: exit code 1", exit_code=1)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("ended", "answers", "tries", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide(ended: Ended, answers: dict[str, str], tries: int, expected: Decision) -> None:
    """Each row: the ladder's next step for an outcome and the hook answers so far."""
    assert decide(TASK, ended, answers, tries, jitter=0.0) == expected


def test_jitter_stretches_the_delay() -> None:
    """The jitter drawn by the shell lengthens the retry delay by up to a quarter."""
    decision = decide(TASK, EXIT1, {"error": "continue"}, 1, jitter=0.5)
    assert decision == Retry(delay_s=1.125, reason="exit code 1")
