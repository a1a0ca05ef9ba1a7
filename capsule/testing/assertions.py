"""Assertions over a recorded session whose failure messages show the relevant part of the process tree.

The pytest plugin registers this module for assertion rewriting, so a failing helper reads like a
failing `assert` in your own test, followed by the processes that explain it. Patterns are argv globs
matched as a policy's `deny_commands` (`"pytest *"`, `"git commit *"`, `"sh -c *curl*"`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from capsule.api.session import Process, Session


def _tree(session: Session, only: Collection[Process] | None = None) -> str:
    text = session.tree.render(only)
    return "\n".join("    " + line for line in text.splitlines()) or "    (no processes)"


def assert_ran(session: Session, pattern: str) -> None:
    """Some process's argv matched `pattern`."""
    __tracebackhide__ = True  # the failure points at the test, not at this helper
    found = session.find(pattern)
    assert found, f"no process ran {pattern!r}; session {session.id} ran:\n{_tree(session)}"


def assert_never_ran(session: Session, pattern: str) -> None:
    """No process's argv matched `pattern`."""
    __tracebackhide__ = True  # the failure points at the test, not at this helper
    found = session.find(pattern)
    assert not found, (
        f"{len(found)} process{'es' if len(found) != 1 else ''} ran {pattern!r} in session {session.id}:\n"
        f"{_tree(session, found)}"
    )


def assert_ran_before(session: Session, first: str, then: str) -> None:
    """Both ran, and the first process matching `first` started before any process matching `then`."""
    __tracebackhide__ = True  # the failure points at the test, not at this helper
    a, b = session.find(first), session.find(then)
    assert a, f"no process ran {first!r}; session {session.id} ran:\n{_tree(session)}"
    assert b, f"no process ran {then!r}; session {session.id} ran:\n{_tree(session)}"
    assert a[0].start < b[0].start, (
        f"{then!r} (pid {b[0].pid}) started before {first!r} (pid {a[0].pid}):\n{_tree(session, [a[0], b[0]])}"
    )


def assert_no_failures(session: Session) -> None:
    """No process failed (a non-zero exit or a signal that the rules do not call expected)."""
    __tracebackhide__ = True  # the failure points at the test, not at this helper
    failed = session.failures
    assert not failed, (
        f"{len(failed)} process{'es' if len(failed) != 1 else ''} failed in session {session.id}:\n"
        f"{_tree(session, failed)}"
    )


def assert_exit(session: Session, code: int = 0) -> None:
    """The recorded command exited with `code`."""
    __tracebackhide__ = True  # the failure points at the test, not at this helper
    got = session.signal or f"exit {session.exit_code}"
    tail = f"\nits stderr ends:\n{session.stderr[-2000:]}" if session.stderr else ""
    ok = session.exit_code == code and session.signal is None
    assert ok, (
        f"session {session.id} ended with {got}, not exit {code}:\n{_tree(session, session.failures)}{tail}"
    )


def assert_touched(session: Session, glob: str, ops: Collection[str] | None = None) -> None:
    """A path matching `glob` was used (with one of `ops`, if given). Needs level file or all."""
    __tracebackhide__ = True  # the failure points at the test, not at this helper
    what = f" ({'/'.join(sorted(ops))})" if ops else ""
    if not session.files:
        raise AssertionError(
            f"session {session.id} has no file records: record it with level='file' or 'all'"
        )
    seen = sorted({f.path for f in session.files})
    shown = "\n".join(f"    {p}" for p in seen[:30]) + ("\n    …" if len(seen) > 30 else "")
    assert session.touched(glob, ops), (
        f"no file matching {glob!r} was touched{what}; the files used:\n{shown}"
    )
