"""The recorder's running tally: what `session.ended` reports, folded as events are written.

Small on purpose: the recorder keeps O(processes alive) state, never the event list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from capsule.events import (
    Event,
    ProcExec,
    ProcExited,
    ProcSignaled,
    ProcSpawned,
    ProcSpawnFailed,
    TraceUnparsed,
)
from capsule.events.policy import PolicyBlocked
from capsule.fold.exec_argv import named_argv
from capsule.fold.interrupts import broken_pipe, from_terminal, interrupted

if TYPE_CHECKING:
    from capsule.fold.labels import RuleSet

REFUSALS_KEPT = 3  # what `capsule run`'s summary names; the report lists them all


@attrs.define
class Tally:
    events: int = 0
    processes: int = 0
    failed: int = 0
    unparsed: int = 0
    blocked: int = 0  # what the policy refused (policy.blocked)
    refusals: list[PolicyBlocked] = attrs.field(factory=list, repr=False)  # the first REFUSALS_KEPT
    root_pid: int | None = None
    root_exit: tuple[int | None, str | None] | None = None  # (exit code, signal name) of the root
    # Why the root never became the command (its exec's errno: refused by the guard, not found), or
    # None once an exec of it succeeded: then the exit the trace has is the tracer's, not the command's.
    root_exec_failure: str | None = None
    _root_ran: bool = attrs.field(default=False, repr=False)
    first_ts: float | None = None
    last_ts: float | None = None
    # Exit rules (capsule/rules/exits.toml): `grep` 1 is an answer, not a failure. With them the tally
    # keeps the last image of each live process that exec'd, dropped at its exit.
    answers: RuleSet | None = attrs.field(default=None, repr=False)
    _images: dict[int, tuple[str, tuple[str, ...]]] = attrs.field(factory=dict, repr=False)
    # The terminal's signal each live process got (Ctrl-C: capsule/fold/interrupts.py), dropped at its
    # exit; one it ended is `interrupted`, not failed, as the report folds it.
    _terminal: dict[int, str] = attrs.field(factory=dict, repr=False)
    # The pids whose signals stop processes on purpose (ProcessTree.stoppers: a traced service's env
    # supervisor and its `capsule run`), set from the header; a process one of them killed is `stopped`,
    # not failed, as the report folds it. The latest sender of each live process's signals is kept
    # only while there are stoppers.
    stoppers: frozenset[int] = frozenset()
    _senders: dict[int, tuple[str, int]] = attrs.field(factory=dict, repr=False)
    stopped: int = 0
    interrupted: int = 0
    root_interrupted: str | None = None  # the terminal's signal that ended the root (`SIGINT`), if one did

    def apply(self, event: Event) -> Tally:
        self.events += 1
        if self.first_ts is None:
            self.first_ts = event.ts
        self.last_ts = event.ts
        if isinstance(event, ProcSpawned):
            self.processes += 1
            if event.via == "root" and self.root_pid is None:
                self.root_pid = event.pid
        elif isinstance(event, ProcExec):
            if event.pid == self.root_pid and not self._root_ran:
                self._root_ran = event.ok
                self.root_exec_failure = None if event.ok else event.errno
            if event.ok and self.answers is not None:
                self._images[event.pid] = (event.path, named_argv(event) or ())  # unknown (-s 0): no rule
        elif isinstance(event, ProcExited):
            image = self._images.pop(event.pid, None)
            terminal = self._terminal.pop(event.pid, None) if self._terminal else None
            sender = self._senders.pop(event.pid, None) if self._senders else None
            if event.signal is not None and sender is not None and sender[0] == event.signal:
                self.stopped += 1  # only stoppers' signals are kept
            elif interrupted(terminal, event.exit_code, event.signal):
                self.interrupted += 1
                if event.pid == self.root_pid and self.root_exit is None:
                    self.root_interrupted = terminal
            elif event.signal is not None:
                self.failed += not broken_pipe(event.signal)
            elif event.exit_code:
                rule = None if image is None or self.answers is None else self.answers.answer_rule(*image)
                if rule is None or event.exit_code not in rule.codes:
                    self.failed += 1
            if event.pid == self.root_pid and self.root_exit is None:
                self.root_exit = (event.exit_code, event.signal)
        elif isinstance(event, ProcSignaled):
            if (terminal := from_terminal(event)) is not None:
                self._terminal[event.pid] = terminal
            elif self.stoppers and event.sender_pid:
                if event.sender_pid in self.stoppers:
                    self._senders[event.pid] = (event.signal, event.sender_pid)
                else:  # the latest sender decides, as in the tree (ProcessNode.last_sender)
                    self._senders.pop(event.pid, None)
        elif isinstance(event, TraceUnparsed):
            self.unparsed += 1
        elif isinstance(event, ProcSpawnFailed):
            self.failed += 1
        elif isinstance(event, PolicyBlocked):
            self.blocked += 1
            if len(self.refusals) < REFUSALS_KEPT:
                self.refusals.append(event)
        return self
