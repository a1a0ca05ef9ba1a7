"""Sessions: find, load, list, record, import, replay and export them; check that recording works here.

Each function returns frozen records (or a core fold state, for the renderers) and raises the
`CapsuleError` family (capsule/api/errors.py). `load` recovers a session whose recorder died before it
folds it, so every door reports the same thing. Heavy modules are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import attrs

from capsule.api.errors import BadInput, NotFound, RecordingFailed, Unavailable, UsageError

if TYPE_CHECKING:
    from capsule.fold import SessionState
    from capsule.fold.labels import RuleSet
    from capsule.report.json_stream import Chunk
    from capsule.stages.ebpf_recorder import EbpfTracer
    from capsule.stages.launch import Early
    from capsule.stages.tracer import Tracer


def home() -> Path:
    """`$CAPSULE_HOME`, default `~/.capsule`; refused (`Unavailable`, exit 5) when another user owns it
    or group/others can write it."""
    from capsule.stages.home import capsule_home, check_home

    where = capsule_home()
    problem = check_home(where)
    if problem is not None:
        raise Unavailable(problem)
    return where


def rule_sources(packaged: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(name, TOML text) of the packaged rule files (only those named in `packaged`, when given), then
    of the user's `$CAPSULE_HOME/rules.toml`."""
    if packaged is None:
        from importlib.resources import files

        sources = [
            (f"capsule/rules/{f.name}", f.read_text(encoding="utf-8"))
            for f in sorted(files("capsule.rules").iterdir(), key=lambda f: f.name)
            if f.name.endswith(".toml")
        ]
    else:  # named files, through the package's loader (importlib.resources is ~3 ms of `capsule run`)
        from capsule import rules as package

        loader: Any = package.__spec__.loader
        folder = os.path.dirname(package.__file__ or "")
        sources = [
            (f"capsule/rules/{name}", loader.get_data(os.path.join(folder, name)).decode("utf-8"))
            for name in sorted(packaged)
        ]
    user = home() / "rules.toml"
    if user.is_file():
        try:
            sources.append((str(user), user.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"{user}: {exc}") from exc
    return sources


def rules_digest(sources: list[tuple[str, str]]) -> str:
    """A digest of the rules a report was folded with (part of a report snapshot's key)."""
    import hashlib

    import orjson

    return hashlib.sha256(orjson.dumps(sources)).hexdigest()


def rules(packaged: tuple[str, ...] | None = None, sources: list[tuple[str, str]] | None = None) -> RuleSet:
    """The packaged label and workflow rules (only the files named in `packaged`, when given), then the
    user's `$CAPSULE_HOME/rules.toml` over them (or the rules of `sources`, from `rule_sources`)."""
    from capsule.fold.labels import RuleError, RuleSet

    try:
        return RuleSet.from_sources(*(rule_sources(packaged) if sources is None else sources))
    except RuleError as exc:
        raise BadInput(str(exc)) from exc


def tidy_spools() -> None:
    """Spools that no live recorder owns are recovered into their sessions (or removed), so an
    unredacted trace never outlives the recording that made it. Quiet on an unsafe home (the command
    itself refuses it)."""
    from capsule.stages.home import capsule_home, check_home

    where = capsule_home()
    spool = where / "spool"
    if not spool.is_dir() or check_home(where) is not None or not any(spool.iterdir()):
        return
    from capsule.stages.spools import tidy_spools as tidy

    tidy(where)


def private_output(path: Path) -> Any:
    """A new 0600 file written beside `path` and renamed over it (a symlink there is replaced, never
    followed): the context manager that export -o and report --html write through."""
    from capsule.stages.store import private_output as output

    return output(path)


def resolve(ref: str) -> Path:
    """A session's directory from an id, unique id prefix, directory, events.jsonl path or `latest`."""
    from capsule.stages.store import SessionNotFound, resolve_session

    try:
        return resolve_session(home(), ref)
    except SessionNotFound as exc:
        raise NotFound(str(exc)) from exc


def kind(session_dir: Path) -> str | None:
    """The session's kind (run, env, agents, import), None if it has no header."""
    from capsule.stages.reader import glance

    header = glance(session_dir).header
    return None if header is None else header.session_kind


def header_of(session_dir: Path) -> Any:
    """The session's `session.started` header, None if it has none."""
    from capsule.stages.reader import glance

    return glance(session_dir).header


def all_session_dirs() -> list[Path]:
    """Every session directory under `$CAPSULE_HOME/runs`, traced children included."""
    from capsule.stages.store import session_dirs

    return list(session_dirs(home()))


def is_agents(session_dir: Path) -> bool:
    return kind(session_dir) == "agents"


def is_supervised(session_dir: Path) -> bool:
    """An env or agents session: services or tasks over time, with the run sessions they traced."""
    return kind(session_dir) in ("env", "agents")


@attrs.frozen(kw_only=True)
class Supervised:
    """An env or agents session's timeline and the folded run sessions of its traced starts/attempts."""

    timeline: Any
    children: dict[str, SessionState]
    warnings: tuple[str, ...]


def html_assets() -> Any:
    """The HTML report's page template, CSS and JS (package data), read once."""
    from capsule.stages.assets import html_assets as read

    return read()


def load_supervised(session: str | Path) -> Supervised:
    """Fold an env or agents session for the HTML report and exports; a traced run session that
    cannot be found (pruned) is a warning, not an error."""
    from capsule.codec import CodecError
    from capsule.report.supervised import fold_supervised, trace_sessions
    from capsule.stages.reader import iter_events, recorder_alive

    session_dir = session if isinstance(session, Path) else resolve(session)
    try:
        timeline = fold_supervised(iter_events(session_dir))
    except CodecError as exc:
        raise BadInput(f"{session_dir / 'events.jsonl'}: {exc}") from exc
    if timeline.outcome is None and timeline.header is not None and recorder_alive(timeline.header):
        timeline.live_at = time.time()  # its services are up till now, not till their last event
    children: dict[str, SessionState] = {}
    warnings: list[str] = []
    rule_set = rules()
    for sid in trace_sessions(timeline):
        try:
            child = load(resolve(sid), rule_set)
        except NotFound:
            warnings.append(f"traced run session {sid} is gone (pruned?): its processes are not shown")
            continue
        children[sid] = child.state
        warnings += [f"{sid}: {w}" for w in child.warnings]
    return Supervised(timeline=timeline, children=children, warnings=tuple(warnings))


@attrs.frozen(kw_only=True)
class Loaded:
    """A session folded for reporting, and what the reader had to say about it."""

    path: Path
    state: SessionState
    warnings: tuple[str, ...]
    recovery: str | None = None  # the warning of a recovery this load made (the next load will not)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def lasting_warnings(self) -> tuple[str, ...]:
        """The warnings every later load of this session gives too (all but this load's recovery)."""
        return tuple(w for w in self.warnings if w != self.recovery)


def load(
    session: str | Path, rule_set: RuleSet | None = None, *, where: Path | None = None, forked: bool = False
) -> Loaded:
    """Fold a session (recovering it first if its recorder died); `where`: its `$CAPSULE_HOME`
    (default `home()`); `forked`: a big session's lines are read and checked by a child process on
    another core (for a command that forks safely: no threads of its own at work)."""
    from capsule.codec import CodecError, LineDecoder
    from capsule.fold import SessionState
    from capsule.stages.reader import glance, iter_events, parent_writer, recorder_alive, stoppers

    session_dir = session if isinstance(session, Path) else resolve(session)
    warnings: list[str] = []
    recovery = None
    seen = glance(session_dir)
    header = seen.header
    if header is None:
        raise BadInput(seen.not_a_session())
    live = seen.ended is None and recorder_alive(header)
    # an env session has no trace of its own (its services' traced starts are run sessions): nothing to
    # re-derive when its supervisor died, and what that supervisor left running is `env down`'s to stop
    if seen.ended is None and not live and header.tracer is not None:
        import trio  # only here: ~60 ms of every report's start with the recovery stages

        from capsule.stages.derive import recover

        try:
            result = trio.run(lambda: recover(session_dir, header, home=where or home()))
        except CodecError as exc:  # a line written by a newer capsule: recovering would misread it
            raise BadInput(f"{session_dir / 'events.jsonl'}: {exc}") from exc
        recovery = f"recovered: the recorder died; {result.events_added} events re-derived from the raw trace"
        warnings.append(recovery)
    digest = None
    if rule_set is None:
        sources = rule_sources()
        digest, rule_set = rules_digest(sources), rules(sources=sources)
    decoder = LineDecoder()
    state = SessionState.new(rule_set)
    state.live = live  # a session still being recorded reads `running`, not `incomplete`
    state.parent_writer = parent_writer(session_dir, header)
    state.tree.stoppers = stoppers(header, state.parent_writer)
    try:
        if forked and _big(session_dir):
            from capsule.stages.forked import fold_forked

            fold_forked(session_dir, decoder, state)
        else:
            for event in iter_events(session_dir, decoder):
                state.apply(event)
    except CodecError as exc:
        raise BadInput(f"{session_dir / 'events.jsonl'}: {exc}") from exc
    warnings += [f"line {n}: skipped, {reason}" for n, reason in decoder.bad_lines]
    if decoder.torn_tail:
        warnings.append("the last line is torn (the recorder was stopped mid-write); it was ignored")
    loaded = Loaded(path=session_dir, state=state, warnings=tuple(warnings), recovery=recovery)
    if recovery is not None and digest is not None:  # after recovery: keep the report snapshot too
        _snapshot_from(loaded, digest)
    return loaded


@attrs.frozen(kw_only=True)
class Reported:
    """A session's report as data: the object `capsule report --json` prints (agents sessions: their DAG)."""

    session: str
    data: dict[str, Any]
    warnings: tuple[str, ...]


def report(session: str | Path) -> Reported:
    """The `report --json` object of a run, import, env or agents session."""
    session_dir = session if isinstance(session, Path) else resolve(session)
    if is_agents(session_dir):
        from capsule.api.agents import report as agents_report
        from capsule.report.agents import report_dict as agents_dict

        found = agents_report(session_dir)
        data = agents_dict(found.run, found.state, found.trees)
        return Reported(session=session_dir.name, data=data, warnings=())
    from capsule.report import report_dict

    loaded = load(session_dir)
    data = report_dict(loaded.state)
    warnings = loaded.warnings
    if is_supervised(session_dir):  # an env session: the keys every report has, and its services
        from capsule.report.services import services_list

        sup = load_supervised(session_dir)
        data["session"]["outcome"] = sup.timeline.final_outcome
        data["services"] = services_list(sup.timeline, sup.children)
        warnings = (*warnings, *sup.warnings)
    data["warnings"] = [*warnings, *data.get("warnings", [])]
    return Reported(session=loaded.id, data=data, warnings=warnings)


def write_report_json(session: str | Path, out: BinaryIO, *, keep: list[object] | None = None) -> None:
    """Write `capsule report --json` of a run or import session to `out`, from its derived snapshot when
    that is fresh (stages/snapshot.py); else fold the events, and keep a snapshot of an ended session
    big enough to be worth one. The bytes are the same either way. A big session is read and written
    with a second process on another core (stages/forked.py): for a command's own process, not one with
    threads at work (it forks). `keep`: a caller about to exit passes a list that is given the fold, so
    that it is not freed object by object on the way out (capsule/cli/fast.py `exiting_with_heap`)."""
    from capsule.fold.session import paused_gc
    from capsule.stages import snapshot

    session_dir = session if isinstance(session, Path) else resolve(session)
    sources = rule_sources()
    digest = rules_digest(sources)
    fresh = snapshot.fresh_snapshot(session_dir, digest)
    if fresh is not None:
        try:
            snapshot.copy_report(fresh, out)
        except snapshot.DamagedSnapshot as exc:  # only a hand-edited one: it is written whole or not at all
            raise BadInput(f"{exc}; delete it (a derived cache) and report again") from None
        return
    # A report builds hundreds of thousands of acyclic objects and then exits: the cyclic collector
    # would only rescan them (measured: decode + fold 154k -> 192k events/s on 1M events).
    with paused_gc():
        loaded = load(session_dir, rules(sources=sources), forked=True)
        if keep is not None:
            keep.append(loaded)
        key = snapshot.snapshot_key(session_dir, digest) if _deserves_snapshot(loaded) else None
        if key is not None and loaded.recovery is None:  # one pass: to `out` and to the snapshot
            with _report_json_chunks(loaded, loaded.warnings, forked=True) as chunks:
                snapshot.tee_snapshot(session_dir, key, chunks, out)
            return
        if key is not None:  # the recovering report: its snapshot leaves out this load's recovery note
            _snapshot_from(loaded, digest)
        with _report_json_chunks(loaded, loaded.warnings, forked=True) as chunks:
            for chunk in chunks:
                out.write(chunk)
        out.flush()


@contextlib.contextmanager
def _report_json_chunks(
    loaded: Loaded, warnings: tuple[str, ...], *, forked: bool
) -> Iterator[Iterator[Chunk]]:
    """The chunks of `report --json`, to be drawn inside the block. `forked`: a big report's last
    processes and the members after them (the summary's statistics: a third of the work) are made by
    a child while this process makes and writes the first ones."""
    from capsule.report.json_report import process_dict, report_split
    from capsule.report.json_stream import closing, items_chunks, members, opening

    head, nodes, tail = report_split(loaded.state)
    split = len(nodes) if not forked or len(nodes) < FORK_MIN_PROCESSES else int(len(nodes) * FORK_SHARE)

    def rest() -> Iterator[Chunk]:
        data = tail()  # first: a child makes it while this process writes the first processes
        data["warnings"] = [*warnings, *data.get("warnings", [])]
        yield from items_chunks(map(process_dict, nodes[split:]), first=split == 0)
        yield closing(empty=not nodes, last=False) + members(data, last=True) + b"}\n"

    def chunks(rest: Callable[[], Iterable[Chunk]]) -> Iterator[Chunk]:
        yield opening(head, "processes")
        yield from items_chunks(map(process_dict, nodes[:split]), first=True)
        yield from rest()

    if split == len(nodes):
        yield chunks(rest)
        return
    from capsule.stages.forked import forked_chunks, worth_forking

    if not worth_forking():
        yield chunks(rest)
        return
    with forked_chunks(rest, loaded.path) as forked_rest:
        yield chunks(forked_rest)


# Below these a second process costs more than it saves (a fork, a pipe, a child's copied pages).
FORK_MIN_PROCESSES = 10_000
# The share of the processes this process writes: the child also makes the summary, and pays for the
# pages it copies on write (measured on 333,001 processes at 0.75: this process 1.07 s of CPU, the
# child 1.5 s; balanced near 0.88).
FORK_SHARE = 0.92
FORK_MIN_BYTES = 4 << 20  # ~30,000 events


def _big(session_dir: Path) -> bool:
    from capsule.stages.forked import worth_forking
    from capsule.stages.store import EVENTS, session_file

    found = session_file(session_dir, EVENTS)
    return found is not None and found.stat().st_size >= FORK_MIN_BYTES and worth_forking()


def _deserves_snapshot(loaded: Loaded) -> bool:
    """An ended session (its report can no longer change) big enough for a snapshot to pay."""
    from capsule.stages import snapshot

    state = loaded.state
    return state.ended is not None and not state.live and state.events >= snapshot.MIN_EVENTS


def _snapshot_from(loaded: Loaded, digest: str) -> Path | None:
    """Write the snapshot of a loaded session when it has ended and is big enough; its path, or None."""
    from capsule.stages import snapshot

    if not _deserves_snapshot(loaded):
        return None
    key = snapshot.snapshot_key(loaded.path, digest)
    if key is None:
        return None
    try:
        with _report_json_chunks(loaded, loaded.lasting_warnings, forked=False) as chunks:
            return snapshot.write_snapshot(loaded.path, key, chunks)
    except OSError:  # a cache: a read-only or full disk must not fail the report
        return None


def snapshot_after_close(session_dir: Path, events: int | None = None) -> None:
    """At session close (run, import): keep the report snapshot of a session big enough for one.
    `events`: what its session.ended says, if the caller knows (then a small session is not read again:
    reading its footer loaded every event class, ~35 ms of an import's close)."""
    from capsule.stages import snapshot
    from capsule.stages.store import EVENTS

    if events is not None and events < snapshot.MIN_EVENTS:
        return
    try:  # every line is at least ~40 bytes: a small file cannot hold MIN_EVENTS (no header to decode)
        if (session_dir / EVENTS).stat().st_size < snapshot.MIN_EVENTS * 32:
            return
    except FileNotFoundError:
        return
    from capsule.stages.reader import glance

    seen = glance(session_dir)
    if seen.ended is None or seen.ended.events < snapshot.MIN_EVENTS:
        return  # before importing the folds: a small run's close stays as cheap as it was
    from capsule.codec import CodecError
    from capsule.fold.session import paused_gc

    sources = rule_sources()
    try:
        with paused_gc():
            _snapshot_from(load(session_dir, rules(sources=sources)), rules_digest(sources))
    except (BadInput, CodecError):  # the report will say what is wrong with the session
        pass


# --- listing ------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SessionRow:
    """One row of `capsule ls --json` (the field order is the JSON's)."""

    id: str
    kind: str = attrs.field(metadata={"doc": "run, env, agents or import."})
    name: str | None
    parent: str | None = attrs.field(metadata={"doc": "The env or agents session a traced run belongs to."})
    started: float = attrs.field(metadata={"doc": "Seconds since the epoch."})
    duration_s: float | None
    argv: tuple[str, ...]
    processes: int | None
    failed: int | None
    exit_code: int | None
    signal: str | None
    status: str = attrs.field(metadata={"doc": "complete, recovered, running or incomplete."})
    timed_out_s: float | None = attrs.field(
        default=None, metadata={"doc": "The `--timeout` limit, when it stopped the command; else null."}
    )


def list_sessions(
    limit: int = 20,
    include_children: bool = False,
    *,
    kind: str | None = None,
    where: Path | None = None,
    unreadable: list[str] | None = None,
) -> tuple[SessionRow, ...]:
    """Sessions newest first; the run sessions of traced services and tasks with `include_children`;
    only those of `kind` (run, env, agents, import) when given; under `where` (default `home()`).
    `unreadable` gets the ids of sessions whose header cannot be read (damaged, or a newer capsule's).

    Finished sessions' rows come from the derived index (stages/listing.py) while their events file is
    unchanged; the others are read from their first line and last 16 KiB."""
    from capsule.stages import listing
    from capsule.stages.home import runs_dir

    where = where if where is not None else home()
    runs = runs_dir(where)
    index = listing.load_index(where)
    updates: dict[str, list[Any]] = {}
    rows: list[SessionRow] = []
    listed = listing.session_keys(where)
    walked = 0
    for session_id, key in listed:
        if len(rows) >= max(limit, 0):
            break
        walked += 1
        cached = index.get(session_id)
        if isinstance(cached, list) and len(cached) == 2 and cached[0] == key:
            fields = cached[1]
            if (fields["parent"] is None or include_children) and kind in (None, fields["kind"]):
                rows.append(SessionRow(**{**fields, "argv": tuple(fields["argv"])}))
            continue
        # Only a session the index lacks loads the decoder (and every event class: ~0.1 s of start).
        from capsule.stages.reader import glance, recorder_alive

        path = runs / session_id
        try:
            seen = glance(path)
        except FileNotFoundError:  # removed since it was listed (prune)
            continue
        header, ended = seen.header, seen.ended
        if header is None:
            if unreadable is not None and not seen.blank:  # blank: killed before its header, nothing lost
                unreadable.append(session_id)
            continue
        if ended is not None:
            status = "recovered" if seen.recovered else "complete"
        else:
            status = "running" if recorder_alive(header) else "incomplete"
        found = SessionRow(
            id=path.name,
            kind=header.session_kind,
            name=header.name,
            parent=header.parent,
            started=header.ts,
            duration_s=ended.duration_s if ended else None,
            argv=tuple(header.argv),
            processes=ended.processes if ended else None,
            failed=ended.failed if ended else None,
            exit_code=ended.exit_code if ended else None,
            signal=ended.signal if ended else None,
            status=status,
            timed_out_s=ended.timed_out_s if ended else None,
        )
        if ended is not None:
            updates[session_id] = [key, attrs.asdict(found)]
        if (header.parent is None or include_children) and kind in (None, found.kind):
            rows.append(found)
    if walked == len(listed):  # every session seen: rows of sessions since removed go too
        present = {session_id for session_id, _key in listed}
        if updates or not present.issuperset(index):
            listing.save_index(where, {k: v for k, v in {**index, **updates}.items() if k in present})
    elif updates:
        listing.save_index(where, {**index, **updates})
    return tuple(rows)


# --- recording ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Recorded:
    """A command recorded under strace as a new session."""

    session: str = attrs.field(metadata={"doc": "The new session's id (for get_report, get_process_tree)."})
    path: Path = attrs.field(metadata={"doc": "The session's directory."})
    exit_code: int = attrs.field(
        metadata={"doc": "The command's exit code; 128+N if signal N killed it; 125-127 if it did not run."}
    )
    signal: str | None = attrs.field(metadata={"doc": "The signal that killed the command, e.g. SIGKILL."})
    timed_out: bool = attrs.field(
        metadata={"doc": "True if the command was killed for running past its time."}
    )
    duration_s: float
    processes: int = attrs.field(metadata={"doc": "Processes the command spawned, itself included."})
    failed: int = attrs.field(metadata={"doc": "Processes that exited non-zero or were killed."})
    error: str | None = attrs.field(metadata={"doc": "Why recording failed, or the command could not start."})
    warning: str | None = attrs.field(
        default=None,
        metadata={"doc": "A policy part downgraded to detect-and-kill (--policy-fallback detect)."},
    )
    blocked: int = attrs.field(
        default=0,
        metadata={"doc": "What the policy refused (execs, opens): the session's policy.blocked events."},
    )
    refusals: tuple[str, ...] = attrs.field(
        default=(),
        metadata={
            "doc": "The first few refusals, a line each: what, the rule, the pid (the report has all)."
        },
    )
    events: int | None = attrs.field(
        default=None, metadata={"doc": "Events the session holds (the lines of its events.jsonl)."}
    )
    interrupted: str | None = attrs.field(
        default=None,
        metadata={
            "doc": "What the person at the terminal did that ended the command (Ctrl-C, Ctrl-\\, "
            "hang-up); its processes that it ended are not counted as failed."
        },
    )


def check_level(level: str) -> None:
    from capsule.stages.tracer import LEVELS

    if level not in LEVELS:
        raise UsageError(f"unknown --level {level!r}: choose one of {', '.join(LEVELS)}")


@attrs.frozen
class _Plan:
    """A recording's checked options: what `record_async` runs with."""

    answers: RuleSet
    enforcement: Any
    found: Tracer | EbpfTracer


def _plan(
    argv: list[str],
    level: str,
    tracer: str,
    sample: float,
    cwd: str | Path | None,
    policy_file: Path | None,
    policy_fallback: str | None,
) -> _Plan:
    from capsule.stages.tracer import PROBES, TRACERS, TracerMissing, find_recorder

    if not argv or not argv[0]:
        raise UsageError("the command is empty: give the program and its arguments")
    check_level(level)
    if tracer not in TRACERS:
        raise UsageError(f"unknown --tracer {tracer!r}: choose one of {', '.join(TRACERS)}")
    if sample < 0:
        raise UsageError(f"--sample {sample}: the interval must be 0 (off) or a positive number of seconds")
    answers = rules(packaged=("exits.toml",))  # so the summary's failure count leaves `grep` 1 out
    enforcement = _enforcement(policy_file, policy_fallback)
    if cwd is not None and not os.path.isdir(cwd):
        raise NotFound(f"cwd {str(cwd)!r}: no such directory")
    try:
        found = find_recorder(tracer, home() / PROBES)
    except TracerMissing as exc:
        raise RecordingFailed(str(exc)) from exc
    return _Plan(answers=answers, enforcement=enforcement, found=found)


@attrs.frozen
class Launched:
    """A recording checked, and started already in the common case (`launch`): give it to `record`."""

    plan: _Plan
    early: Early | None


def launch(
    argv: list[str],
    *,
    level: str = "process",
    name: str | None = None,
    redact: bool = True,
    parent: str | None = None,
    tracer: str = "strace",
    sample: float = 0.0,
    policy_file: Path | None = None,
    policy_fallback: str | None = None,
    **_options: Any,
) -> Launched:
    """Check `record`'s options (raising as it would) and start the recording now, before trio and the
    recorder load (stages/launch.py): the command runs while they do. strace is spawned on `argv`; for
    eBPF, its recorder and the command's stub, which the recorder lets go. With a policy, the guard is
    made and started here too (its wrappers, its server), the command inside them.
    `capsule run` calls this, then `record(argv, launched=..., **the same options)`."""
    from capsule.stages.launch import resolve_command, start, start_ebpf
    from capsule.stages.tracer import Tracer

    os.umask(0o077)
    plan = _plan(argv, level, tracer, sample, None, policy_file, policy_fallback)
    resolved, _failure = resolve_command(argv[0])
    if resolved is None:  # `record_run` writes the session of a command not found
        return Launched(plan=plan, early=None)
    guard = None
    if plan.enforcement is not None:
        from capsule.stages.guard import open_guard, trace_level
        from capsule.stages.guard_probe import GuardRefused

        level = trace_level(level, plan.enforcement, ebpf=not isinstance(plan.found, Tracer))  # the tracer's
        try:
            guard = open_guard(plan.enforcement, emit=None, redact=redact, cwd=Path.cwd())
        except GuardRefused as exc:
            raise RecordingFailed(str(exc)) from None
    where = home()
    try:
        if isinstance(plan.found, Tracer):
            early = start(list(argv), where, plan.found, plan.answers, level, name, redact, parent, guard)
        else:
            early = start_ebpf(list(argv), where, plan.found, resolved, plan.answers, level, redact, guard)
    except OSError as exc:
        if guard is not None:
            guard.close()
        raise RecordingFailed(f"cannot record under {where}: {exc.strerror or exc}") from exc
    except BaseException:
        if guard is not None:
            guard.close()
        raise
    return Launched(plan=plan, early=early)


async def record_async(
    argv: list[str],
    *,
    level: str = "process",
    name: str | None = None,
    redact: bool = True,
    parent: str | None = None,
    stdio: tuple[int | None, int | None, int | None] = (None, None, None),
    time_limit: float | None = None,
    cwd: str | Path | None = None,
    tracer: str = "strace",
    sample: float = 0.0,
    policy_file: Path | None = None,
    policy_fallback: str | None = None,
    launched: Launched | None = None,
) -> Recorded:
    """Record `argv` on the caller's trio loop (its signals are relayed only from the main thread).

    `stdio` (stdin, stdout, stderr; None inherits) lets a server keep its own streams; after `time_limit`
    seconds the command's whole tree is killed; `cwd` is where it runs (default: here); `tracer` is
    strace, ebpf or auto (eBPF where it works); `sample` > 0 samples the tree's CPU and memory that
    often (`proc.sampled`). The policy (`policy_file`, else `[policy]` in `$CAPSULE_HOME/config.toml`) is
    enforced in the kernel; `policy_fallback` "detect" downgrades what this machine cannot enforce to
    detect-and-kill (with a warning) instead of refusing to start. `launched`: from `launch` (the same
    `argv` and options; `cwd`, `stdio` left as they are)."""
    from capsule.stages.run import record_run

    plan = launched.plan if launched is not None else None
    if plan is None:
        plan = _plan(argv, level, tracer, sample, cwd, policy_file, policy_fallback)
    enforcement = plan.enforcement
    where = home()
    try:
        outcome = await record_run(
            list(argv),
            home=where,
            tracer=plan.found,
            level=level,
            name=name,
            redact=redact,
            parent=parent,
            stdio=stdio,
            time_limit=time_limit,
            cwd=None if cwd is None else str(cwd),
            answers=plan.answers,
            sample_interval=sample,
            enforcement=enforcement,
            early=launched.early if launched is not None else None,
        )
    except OSError as exc:
        raise RecordingFailed(f"cannot record under {where}: {exc.strerror or exc}") from exc
    return Recorded(
        session=outcome.session_id,
        path=outcome.path,
        exit_code=outcome.exit_code,
        signal=outcome.signal,
        timed_out=outcome.timed_out is not None,
        duration_s=round(outcome.duration_s, 6),
        processes=outcome.tally.processes,
        failed=outcome.tally.failed,
        error=outcome.error,
        warning=enforcement.warning if enforcement is not None else None,
        blocked=outcome.tally.blocked,
        refusals=_refusal_lines(outcome.tally.refusals),
        events=outcome.tally.events,
        interrupted=_terminal_action(outcome.tally.root_interrupted),
    )


def _terminal_action(signal: str | None) -> str | None:
    if signal is None:
        return None
    from capsule.fold.interrupts import what_was_done

    return what_was_done(signal)


def _refusal_lines(refusals: list[Any]) -> tuple[str, ...]:
    if not refusals:
        return ()  # an unguarded run does not load the report's policy module
    from capsule.report.policy import refusal_line

    return tuple(refusal_line(b) for b in refusals)


def _enforcement(policy_file: Path | None, fallback: str | None) -> Any:
    """What the guard will enforce for `capsule run` (None: no policy), or a one-line refusal.
    `fallback` None: the policy's own `fallback` key."""
    if fallback not in (None, "refuse", "detect"):
        raise UsageError(f"unknown --policy-fallback {fallback!r}: choose refuse or detect")
    where = home()
    from capsule.stages.home import SETTINGS

    if policy_file is None and not os.path.lexists(where / SETTINGS):
        return None  # no policy anywhere: the guard's modules (~5 ms) need not load before strace starts
    from capsule.stages.guard_probe import GuardRefused, enforcement_for, load_policy

    try:
        policy = load_policy(policy_file, where)
        return None if policy.empty else enforcement_for(policy, fallback)
    except GuardRefused as exc:
        raise RecordingFailed(str(exc)) from None
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def load_recorder() -> None:
    """Import what `record` runs (trio, the recorder's stages) now: for a caller that loads them with
    its own settings (`capsule run` pauses the garbage collector for them)."""
    import trio  # noqa: F401

    from capsule.api import shipping  # noqa: F401
    from capsule.stages import run  # noqa: F401


def record(argv: list[str], launched: Launched | None = None, **options: Any) -> Recorded:
    """`record_async` in a trio run of its own (what `capsule run` does); `launched` from `launch`."""
    import trio

    from capsule.api.shipping import ship_closed

    os.umask(0o077)
    try:
        recorded = trio.run(lambda: record_async(argv, launched=launched, **options))
    finally:
        if launched is not None and launched.early is not None:
            launched.early.restore_signals()
    if recorded.error is None and recorded.path.is_dir():
        # the tally's count: a session too small for a snapshot is not read again (its footer's
        # decoding was ~40 ms of the close of every run whose events.jsonl passed 640 KB)
        snapshot_after_close(recorded.path, recorded.events)
    if recorded.path.is_dir():
        ship_closed(recorded.path)  # to the [export] collector of $CAPSULE_HOME/config.toml, if there is one
    return recorded


@attrs.frozen(kw_only=True)
class Imported:
    session: str
    path: Path
    processes: int
    lines: int


def import_log(
    log: Path, *, name: str | None = None, level: str = "process", redact: bool = True
) -> Imported:
    """Turn an `strace -f` log recorded elsewhere into a session."""
    import trio

    from capsule.stages.derive import ImportRefused
    from capsule.stages.derive import import_log as derive

    check_level(level)
    os.umask(0o077)
    try:
        done = trio.run(lambda: derive(log, home=home(), name=name, level=level, redact=redact))
    except ImportRefused as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"{exc.filename or log}: {exc.strerror or exc}") from None
    if done.lines and done.tally.processes == 0:
        raise BadInput(f"{log}: no strace lines recognised (is it an `strace -f` log?)")
    snapshot_after_close(done.path, done.events)
    return Imported(session=done.session_id, path=done.path, processes=done.tally.processes, lines=done.lines)


# --- replay -------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Replayed:
    """`capsule replay --json`: the events re-derived from the raw trace, compared with events.jsonl."""

    session: str
    events: int
    matches: bool
    diff: tuple[str, ...]  # a unified diff (recorded -> re-derived), at most 200 lines
    kind: str = "run"
    source: str = "trace.strace"  # what the events were re-derived from
    derivation: int = 0  # how this Capsule derives events (capsule.events.DERIVATION)
    recorded_derivation: int | None = None  # the one the session names; None: older than v4 headers

    @property
    def derived_elsewhere(self) -> str:
        """Why a difference need not be a changed file: the session was derived by another Capsule's
        derivation ("" when it names this one)."""
        if self.recorded_derivation == self.derivation:
            return ""
        if self.recorded_derivation is None:
            by = "an older Capsule, which did not name its derivation"
        else:
            age = "an older" if self.recorded_derivation < self.derivation else "a newer"
            by = f"{age} Capsule (derivation {self.recorded_derivation})"
        return (
            f"it was derived by {by}; this one derives with {self.derivation}, so a difference may be that "
            "change rather than a changed file"
        )


def replay(session: str | Path) -> Replayed:
    """Re-derive a session's events and compare them with `events.jsonl`: a run from its raw trace, an
    env or agents session by feeding its recorded observations to the machine again."""
    import trio

    from capsule.codec import CodecError, LineDecoder, to_dict
    from capsule.events import DERIVATION
    from capsule.stages.derive import from_trace, rederive
    from capsule.stages.reader import glance, iter_events
    from capsule.stages.store import session_file, trace_name, tracer_kind

    session_dir = session if isinstance(session, Path) else resolve(session)
    seen = glance(session_dir)
    header = seen.header
    if header is None:
        raise BadInput(seen.not_a_session())
    TRACE = trace_name(header.tracer)
    kind, source = header.session_kind, TRACE
    decoder = LineDecoder()  # what it could not read is a difference too: the file was changed
    if kind in ("env", "agents"):
        from capsule.redact import redact_event

        if kind == "env":
            from capsule.env.replay import rederive as rederive_env

            recorded, derived = rederive_env(list(iter_events(session_dir, decoder)))
        else:
            from capsule.plan.replay import rederive_agents

            replayed = rederive_agents(list(iter_events(session_dir, decoder)))
            recorded, derived = list(replayed.recorded), list(replayed.derived)
        if header.redacted:  # the writer redacted what the machine emitted: so is the re-derivation
            derived = [redact_event(e) for e in derived]
        source = "its observations"
    elif session_file(session_dir, TRACE) is None:
        raise BadInput(f"{session_dir}: no {TRACE} to replay")
    else:
        level = header.trace_level
        derived, _stats = trio.run(
            lambda: rederive(
                session_dir / TRACE, level=level, header=header, tracer=tracer_kind(header.tracer)
            )
        )
        try:
            recorded = from_trace(list(iter_events(session_dir, decoder)))
        except CodecError as exc:
            raise BadInput(f"{session_dir / 'events.jsonl'}: {exc}") from None
    unread = [f"events.jsonl line {n}: not an event ({reason})" for n, reason in decoder.bad_lines]
    same = derived == recorded and not unread
    diff: list[str] = unread[:]
    if derived != recorded:
        import difflib

        import orjson

        def lines(events: list[Any]) -> list[str]:
            return [
                orjson.dumps({k: v for k, v in to_dict(0, e).items() if k != "seq"}).decode() for e in events
            ]

        diff += list(
            difflib.unified_diff(
                lines(recorded), lines(derived), "events.jsonl", "re-derived", lineterm="", n=1
            )
        )
    return Replayed(
        session=session_dir.name,
        events=len(derived),
        matches=same,
        diff=tuple(diff[:200]),
        kind=kind,
        source=source,
        derivation=DERIVATION,
        recorded_derivation=header.derivation,
    )


@attrs.frozen(kw_only=True)
class Rederived:
    """`rederive`: a committed session's events.jsonl, re-derived from its raw trace by this Capsule."""

    session: str
    written: bool  # False: the file already named this derivation and held its events
    derivation: int
    recorded_derivation: int | None


def rederive(session: str | Path) -> Rederived:
    """Rewrite a traced session's events.jsonl as this Capsule derives it from the raw trace, when the
    session names another derivation (the bless step of golden sessions kept in a repository: review
    the diff). Samples, policy decisions and the end stay where they were recorded; the file is
    replaced whole, 0600. A session whose events differ from its re-derivation by this very derivation
    is refused (a changed file, or a change of derivation that did not bump DERIVATION)."""
    import trio

    from capsule.api.errors import CheckFailed
    from capsule.events import DERIVATION
    from capsule.fold.labels import RuleSet
    from capsule.stages.derive import rederive_session
    from capsule.stages.reader import glance, iter_events
    from capsule.stages.record import SessionWriter
    from capsule.stages.store import EVENTS, session_file, trace_name

    session_dir = session if isinstance(session, Path) else resolve(session)
    header = glance(session_dir).header
    if header is None:
        raise BadInput(glance(session_dir).not_a_session())
    if header.session_kind in ("env", "agents"):
        raise UsageError(
            f"{session_dir}: an {header.session_kind} session's events are its machine's decisions, not "
            "a trace's: re-record it to derive them again"
        )
    if session_file(session_dir, trace_name(header.tracer)) is None:
        raise BadInput(f"{session_dir}: no {trace_name(header.tracer)} to re-derive from")
    if not (session_dir / EVENTS).is_file():
        raise BadInput(f"{session_dir}: its events are archived ({EVENTS}.zst); unpack them to rewrite them")
    # The packaged exit rules count failures in the new end, never the user's: as a replay folds.
    answers = RuleSet.from_sources(*(s for s in rule_sources(("exits.toml",)) if s[0].startswith("capsule/")))
    events = trio.run(lambda: rederive_session(session_dir, header, answers=answers))
    recorded = list(iter_events(session_dir))
    if events == recorded:
        return Rederived(
            session=session_dir.name,
            written=False,
            derivation=DERIVATION,
            recorded_derivation=header.derivation,
        )
    if header.derivation == DERIVATION:
        raise CheckFailed(
            f"{session_dir}: events.jsonl does not match its re-derivation, though both name derivation "
            f"{DERIVATION}: a changed file, or a change to how Capsule derives events that did not bump "
            "capsule.events.DERIVATION; not rewritten"
        )
    temp = session_dir / f".{EVENTS}.{os.getpid()}.tmp"
    temp.unlink(missing_ok=True)
    writer = SessionWriter(temp, redact=False)  # derived from what was redacted when recorded
    try:
        writer.write(events)
    finally:
        writer.close()
    os.replace(temp, session_dir / EVENTS)
    return Rederived(
        session=session_dir.name, written=True, derivation=DERIVATION, recorded_derivation=header.derivation
    )


# --- exports ------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Exported:
    """An export's body, ready to write or send, and the reader's warnings about the session."""

    session: str
    format: str  # perfetto or otlp
    body: bytes
    warnings: tuple[str, ...]


def export(session: str | Path, fmt: str, *, protobuf: bool = False) -> Exported:
    """A session as Perfetto trace JSON or OTLP/JSON (for jsonl, stream it with `copy_events`)."""
    import orjson

    from capsule.fold.session import paused_gc

    if fmt not in ("perfetto", "otlp"):
        raise UsageError(f"cannot export as {fmt!r}: perfetto or otlp (jsonl is streamed: copy_events)")
    session_dir = session if isinstance(session, Path) else resolve(session)
    with paused_gc():
        if is_supervised(session_dir):
            # env and agents sessions: services and tasks as tracks/spans, traced trees beneath them
            from capsule import __version__
            from capsule.report.supervised import supervised_request, supervised_trace

            sup = load_supervised(session_dir)
            made = (
                supervised_trace(sup.timeline, sup.children)
                if fmt == "perfetto"
                else supervised_request(sup.timeline, sup.children, __version__)
            )
            body = _otlp_body(made) if protobuf else orjson.dumps(made, option=orjson.OPT_APPEND_NEWLINE)
            return Exported(session=session_dir.name, format=fmt, body=body, warnings=sup.warnings)
        loaded = load(session_dir)
        if fmt == "perfetto":
            from capsule.report.perfetto import trace_events

            body = orjson.dumps(trace_events(loaded.state), option=orjson.OPT_APPEND_NEWLINE)
        else:
            from capsule import __version__
            from capsule.report.otlp import export_request

            request = export_request(loaded.state, __version__)
            body = (
                _otlp_body(request) if protobuf else orjson.dumps(request, option=orjson.OPT_APPEND_NEWLINE)
            )
    return Exported(session=loaded.id, format=fmt, body=body, warnings=loaded.warnings)


def _otlp_body(request: dict[str, Any]) -> bytes:
    """An OTLP/JSON request as OTLP/HTTP's default encoding, protobuf (opentelemetry-proto's messages)."""
    from capsule.report.otlp import encode_protobuf

    return encode_protobuf(request)


def copy_events(session: str | Path, out: BinaryIO) -> tuple[str, ...]:
    """Write the events file as stored (decompressed) to `out`, less a torn last line; the warnings."""
    from capsule.stages.store import EVENTS, open_session_file

    session_dir = session if isinstance(session, Path) else resolve(session)
    with open_session_file(session_dir, EVENTS) as file:
        held = b""
        while data := file.read(1 << 20):
            data = held + data
            cut = data.rfind(b"\n") + 1
            out.write(data[:cut])
            held = data[cut:]
    return ("the last line is torn; it was left out",) if held.strip() else ()


def trace_tree(session_id: str, limit: int = 200) -> list[tuple[int, str]]:
    """A traced attempt's or service's process tree as (depth, line) rows, depth first; argv shown as a
    person reads it, control characters escaped (it is an untrusted command line)."""
    from capsule.report.argv import short_argv

    tree = fold(resolve(session_id)).tree
    rows: list[tuple[int, str]] = []
    stack = [(0, tree.nodes[k]) for k in reversed(tree.roots)]
    while stack and len(rows) < limit:
        depth, node = stack.pop()
        end = node.signal or ("" if node.exit_code is None else f"exit {node.exit_code}")
        rows.append((depth, f"{node.pid} {short_argv(node.display_argv, width=100)} {end}".rstrip()))
        stack.extend((depth + 1, c) for c in reversed(list(tree.children(node))))
    return rows


# --- doctor -------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Check:
    check: str
    ok: bool
    detail: str


@attrs.frozen(kw_only=True)
class Doctor:
    """`capsule doctor --json`: can recording work here? (`--seccomp-bpf` only warns.)"""

    ok: bool
    checks: tuple[Check, ...]


def doctor() -> Doctor:
    import tempfile

    from capsule.stages.tracer import INSTALL_HINT, TracerMissing, find_tracer, probe_ptrace

    checks: list[Check] = []
    try:
        tracer = find_tracer()
        checks.append(Check(check="strace", ok=True, detail=f"{tracer.path} (version {tracer.version})"))
        checks.append(
            Check(
                check="--seccomp-bpf",
                ok=tracer.seccomp_bpf,
                detail="supported" if tracer.seccomp_bpf else "needs strace ≥ 5.3: tracing will be slow",
            )
        )
        problem = probe_ptrace(tracer)
        checks.append(
            Check(
                check="ptrace",
                ok=problem is None,
                detail="permitted" if problem is None else f"{problem} (in a container, allow SYS_PTRACE)",
            )
        )
    except TracerMissing:
        checks.append(Check(check="strace", ok=False, detail=f"not found; {INSTALL_HINT}"))
    checks.append(_ebpf_check())
    from capsule.stages.home import capsule_home, check_home

    where = capsule_home()  # not home(): doctor reports an unsafe home instead of refusing to run
    unsafe = check_home(where)
    try:
        if unsafe is not None:
            checks.append(Check(check="$CAPSULE_HOME", ok=False, detail=unsafe))
        else:
            where.mkdir(parents=True, exist_ok=True, mode=0o700)
            with tempfile.NamedTemporaryFile(dir=where):
                pass
            checks.append(Check(check="$CAPSULE_HOME", ok=True, detail=f"{where} is writable and private"))
    except OSError as exc:
        checks.append(Check(check="$CAPSULE_HOME", ok=False, detail=f"{where}: {exc.strerror or exc}"))
    from capsule.stages.guard_probe import probe_mechanisms

    missing = probe_mechanisms(fresh=True)
    guard = []
    for mechanism, needed_by in GUARD_CHECKS:
        why = missing.get(mechanism)
        detail = f"works ({needed_by})" if why is None else f"{why}: policies with {needed_by} cannot start"
        guard.append(Check(check=mechanism, ok=why is None, detail=detail))
    # strace records without these: slower (seccomp-bpf), with strace (ebpf), with no policy (the guard)
    optional = ("--seccomp-bpf", "ebpf", *(m for m, _ in GUARD_CHECKS))
    ok = all(c.ok for c in checks if c.check not in optional)
    return Doctor(ok=ok, checks=(*checks, *guard))


GUARD_CHECKS = (
    ("seccomp-notify", "deny_commands, allow_commands"),
    ("mount-namespace", "protect_paths, read_only_paths"),
    ("network-namespace", "network = off | loopback"),
)


def _ebpf_check() -> Check:
    """Whether `--tracer ebpf` records here: its requirements, then one real attach of the program."""
    from capsule.stages.ebpf_recorder import EbpfUnavailable, find_ebpf, probe_ebpf

    try:
        tracer = find_ebpf()
    except EbpfUnavailable as exc:
        return Check(check="ebpf", ok=False, detail=f"--tracer ebpf unavailable: {exc}")
    problem = probe_ebpf(tracer)
    if problem is not None:
        return Check(check="ebpf", ok=False, detail=f"--tracer ebpf unavailable: {problem}")
    return Check(check="ebpf", ok=True, detail=f"--tracer ebpf works (Capsule's recorder, {tracer.version})")


def require_tracer(kind: str = "strace") -> Tracer | EbpfTracer:
    """The tracer to trace tasks with (strace, or ebpf: a plan's `trace = "ebpf"`), or `Unavailable`
    (exit 5) saying how to install it or why eBPF cannot record here."""
    from capsule.stages.tracer import TracerMissing, find_recorder

    try:
        return find_recorder(kind)
    except TracerMissing as exc:
        raise Unavailable(str(exc)) from exc


def fold(session_dir: Path) -> SessionState:
    """The session's events folded as they are (no recovery), with the current rules."""
    from capsule.fold import SessionState
    from capsule.stages.reader import iter_events

    state = SessionState.new(rules())
    for event in iter_events(session_dir):
        state.apply(event)
    return state
