"""The session fold: header, end, recovery, the process tree, counters and warnings of one session.

`SessionState.apply(event)` (or `apply(state, event)`) updates the state in place and returns it; the
prefix law holds because nothing but the state and the event is looked at. The state keeps no event
list: memory grows with the number of processes, not events.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from capsule.events import (
    Event,
    FileChanged,
    FileOpened,
    NetConnected,
    NetSocket,
    ProcExec,
    ProcExited,
    ProcSpawned,
    ProcSpawnFailed,
    SessionEnded,
    SessionRecovered,
    SessionStarted,
    SessionTimedOut,
    TraceUnparsed,
)
from capsule.events.policy import PolicyApplied, PolicyBlocked, PolicyChecked
from capsule.fold.activity import Activity
from capsule.fold.interrupts import what_was_done
from capsule.fold.labels import RuleSet
from capsule.fold.process_tree import TREE_HANDLERS, ProcessNode, ProcessTree

MAX_BLOCKED = 1000  # refusals kept for the report; the count goes on
MAX_SAMPLES = 20


@attrs.define(eq=False)
class SessionState:
    """Everything a report needs about one session, folded from its events."""

    tree: ProcessTree
    header: SessionStarted | None = None
    ended: SessionEnded | None = None
    recovered: SessionRecovered | None = None
    timed_out: SessionTimedOut | None = None  # `capsule run --timeout` stopped the command's tree
    events: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    earliest_ts: float | None = None  # not always the first: trace lines can predate the header
    unparsed_lines: int = 0
    unparsed_samples: list[TraceUnparsed] = attrs.Factory(list)  # the first MAX_SAMPLES
    spawn_failures: list[ProcSpawnFailed] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)  # session-level warnings; the tree keeps its own
    activity: Activity = attrs.Factory(Activity)  # files and network (trace levels file, net, all)
    # Set by the shell, never folded: the session's recorder is alive, so "no end yet" means running.
    live: bool = False
    # Set by the shell too: (pid, what it is) of the process writing the session this one is part of,
    # e.g. (3516, "supervisor"), so a signal it sent is named in the report.
    parent_writer: tuple[int, str] | None = None
    policy: PolicyApplied | None = None  # the guard's policy, when the run had one
    blocked: list[PolicyBlocked] = attrs.Factory(list)  # decisions that refused something (first MAX_BLOCKED)
    blocked_count: int = 0
    checked: PolicyChecked | None = None

    @classmethod
    def new(cls, rules: RuleSet | None = None) -> SessionState:
        return cls(ProcessTree(rules if rules is not None else RuleSet.empty()))

    @property
    def rules(self) -> RuleSet:
        return self.tree.rules

    @property
    def status(self) -> str:
        """`recovered` (completed from the raw trace), `complete` (ended, its trace whole), `running` (no
        end yet and its recorder is alive: the shell says so with `live`) or `incomplete` (no end and the
        recorder gone, or a trace that stops before the command ended: strace was killed)."""
        if self.recovered is not None:
            return "recovered"
        if self.ended is not None and self.ended.incomplete is None:
            return "complete"
        return "running" if self.live else "incomplete"

    @property
    def started(self) -> float | None:
        return self.header.ts if self.header is not None else self.first_ts

    @property
    def timeline_start(self) -> float | None:
        """The origin for timelines: the earliest moment anything in the session happened.

        The header of `capsule run` is written just after strace starts, so the root's first trace line
        can precede it; an imported log's trace predates its header by hours."""
        candidates = [t for t in (self.started, self.earliest_ts) if t is not None]
        return min(candidates) if candidates else None

    @property
    def duration(self) -> float | None:
        """From the end event when there is one, else from the first to the last event seen."""
        if self.ended is not None:
            return self.ended.duration_s
        start = self.started
        if start is None or self.last_ts is None:
            return None
        return max(0.0, self.last_ts - start)

    @property
    def root(self) -> ProcessNode | None:
        """The traced command: the first root of the tree."""
        roots = self.tree.roots
        return self.tree.nodes[roots[0]] if roots else None

    @property
    def stopped_by(self) -> str | None:
        """Who stopped the command on purpose: `supervisor (3516)` (`env down`, a restart: its signal is
        what the command died of, ProcessTree.stoppers), or `the terminal (Ctrl-C)`; None otherwise."""
        root = self.root
        if root is None or not root.stopped:
            return None
        if root.interrupted and root.terminal_signal is not None:
            return f"the terminal ({what_was_done(root.terminal_signal)})"
        if self.parent_writer is None:
            return None
        return f"{self.parent_writer[1]} ({self.parent_writer[0]})"

    @property
    def exit_code(self) -> int | None:
        if self.ended is not None:
            return self.ended.exit_code
        root = self.root
        return root.exit_code if root is not None else None

    @property
    def signal(self) -> str | None:
        if self.ended is not None:
            return self.ended.signal
        root = self.root
        return root.signal if root is not None else None

    @property
    def warnings(self) -> list[str]:
        out = [*self.notes, *self.tree.warnings]
        out.extend(f"could not start {f.path}: {f.message} ({f.errno})" for f in self.spawn_failures)
        if self.tree.warnings_dropped:
            out.append(f"{self.tree.warnings_dropped} more warnings not shown")
        if self.unparsed_lines:
            out.append(f"{self.unparsed_lines} trace line(s) could not be parsed")
        if self.ended is None and self.status == "incomplete":
            out.append("the session has no end: its recorder died before closing it")
        if self.recovered is not None:
            out.append(f"recovered from the raw trace: {self.recovered.reason}")
        header = self.header
        if self.ended is not None and self.ended.incomplete is not None:
            imported = header is not None and header.session_kind == "import"
            what = (
                "the log does not show the command's end"
                if imported
                else "recording stopped before the command ended"
            )
            out.append(f"{what}: {self.ended.incomplete}")
        if header is not None and header.session_kind == "import":
            clock = header.trace_clock
            if clock == "time-of-day":
                out.append(
                    "the log's timestamps (-t/-tt) carry no date: it was taken from the log file's "
                    "modification time"
                )
            elif clock == "relative":
                out.append(
                    "the log's timestamps are relative (-r): times are anchored so that its last line "
                    "falls at the log file's modification time"
                )
            elif clock == "none":
                out.append("the log has no timestamps: durations are unknown")
        return out

    def apply(self, event: Event) -> SessionState:
        self.events += 1
        ts = event.ts
        last = self.last_ts
        if last is None:
            self.first_ts = self.last_ts = self.earliest_ts = ts
        elif ts > last:
            self.last_ts = ts
        elif self.earliest_ts is not None and ts < self.earliest_ts:
            self.earliest_ts = ts
        tree_handler = TREE_HANDLERS.get(type(event))
        if tree_handler is not None:
            tree_handler(self.tree, event)
            handler = ACTIVITY_HANDLERS.get(type(event))
            if handler is not None:
                handler(self, event)
        elif type(event) in ACTIVITY_HANDLERS:
            ACTIVITY_HANDLERS[type(event)](self, event)
        elif isinstance(event, TraceUnparsed):
            self.unparsed_lines += 1
            if len(self.unparsed_samples) < MAX_SAMPLES:
                self.unparsed_samples.append(event)
        elif isinstance(event, SessionStarted):
            if self.header is not None:
                self.notes.append("a second session.started header was ignored")
            else:
                self.header = event
                self.tree.untimed = event.trace_clock == "none"
                if self.events != 1:
                    self.notes.append("session.started is not the first event")
                # An import's cwd is the importer's, not the traced program's: relative paths stay so.
                self.activity.cwd = event.cwd if event.session_kind != "import" else None
                self.activity.track_exec = event.trace_level in ("file", "all")
        elif isinstance(event, SessionEnded):
            self.ended = event
        elif isinstance(event, SessionRecovered):
            self.recovered = event
        elif isinstance(event, SessionTimedOut):
            self.timed_out = event
            killed = f", {event.killed} SIGKILLed after {event.grace_s:g} s" if event.killed else ""
            self.notes.append(
                f"timed out: the command's tree was stopped after {event.limit_s:g} s (--timeout): "
                f"{event.terminated} process{'es' if event.terminated != 1 else ''} sent SIGTERM{killed}"
            )
        elif isinstance(event, ProcSpawnFailed):
            self.spawn_failures.append(event)
        elif isinstance(event, PolicyBlocked):
            self.blocked_count += 1
            if len(self.blocked) < MAX_BLOCKED:
                self.blocked.append(event)
        elif isinstance(event, PolicyApplied):
            self.policy = event
            if event.warning:
                self.notes.append(event.warning)
        elif isinstance(event, PolicyChecked):
            self.checked = event
        return self

    def apply_flat(self, items: Iterable[Any], decode: Callable[[int, bytes], Any]) -> None:
        """Fold a batch of `capsule.codec.flat.flatten_line` results in order, exactly as `apply` of each
        built record would: the common kinds without building one (~0.3 us each on a million-event
        report), the rest built; a line it declined travels as `(line_no, line)` and goes through
        `decode` (a `LineDecoder`'s, for its notes), then `apply`."""
        from capsule.codec.flat import BUILDERS as builders

        apply, tree = self.apply, self.tree
        spawned, exited, exec_ = tree.spawned, tree.exited, tree._exec
        times: list[float] = []  # of the events folded here, not yet counted (`_count`)
        seen = times.append
        event: Any
        for item in items:
            head = item[0]
            if head == _SPAWNED:
                _, ts, pid, ppid, via = item
                seen(ts)
                spawned(ts, pid, ppid, via)
            elif head == _EXITED:
                _, ts, pid, exit_code, signal, core_dumped = item
                seen(ts)
                exited(ts, pid, exit_code, signal, core_dumped)
            elif head == _EXEC:
                event = builders[head](item)
                seen(event.ts)
                exec_(event)
                if self.activity.track_exec:
                    _executed(self, event)
            else:
                self._count(times)
                if type(head) is str:
                    apply(builders[head](item))
                elif (decoded := decode(head, item[1])) is not None:
                    apply(decoded[1])
        self._count(times)

    def _count(self, times: list[float]) -> None:
        """Count events of these timestamps, in this order, as `apply` counts each (then forget them):
        the first time, the latest and the earliest."""
        if not times:
            return
        self.events += len(times)
        if self.last_ts is None:
            self.first_ts = self.last_ts = self.earliest_ts = times[0]
        self.last_ts = max(self.last_ts, max(times))
        if self.earliest_ts is not None:
            self.earliest_ts = min(self.earliest_ts, min(times))
        times.clear()


def _opened(state: SessionState, event: FileOpened) -> None:
    key = state.tree.current.get(event.pid)
    if key is not None:
        state.tree.count_op(event.pid, state.activity.opened(event, key))


def _changed(state: SessionState, event: FileChanged) -> None:
    key = state.tree.current.get(event.pid)
    if key is not None:
        state.tree.count_op(event.pid, state.activity.changed(event, key))


def _executed(state: SessionState, event: ProcExec) -> None:
    if state.activity.track_exec and event.ok:
        key = state.tree.current.get(event.pid)
        if key is not None:
            state.activity.executed(event, key)
            state.tree.count_op(event.pid, "exec")


def _network(state: SessionState, event: NetConnected | NetSocket) -> None:
    key = state.tree.current.get(event.pid)
    if key is not None:
        state.activity.network(event, key)
        state.tree.count_op(event.pid, "connect" if isinstance(event, NetConnected) else event.op, net=True)


ACTIVITY_HANDLERS: dict[type[Event], Callable[[SessionState, Any], None]] = {
    FileOpened: _opened,
    FileChanged: _changed,
    ProcExec: _executed,
    NetConnected: _network,
    NetSocket: _network,
}


def _flat_kind(cls: type[Event], names: tuple[str, ...]) -> str | None:
    """`cls.KIND` when its flat tuple is `(kind, *names)` (its fields in attrs order), else None: then
    `apply_flat` builds its records like any other kind's."""
    return cls.KIND if tuple(f.name for f in attrs.fields(cls)) == names else None


_SPAWNED = _flat_kind(ProcSpawned, ("ts", "pid", "ppid", "via"))
_EXITED = _flat_kind(ProcExited, ("ts", "pid", "exit_code", "signal", "core_dumped"))
_EXEC = ProcExec.KIND


def apply(state: SessionState, event: Event) -> SessionState:
    """Fold one event into the session state (in place) and return it."""
    return state.apply(event)


def fold_session(events: Iterable[Event], rules: RuleSet | None = None) -> SessionState:
    """Fold a whole stream of events; pass the rules from `RuleSet.from_toml` (default: none)."""
    state = SessionState.new(rules)
    step = state.apply
    with paused_gc():
        for event in events:
            step(event)
    return state


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many acyclic objects.

    A big session makes hundreds of thousands of nodes, none of them in a reference cycle; the collector
    would rescan them again and again. Measured on 1,000,000 events: decode + fold 154k -> 192k events/s,
    report_dict 5.2 s -> 3.0 s.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            # Move what was built into the oldest generation unscanned: re-enabled with millions of
            # objects in the youngest one, the next allocation would run a collection over all of them
            # (measured: 0.55 s after a 1,000,000-event report). A later full collection still sees them.
            # (unfreeze takes every frozen object along, the CLI's start-up ones too: they are only
            # scanned again by full collections, as before they were frozen.)
            gc.freeze()
            gc.enable()
            gc.unfreeze()
