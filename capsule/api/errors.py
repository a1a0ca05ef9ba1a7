"""The one error family of Capsule's application door, each kind with the exit code the CLI uses.

Every expected failure of `capsule.api` is a `CapsuleError`: one line of text (no traceback is ever
shown for it) and an exit code. The CLI prints `capsule: error: LINE` and exits with the code; the MCP
server returns the line as a tool error and keeps serving; Python callers catch the class they care
about. Foreign exceptions (a `SessionNotFound` of the store, a `PlanError`, an `OSError`) are mapped to
one of these at the door, so nothing else escapes for bad input.

    CapsuleError                  exit 1 unless a subclass says otherwise
    ├── CheckFailed               1  a check failed: replay differs, not every process came up, a task failed
    ├── UsageError                2  arguments that cannot work together, a bad --level or port
    ├── NotFound                  3  no such session (or an ambiguous prefix), config, environment,
    │                                process, task or running task
    ├── BadInput                  4  unreadable input: a malformed log, session, plan, config or rules file
    ├── Unavailable               5  it cannot work here: strace missing, ptrace denied, home not writable,
    │                                a supervisor or scheduler that does not start or answer
    ├── NotDelivered              6  an export was not delivered: -o not writable, collector refused it
    └── RecordingFailed         125  `capsule run`: recording itself failed (like env(1) and timeout(1))
"""

from __future__ import annotations

from typing import ClassVar


class CapsuleError(Exception):
    """An expected failure: one line to show, and the exit code that goes with it.

    `code` overrides the class's exit code for the rare call that needs another (the CLI's own usage
    errors are `UsageError`; an explicit code keeps old `CliError(message, code)` callers working)."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = self.exit_code if code is None else code


class CheckFailed(CapsuleError):
    exit_code = 1


class UsageError(CapsuleError):
    exit_code = 2


class NotFound(CapsuleError):
    exit_code = 3


class BadInput(CapsuleError):
    exit_code = 4


class Unavailable(CapsuleError):
    exit_code = 5


class NotDelivered(CapsuleError):
    exit_code = 6


class RecordingFailed(CapsuleError):
    exit_code = 125


BY_CODE: dict[int, type[CapsuleError]] = {
    cls.exit_code: cls
    for cls in (CheckFailed, UsageError, NotFound, BadInput, Unavailable, NotDelivered, RecordingFailed)
}


def error(message: str, code: int) -> CapsuleError:
    """The error of the family that carries exit `code` (a `CapsuleError` with that code otherwise)."""
    cls = BY_CODE.get(code)
    return cls(message) if cls is not None else CapsuleError(message, code)
