"""The Python API's session: a recorded session as typed records, and questions to ask it in tests.

`capsule.open("latest")` folds a session as `capsule report --json` does and wraps the report: processes
as `Process` records, the tree, failures, files, network and agent runs, and helpers that take the same
argv globs as a policy's `deny_commands` (`"pytest *"`, `"git commit *"`, `"curl * | sh"`):

    s = capsule.open()
    assert s.ran("pytest *") and s.never_ran("sudo *")
    assert s.ran_before("ruff *", "git commit *")
    assert s.touched("src/*.py", ops={"write"})

`files` and `network` exist at `--level file|net|all`; a report without those keys gives empty tuples.
Each process's `failure` is the report's own verdict where it has one (`processes[].failure`), else the
fold's (a non-zero exit or a signal that the rules do not call expected).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from capsule.api.errors import BadInput, NotFound, RecordingFailed, UsageError
from capsule.plan.policy import command_matches, path_matches
from capsule.report.argv import full_argv

if TYPE_CHECKING:
    from capsule.fold import SessionState
    from capsule.fold.labels import RuleSet
    from capsule.policy import Policy

__all__ = ["Agent", "Connection", "FileAccess", "Process", "Session", "SessionInfo", "Tree"]


@attrs.frozen(kw_only=True)
class Process:
    """One process (a thread-group leader) of a session, as the report's `processes[]` entry."""

    id: int  # the report's key for this process, unique in the session (pids can be reused)
    parent: int | None  # the `id` of the process that spawned it
    pid: int
    ppid: int | None
    argv: tuple[str, ...] | None  # of its last successful exec; None if it never exec'd
    exe: str | None
    label: str  # agent | tool | system | unknown
    workflow: str | None  # explore | edit | build | test | vcs | install | execute
    agent: str | None
    start: float
    end: float | None
    exit_code: int | None
    signal: str | None
    failure: bool  # the report's verdict: a non-zero exit or a signal that is an error
    killed_by: int | None = None  # the pid that sent the signal it died of (None: the kernel's, SIGKILL)

    @property
    def command(self) -> str:
        """argv as a shell would quote it (`<pid> (no exec)` for a fork that never exec'd)."""
        return shlex.join(self.argv) if self.argv else f"<{self.pid}> (no exec)"

    @property
    def duration_s(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.start)

    @property
    def outcome(self) -> str:
        if self.signal is not None:
            return self.signal
        return "running" if self.exit_code is None else f"exit {self.exit_code}"

    def matches(self, pattern: str) -> bool:
        """True if argv matches the glob as a policy's `deny_commands` would match it."""
        return self.argv is not None and command_matches(pattern, self.argv)


@attrs.frozen(kw_only=True)
class FileAccess:
    """A path some processes of the session used (report key `files`, at trace level file or all)."""

    path: str
    ops: frozenset[str]  # read write create delete rename exec chmod
    pids: tuple[int, ...]
    first: float | None
    last: float | None


@attrs.frozen(kw_only=True)
class Connection:
    """A network peer (report key `network`, at trace level net or all)."""

    family: str  # inet | inet6 | unix
    address: str | None
    port: int | None
    op: str  # connect | bind | listen | accept | send
    ok: bool
    error: str | None
    pids: tuple[int, ...]


@attrs.frozen(kw_only=True)
class Agent:
    """An agent run: an agent process with its subtree, tool calls and workflow phases."""

    pid: int
    name: str
    argv: tuple[str, ...] | None
    exit_code: int | None
    tool_calls: int
    failed_tool_calls: int
    phases: tuple[str, ...]  # the workflow of each phase, in order: ("explore", "test", "edit", ...)
    workflows: dict[str, int]


@attrs.frozen
class Tree:
    """The process tree: roots, children, and a text rendering (`str(tree)`) for assertion messages."""

    processes: tuple[Process, ...]

    @property
    def roots(self) -> list[Process]:
        ids = {p.id for p in self.processes}
        return [p for p in self.processes if p.parent is None or p.parent not in ids]

    def children(self, process: Process) -> list[Process]:
        return [p for p in self.processes if p.parent == process.id]

    def ancestors(self, process: Process) -> list[Process]:
        """From the root down to `process`'s parent."""
        by_id = {p.id: p for p in self.processes}
        chain: list[Process] = []
        parent = process.parent
        while parent is not None and parent in by_id and len(chain) < len(by_id):
            chain.append(by_id[parent])
            parent = by_id[parent].parent
        return chain[::-1]

    def render(self, only: Collection[Process] | None = None, *, limit: int = 60) -> str:
        """The tree as indented lines (`pid command  exit N`). With `only`, just those processes and
        their ancestors, so a message shows where in the tree they were; at most `limit` lines."""
        keep: set[int] | None = None
        if only is not None:
            keep = set()
            for p in only:
                keep.add(p.id)
                keep.update(a.id for a in self.ancestors(p))
        children: dict[int | None, list[Process]] = {}
        roots = {p.id for p in self.roots}
        for p in self.processes:
            children.setdefault(None if p.id in roots else p.parent, []).append(p)
        lines: list[str] = []
        stack = [(0, p) for p in reversed(children.get(None, []))]
        while stack:
            depth, p = stack.pop()
            if keep is not None and p.id not in keep:
                continue
            if len(lines) == limit:
                lines.append("  …")
                break
            mark = "  ✗" if p.failure else ""
            lines.append(f"{'  ' * depth}{p.pid} {p.command}  [{p.outcome}]{mark}")
            stack.extend((depth + 1, c) for c in reversed(children.get(p.id, [])))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


def _process(entry: dict[str, Any], failed: bool) -> Process:
    argv = entry.get("argv")
    failure = entry.get("failure")
    return Process(
        id=int(entry.get("id", entry["pid"])),
        parent=entry.get("parent"),
        pid=int(entry["pid"]),
        ppid=entry.get("ppid"),
        argv=tuple(argv) if argv is not None else None,
        exe=entry.get("exe"),
        label=entry.get("label") or "unknown",
        workflow=entry.get("workflow"),
        agent=entry.get("agent"),
        start=float(entry["start"]),
        end=entry.get("end"),
        exit_code=entry.get("exit_code"),
        signal=entry.get("signal"),
        failure=bool(failure) if isinstance(failure, bool) else failed,
        killed_by=entry.get("killed_by"),
    )


def _file(entry: dict[str, Any]) -> FileAccess:
    ops = entry.get("ops") or ()
    return FileAccess(
        path=str(entry["path"]),
        ops=frozenset([ops] if isinstance(ops, str) else ops),
        pids=tuple(entry.get("pids") or ()),
        first=entry.get("first"),
        last=entry.get("last"),
    )


def _connection(entry: dict[str, Any]) -> Connection:
    return Connection(
        family=str(entry.get("family", "inet")),
        address=entry.get("address"),
        port=entry.get("port"),
        op=str(entry.get("op", "connect")),
        ok=bool(entry.get("ok", True)),
        error=entry.get("error"),
        pids=tuple(entry.get("pids") or ()),
    )


def _agent(entry: dict[str, Any]) -> Agent:
    argv = entry.get("argv")
    return Agent(
        pid=int(entry["pid"]),
        name=str(entry["name"]),
        argv=tuple(argv) if argv is not None else None,
        exit_code=entry.get("exit_code"),
        tool_calls=int(entry.get("tool_calls", 0)),
        failed_tool_calls=int(entry.get("failed_tool_calls", 0)),
        phases=tuple(p["workflow"] for p in entry.get("phases", ())),
        workflows=dict(entry.get("workflows", {})),
    )


@attrs.frozen(kw_only=True)
class Session:
    """A recorded session. `report` is the whole `capsule report --json` object it was built from."""

    id: str
    kind: str  # run | env | agents
    name: str | None
    argv: tuple[str, ...]
    cwd: str | None
    status: str  # complete | incomplete | recovered
    exit_code: int | None
    signal: str | None
    started: float | None
    duration_s: float | None
    path: Path
    processes: tuple[Process, ...]
    files: tuple[FileAccess, ...]
    network: tuple[Connection, ...]
    agents: tuple[Agent, ...]
    report: dict[str, Any] = attrs.field(repr=False, eq=False)
    stdout: str | None = attrs.field(default=None, repr=False)  # captured by `capsule.record`
    stderr: str | None = attrs.field(default=None, repr=False)
    violations: tuple[str, ...] = ()  # what broke `capsule.record(policy=...)`, one line each

    @classmethod
    def from_report(
        cls, report: dict[str, Any], path: Path, *, failed: Collection[int] = (), **output: str | None
    ) -> Session:
        """Build from a `report --json` object; `failed` holds the ids the fold calls failures (used
        for processes whose entry has no `failure` verdict of its own)."""
        s = report["session"]
        failed = set(failed)
        return cls(
            id=str(s["id"] or path.name),
            kind=str(s.get("kind") or "run"),
            name=s.get("name"),
            argv=tuple(s.get("argv") or ()),
            cwd=s.get("cwd"),
            status=str(s.get("status")),
            exit_code=s.get("exit_code"),
            signal=s.get("signal"),
            started=s.get("started"),
            duration_s=s.get("duration_s"),
            path=path,
            processes=tuple(
                _process(p, p.get("id", p["pid"]) in failed) for p in report.get("processes") or ()
            ),
            files=tuple(_file(f) for f in report.get("files") or ()),
            network=tuple(_connection(n) for n in report.get("network") or ()),
            agents=tuple(_agent(a) for a in report.get("agents") or ()),
            report=report,
            **output,  # type: ignore[arg-type]
        )

    @property
    def tree(self) -> Tree:
        return Tree(self.processes)

    @property
    def failures(self) -> tuple[Process, ...]:
        return tuple(p for p in self.processes if p.failure)

    @property
    def ok(self) -> bool:
        """The command exited 0 (a recorded failure inside it, handled, does not change that)."""
        return self.exit_code == 0 and self.signal is None

    def find(self, pattern: str) -> list[Process]:
        """Processes whose argv matches the glob, in start order."""
        return [p for p in self.processes if p.matches(pattern)]

    def ran(self, pattern: str) -> bool:
        return any(p.matches(pattern) for p in self.processes)

    def never_ran(self, pattern: str) -> bool:
        return not self.ran(pattern)

    def ran_before(self, first: str, then: str) -> bool:
        """True if both ran and the first process matching `first` started before any matching `then`."""
        a, b = self.find(first), self.find(then)
        return bool(a and b) and a[0].start < b[0].start

    def touched(self, glob: str, ops: Collection[str] | None = None) -> bool:
        """True if a path matching the glob (whole, as a suffix, or its basename, like `protect_paths`)
        was used with any of `ops` (default: any operation). Needs trace level file or all."""
        return bool(self.files_matching(glob, ops))

    def files_matching(self, glob: str, ops: Collection[str] | None = None) -> list[FileAccess]:
        wanted = set(ops) if ops is not None else None
        return [f for f in self.files if path_matches(glob, f.path) and (wanted is None or wanted & f.ops)]

    def __iter__(self) -> Iterator[Process]:
        return iter(self.processes)


@attrs.frozen(kw_only=True)
class SessionInfo:
    """One row of `capsule.sessions()` (what `capsule ls --json` shows); `open()` loads the session."""

    id: str
    kind: str
    name: str | None
    parent: str | None
    argv: tuple[str, ...]
    started: float
    duration_s: float | None
    exit_code: int | None
    status: str
    path: Path
    home: Path
    timed_out_s: float | None = None  # the `--timeout` limit, when it stopped the command

    def open(self) -> Session:
        return open_session(self.path, home=self.home)


# --- opening, listing and recording ---------------------------------------------------------------
# These load sessions as the CLI does (`capsule report --json`, `capsule ls`, `capsule run`), for a
# given home. They import the shell (stages) inside the functions: `import capsule` stays cheap.


def _home(home: str | Path | None) -> Path:
    from capsule.stages.home import capsule_home

    return Path(home).expanduser().absolute() if home is not None else capsule_home()


def load_rules(home: Path | None, extra: Path | None = None) -> RuleSet:
    """The packaged rules, then `home`'s rules.toml (or the file `extra`) over them."""
    from importlib.resources import files

    from capsule.fold.labels import RuleError, RuleSet

    sources = [
        (f"capsule/rules/{f.name}", f.read_text(encoding="utf-8"))
        for f in sorted(files("capsule.rules").iterdir(), key=lambda f: f.name)
        if f.name.endswith(".toml")
    ]
    user = extra if extra is not None else (home or Path("/nonexistent")) / "rules.toml"
    try:
        if user.is_file():
            sources.append((str(user), user.read_text(encoding="utf-8")))
        return RuleSet.from_sources(*sources)
    except (OSError, UnicodeDecodeError, RuleError) as exc:
        raise BadInput(f"{user}: {exc}") from exc


def open_session(session: str | Path = "latest", home: str | Path | None = None) -> Session:
    """Load a session: an id, a unique id prefix, a session directory, or `latest` (the newest)."""
    from capsule.api.sessions import load
    from capsule.stages.store import SessionNotFound, resolve_session

    where = _home(home)
    try:
        path = resolve_session(where, str(session))
    except SessionNotFound as exc:
        raise NotFound(str(exc)) from exc
    return from_state(load(path, load_rules(where), where=where).state, path)


def from_state(state: SessionState, path: Path) -> Session:
    """The Session of a folded state (`capsule.testing.replay` folds committed sessions itself)."""
    from capsule.report import report_dict

    failed = {n.key for n in state.tree.nodes if n.failed}
    return Session.from_report(report_dict(state), path, failed=failed)


def list_sessions(
    home: str | Path | None = None,
    *,
    kind: str | None = None,
    limit: int | None = None,
    children: bool = False,
) -> list[SessionInfo]:
    """Sessions newest first, like `capsule ls` (`children`: also the run sessions of traced services
    and tasks); `kind` keeps one kind (run, env, agents, import)."""
    from capsule.api.sessions import list_sessions as rows_of
    from capsule.stages.home import runs_dir

    where = _home(home)
    runs = runs_dir(where)
    rows = rows_of(sys.maxsize if limit is None else limit, children, kind=kind, where=where)
    return [
        SessionInfo(
            id=row.id,
            kind=row.kind,
            name=row.name,
            parent=row.parent,
            argv=row.argv,
            started=row.started,
            duration_s=row.duration_s,
            exit_code=row.exit_code,
            status=row.status,
            path=runs / row.id,
            home=where,
            timed_out_s=row.timed_out_s,
        )
        for row in rows
    ]


def record(
    argv: Sequence[str],
    *,
    level: str = "process",
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    policy: Policy | Mapping[str, Any] | None = None,
    policy_fallback: str | None = None,
    timeout: float | None = None,
    name: str | None = None,
    home: str | Path | None = None,
    redact: bool = True,
) -> Session:
    """Record `argv` under strace as `capsule run` does, capturing its stdout and stderr (the
    Session's `stdout`/`stderr`) instead of passing the terminal through; stdin is empty.

    `env` replaces the environment (None inherits it); after `timeout` seconds the command's whole tree
    is killed (TERM, then KILL). `policy` (a `[policy]` table as a dict: `{"deny_commands": [...],
    "protect_paths": [...], "network": "off", ...}`) is enforced in the kernel as `capsule run --policy`
    does: a denied exec fails with EPERM, a protected path cannot be opened; each refusal is in
    `Session.violations`, one line each. What this machine cannot enforce raises RecordingFailed unless
    the policy says `fallback = "detect"` or `policy_fallback="detect"` is given. A command that cannot start still gives a session (exit 127 not found,
    126 not executable)."""
    import tempfile

    import trio

    from capsule.stages.run import record_run
    from capsule.stages.tracer import LEVELS, TracerMissing, find_tracer

    argv = [str(a) for a in argv]
    if not argv or not argv[0]:
        raise UsageError("the command is empty: give the program and its arguments")
    if level not in LEVELS:
        raise UsageError(f"unknown level {level!r}: choose one of {', '.join(LEVELS)}")
    enforcement = _enforcement(_as_policy(policy), policy_fallback)
    try:
        tracer = find_tracer()
    except TracerMissing as exc:
        raise RecordingFailed(str(exc)) from exc
    where = _home(home)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, open(os.devnull, "rb") as null:
        try:
            outcome = trio.run(
                lambda: record_run(
                    argv,
                    home=where,
                    tracer=tracer,
                    level=level,
                    name=name,
                    redact=redact,
                    stdio=(null.fileno(), out.fileno(), err.fileno()),
                    time_limit=timeout,
                    cwd=None if cwd is None else str(cwd),
                    env=None if env is None else dict(env),
                    enforcement=enforcement,
                )
            )
        except OSError as exc:
            raise RecordingFailed(f"cannot record under {where}: {exc.strerror or exc}") from exc
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if outcome.error and outcome.exit_code == 125:
        raise RecordingFailed(outcome.error)
    session = open_session(outcome.path, home=where)
    return attrs.evolve(session, stdout=stdout, stderr=stderr, violations=_violations(session))


def _as_policy(policy: Policy | Mapping[str, Any] | None) -> Policy | None:
    from capsule.policy import Policy, PolicyError, parse_policy

    if policy is None or isinstance(policy, Policy):
        return policy
    try:
        return parse_policy(dict(policy), "policy")
    except PolicyError as exc:
        raise UsageError(str(exc)) from None


def _enforcement(policy: Policy | None, fallback: str | None) -> Any:
    """What the guard enforces for `policy` (None: nothing), or a one-line refusal."""
    from capsule.stages.guard_probe import GuardRefused, enforcement_for

    if fallback not in (None, "refuse", "detect"):
        raise UsageError(f"unknown policy_fallback {fallback!r}: choose refuse or detect")
    if policy is None or policy.empty:
        return None
    try:
        return enforcement_for(policy, fallback)
    except GuardRefused as exc:
        raise RecordingFailed(str(exc)) from None


def _violations(session: Session) -> tuple[str, ...]:
    """The guard's refusals, one line each: the rule, then what was refused."""
    found = []
    for b in session.report.get("policy", {}).get("blocked", []):
        what = full_argv(b["argv"]) if b["argv"] else (b["path"] or "")
        found.append(f"{b['rule']!r} {b['mechanism']}: {b['pid']} {what}")
    return tuple(found)
