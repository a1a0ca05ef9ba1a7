"""The process tree: a fold of process facts into one node per process (thread-group leader).

`apply(tree, event) -> tree` updates the tree in place and returns it: a report folds a million events,
and copying state per event would cost more than decoding them. Folding a prefix and then the rest gives
the same tree as folding everything, since `apply` looks at nothing but the tree and the event.

Nodes are keyed by `key`, their order of appearance, because pids are reused over a long session: a
`proc.spawned` for a pid whose process already exited starts a new node. A forked child that never execs
keeps `argv = None`; it shows its parent's argv (`display_argv`) and inherits its label and workflow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from capsule.events import (
    Event,
    FileOpened,
    NetConnected,
    ProcExec,
    ProcExited,
    ProcSampled,
    ProcSignaled,
    ProcSpawned,
)
from capsule.fold.exec_argv import named_argv
from capsule.fold.interrupts import broken_pipe, from_terminal, interrupted
from capsule.fold.labels import UNCLASSIFIED, Classification, ExecImage, RuleSet

MAX_WARNINGS = 100
MAX_SIGNALS_KEPT = 16
MAX_EARLY_SAMPLES = 4096  # pids sampled before their spawn was folded, held for it


# An exec attempt is kept as the proc.exec event itself (ts, path, argv, ok, errno, argv_truncated):
# copying it into another record cost a constructor call per exec for nothing.
ExecAttempt = ProcExec


@attrs.define(kw_only=True, eq=False)
class ProcessNode:
    """One process. Mutable while the fold runs; treat it as read-only outside `ProcessTree.apply`."""

    key: int
    pid: int
    ppid: int | None  # the pid that spawned it (kept when it is orphaned); None for a root
    parent: int | None  # key of the spawner's node, None when the spawner was never seen
    via: str
    start: float
    inherited_argv: tuple[str, ...] | None = None  # the spawner's argv at fork time, for display
    end: float | None = None  # None while running, or when the session ended before its exit was seen
    execs: list[ExecAttempt] = attrs.Factory(list)
    argv: tuple[str, ...] | None = None  # argv of the last successful exec (None: unknown, `-s 0`)
    argv_truncated: bool = False  # strace cut that argv (`-s`): a prefix (argv[0]: see named_argv)
    exe: str | None = None  # path of the last successful exec
    exec_ok: bool = False  # it exec'd successfully (its argv may still be unknown)
    untimed: bool = False  # the trace has no timestamps: start and end say nothing of its duration
    classification: Classification = UNCLASSIFIED
    exit_code: int | None = None
    signal: str | None = None  # the signal that killed it
    core_dumped: bool = False
    signals: list[tuple[float, str]] = attrs.Factory(list)  # signals delivered (first MAX_SIGNALS_KEPT)
    signals_received: int = 0
    last_sender: tuple[str, int] | None = None  # (signal, pid) of the latest signal a process sent it
    terminal_signal: str | None = (
        None  # the latest of the terminal's signals it got (capsule/fold/interrupts.py)
    )
    # It was stopped on purpose, not failed: the signal it died of came from a stopper
    # (ProcessTree.stoppers), or it was interrupted from the terminal (`interrupted`: Ctrl-C).
    stopped: bool = False
    interrupted: bool = False
    peak_cpu_percent: float | None = None
    peak_rss_bytes: int | None = None
    peak_cpu_s: float | None = None  # CPU seconds used, from the last sample (cumulative)
    samples: int = 0
    files_opened: int = 0
    connects: int = 0
    file_ops: dict[str, int] | None = None  # op -> count, once it has any (see capsule/fold/activity.py)
    net_ops: dict[str, int] | None = None
    children: list[int] = attrs.Factory(list)

    @property
    def label(self) -> str:
        return self.classification.label

    @property
    def workflow(self) -> str | None:
        return self.classification.workflow

    @property
    def agent(self) -> str | None:
        return self.classification.agent

    @property
    def display_argv(self) -> tuple[str, ...] | None:
        """What to show: its own argv, else the last attempted one, else its spawner's."""
        if self.argv is not None:
            return self.argv
        if self.exec_ok:
            return None
        if self.execs:
            return self.execs[-1].argv
        return self.inherited_argv

    @property
    def exec_failed(self) -> bool:
        """It tried to exec and never succeeded (a command not found)."""
        return not self.exec_ok and bool(self.execs)

    @property
    def duration(self) -> float | None:
        return None if self.end is None or self.untimed else max(0.0, self.end - self.start)

    @property
    def failure(self) -> str | None:
        """Why it failed, in a few words (`killed by SIGKILL (core dumped)`, `exit 3`, `exec failed:
        ENOENT`), or None: the one wording the exports use."""
        if self.stopped or self.broken_pipe:
            return None
        if self.signal is not None:
            return f"killed by {self.signal}" + (" (core dumped)" if self.core_dumped else "")
        if self.exit_code is not None and self.exit_code != 0 and not self.answered:
            return f"exit {self.exit_code}"
        if not self.exec_ok and self.execs:
            return f"exec failed: {self.execs[-1].errno or 'error'}"
        return None

    @property
    def broken_pipe(self) -> bool:
        """It died of SIGPIPE, its reader gone (`yes | head -1`): no failure (capsule/fold/interrupts.py)."""
        return broken_pipe(self.signal)

    @property
    def answered(self) -> bool:
        """Exited non-zero with an answer, not an error (`grep` 1: no match): an exit rule says so."""
        code = self.exit_code
        return (
            code is not None
            and code != 0
            and self.argv is not None
            and self.signal is None
            and code in self.classification.answers
        )

    @property
    def killed_by(self) -> int | None:
        """The pid that sent the signal it died of, when a process sent it (`kill`, a supervisor) and the
        trace saw it delivered; None for the kernel's signals (SIGSEGV) and for SIGKILL, never seen."""
        sent = self.last_sender
        return sent[1] if sent is not None and self.signal is not None and sent[0] == self.signal else None

    @property
    def failed(self) -> bool:
        """Exited non-zero (unless an exit rule calls that code an answer), was killed by a signal (not
        the stopper's or the terminal's: `stopped`; not SIGPIPE: `broken_pipe`), or never managed to
        exec (a command not found)."""
        if self.stopped:
            return False
        if self.signal is not None:
            return not self.broken_pipe
        if not self.exec_ok and self.execs:
            return True  # every exec attempt failed
        code = self.exit_code
        if self.argv is None:  # never exec'd (a fork child), or `strace -s 0`: no rule can call it an answer
            return bool(code)
        return code is not None and code != 0 and code not in self.classification.answers


@attrs.define(eq=False)
class ProcessTree:
    """Every process seen, in order of appearance; `current` maps a pid to its latest node."""

    rules: RuleSet = attrs.Factory(RuleSet.empty)
    nodes: list[ProcessNode] = attrs.Factory(list)
    current: dict[int, int] = attrs.Factory(dict)
    roots: list[int] = attrs.Factory(list)
    warnings: list[str] = attrs.Factory(list)
    warnings_dropped: int = 0
    untimed: bool = False  # the trace has no timestamps (session.started's trace_clock is `none`)
    # The pids whose signals stop processes on purpose, set before the fold: for a traced service's
    # session, the env's supervisor (`env down`, a restart, a reload stop it; the env's own report calls
    # that stopped, not failed) and the session's `capsule run`, which passes the supervisor's SIGTERM
    # on. A process that died of a signal one of them sent is `stopped`.
    stoppers: frozenset[int] = frozenset()
    early_samples: dict[int, list[ProcSampled]] = attrs.Factory(dict)  # by pid, not yet spawned

    def apply(self, event: Event) -> ProcessTree:
        handler = TREE_HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)
        return self

    @staticmethod
    def handles(event: Event) -> bool:
        return type(event) in TREE_HANDLERS

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, key: int) -> ProcessNode:
        return self.nodes[key]

    def children(self, node: ProcessNode) -> list[ProcessNode]:
        return [self.nodes[k] for k in node.children]

    def ancestors(self, node: ProcessNode) -> Iterable[ProcessNode]:
        """Its parent, grandparent, ... up to a root."""
        key = node.parent
        while key is not None:
            parent = self.nodes[key]
            yield parent
            key = parent.parent

    def descendants(self, node: ProcessNode) -> Iterable[ProcessNode]:
        """Its whole subtree, itself excluded, depth first (iterative: trees can be deep)."""
        stack = list(reversed(node.children))
        while stack:
            child = self.nodes[stack.pop()]
            yield child
            stack.extend(reversed(child.children))

    def warn(self, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)
        else:
            self.warnings_dropped += 1

    def _new_node(self, pid: int, ppid: int | None, via: str, ts: float) -> ProcessNode:
        parent_key = self.current.get(ppid) if ppid is not None else None
        parent = self.nodes[parent_key] if parent_key is not None else None
        node = ProcessNode(
            key=len(self.nodes),
            pid=pid,
            ppid=ppid,
            parent=parent_key,
            via=via,
            start=ts,
            untimed=self.untimed,
        )
        if parent is not None:
            node.inherited_argv = parent.display_argv
            node.classification = parent.classification
            parent.children.append(node.key)
        else:
            self.roots.append(node.key)
        self.nodes.append(node)
        self.current[pid] = node.key
        if self.early_samples:
            for sample in self.early_samples.pop(pid, ()):
                self._take_sample(node, sample)
        return node

    def _node_for(self, pid: int, ts: float, what: str) -> ProcessNode:
        """The live node of `pid`; one is made (as a root) for a pid never seen spawned."""
        key = self.current.get(pid)
        if key is not None:
            return self.nodes[key]
        self.warn(f"pid {pid}: {what} before it was seen spawned")
        return self._new_node(pid, None, "unseen", ts)

    def _spawned(self, event: ProcSpawned) -> None:
        self.spawned(event.ts, event.pid, event.ppid, event.via)

    def spawned(self, ts: float, pid: int, ppid: int | None, via: str) -> None:
        """The fold of a `proc.spawned` of these fields (a big report folds them without the record)."""
        key = self.current.get(pid)
        if key is not None:
            old = self.nodes[key]
            if old.via == "unseen" and old.end is None and not old.children:
                # An exec or sample arrived first: this is the spawn of that same process.
                self._adopt(old, ts, ppid, via)
                return
            if old.end is None:
                self.warn(f"pid {pid} spawned again before its exit was seen")
        self._new_node(pid, ppid, via, ts)

    def _adopt(self, node: ProcessNode, ts: float, ppid: int | None, via: str) -> None:
        # (never under itself: a spawn naming its own pid as parent, in a hostile or torn stream, would
        # make the node its own ancestor, and every walk up the tree endless)
        if node.key in self.roots and ppid is not None and self.current.get(ppid, node.key) != node.key:
            self.roots.remove(node.key)
            parent = self.nodes[self.current[ppid]]
            parent.children.append(node.key)
            node.parent = parent.key
            node.inherited_argv = parent.display_argv
            if node.argv is None:
                node.classification = parent.classification
        node.ppid = ppid
        node.via = via
        node.start = min(node.start, ts)

    def _exec(self, event: ProcExec) -> None:
        node = self._node_for(event.pid, event.ts, "exec")
        had_image = node.exec_ok
        node.execs.append(event)
        if event.ok:
            node.argv = named_argv(event)
            node.argv_truncated = event.argv_truncated
            node.exe = event.path
            node.exec_ok = True
            chain: list[ExecImage] = (
                [(e.path, named_argv(e) or ()) for e in node.execs if e.ok]
                if had_image
                else [(event.path, node.argv or ())]
            )
            node.classification = self.rules.classify(chain)
        elif not node.exec_ok:
            # Never exec'd successfully so far: classify by what it tried to run (a missing command).
            node.classification = self.rules.classify([(event.path, event.argv or ())])

    def _exited(self, event: ProcExited) -> None:
        self.exited(event.ts, event.pid, event.exit_code, event.signal, event.core_dumped)

    def exited(
        self, ts: float, pid: int, exit_code: int | None, signal: str | None, core_dumped: bool
    ) -> None:
        """The fold of a `proc.exited` of these fields (a big report folds them without the record)."""
        node = self._node_for(pid, ts, "exit")
        if node.end is not None:
            self.warn(f"pid {pid} exited twice")
            return
        node.end = ts
        node.exit_code = exit_code
        node.signal = signal
        node.core_dumped = core_dumped
        if signal is not None and self.stoppers:
            node.stopped = node.last_sender is not None and node.last_sender in {
                (signal, p) for p in self.stoppers
            }
        if interrupted(node.terminal_signal, exit_code, signal):
            node.stopped = node.interrupted = True

    def _signaled(self, event: ProcSignaled) -> None:
        key = self.current.get(event.pid)
        if key is None:
            return  # a signal to a process outside the trace: nothing to attach it to
        node = self.nodes[key]
        node.signals_received += 1
        if len(node.signals) < MAX_SIGNALS_KEPT:
            node.signals.append((event.ts, event.signal))
        if event.sender_pid:  # si_pid of a signal a process sent (strace prints none for the kernel's)
            node.last_sender = (event.signal, event.sender_pid)
        elif (terminal := from_terminal(event)) is not None:
            node.terminal_signal = terminal

    def _sampled(self, event: ProcSampled) -> None:
        key = self.current.get(event.pid)
        ended = self.nodes[key].end if key is not None else None
        if key is None or (ended is not None and event.ts > ended):
            # The sampler can see a process before the trace's spawn of it is folded (the tracker lags
            # the live system): keep the sample for the node that pid is about to get.
            held = self.early_samples.get(event.pid)
            if held is None and len(self.early_samples) < MAX_EARLY_SAMPLES:
                self.early_samples[event.pid] = [event]
            elif held is not None:
                held[:] = [max((*held, event), key=lambda e: e.rss_bytes), event]  # the peak and the last
            return
        self._take_sample(self.nodes[key], event)

    def _take_sample(self, node: ProcessNode, event: ProcSampled) -> None:
        node.samples += 1
        if event.cpu_s is not None and (node.peak_cpu_s is None or event.cpu_s > node.peak_cpu_s):
            node.peak_cpu_s = event.cpu_s
        if node.peak_cpu_percent is None or event.cpu_percent > node.peak_cpu_percent:
            node.peak_cpu_percent = event.cpu_percent
        # rss 0: the process had no address space left when sampled (exiting, or a zombie not yet
        # reaped), so the sample says nothing of its memory; its CPU time is still its own
        if event.rss_bytes and (node.peak_rss_bytes is None or event.rss_bytes > node.peak_rss_bytes):
            node.peak_rss_bytes = event.rss_bytes

    def _file_opened(self, event: FileOpened) -> None:
        key = self.current.get(event.pid)
        if key is not None:
            self.nodes[key].files_opened += 1

    def _net_connected(self, event: NetConnected) -> None:
        key = self.current.get(event.pid)
        if key is not None:
            self.nodes[key].connects += 1

    def count_op(self, pid: int, op: str | None, *, net: bool = False) -> int | None:
        """Count a file or network op on the live node of `pid`; its key (None: an unknown pid)."""
        key = self.current.get(pid)
        if key is None:
            return None
        if op is not None:
            node = self.nodes[key]
            counts = node.net_ops if net else node.file_ops
            if counts is None:
                counts = {}
                if net:
                    node.net_ops = counts
                else:
                    node.file_ops = counts
            counts[op] = counts.get(op, 0) + 1
        return key


TREE_HANDLERS: dict[type[Event], Callable[[ProcessTree, Any], None]] = {
    ProcSpawned: ProcessTree._spawned,
    ProcExec: ProcessTree._exec,
    ProcExited: ProcessTree._exited,
    ProcSignaled: ProcessTree._signaled,
    ProcSampled: ProcessTree._sampled,
    FileOpened: ProcessTree._file_opened,
    NetConnected: ProcessTree._net_connected,
}


def apply(tree: ProcessTree, event: Event) -> ProcessTree:
    """Fold one event into the tree (in place) and return it."""
    return tree.apply(event)


def fold_tree(events: Iterable[Event], rules: RuleSet | None = None) -> ProcessTree:
    """The tree of a whole stream of events."""
    tree = ProcessTree(rules if rules is not None else RuleSet.empty())
    for event in events:
        tree.apply(event)
    return tree
