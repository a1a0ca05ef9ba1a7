"""Hostile input for Capsule's edges: structured mutations of real traces and real sessions, and a harness
that feeds them through the real CLI commands in-process and says what escaped.

Used by `tests/test_hostile_input.py` (hypothesis draws the mutations) and by `tests/bench/fuzz.py` (a
seeded campaign of ten thousand inputs and more). A mutation is `(name, n)`: `n` picks the line, the
number, the field -- so the same list applied to the same seed input gives the same bytes.

What counts as handled: the command succeeds, or fails through `CliError` (one line, a documented exit
code) or a typer usage exit. Anything else -- a traceback -- escaped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs
import orjson
from typer.testing import CliRunner

from capsule.events import SessionStarted
from tests import golden

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "tests" / "data" / "traces"

# Real traces, small enough to run many times: `strace -f -o` logs in every form, plus -ff-free ones.
TRACE_SEEDS: tuple[Path, ...] = tuple(
    sorted(
        p
        for p in [
            *TRACES.glob("*.strace"),
            *(golden.SESSIONS_DIR / s / golden.TRACE for s in ("forks", "threads", "killed", "argv-quoting")),
            *(golden.SESSIONS_DIR.glob("import-*/trace.strace")),
        ]
        if p.stat().st_size < 100_000
    )
)
SESSION_SEEDS: tuple[Path, ...] = tuple(
    s
    for s in golden.discover()
    if (s / golden.EVENTS).stat().st_size < 40_000 and s.name != "not-found" and (s / golden.TRACE).is_file()
)

Mutation = tuple[str, int]

_HUGE = b"99999999999999999999999"
_BYTES = (b"\xff", b"\x00", b"\xc3", b"(", b")", b" = ", b"<... ", b" resumed>", b" <unfinished ...>", b"\n")


def _numbers(line: bytes) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start = -1
    for i, c in enumerate(line + b" "):
        if 48 <= c <= 57:
            if start < 0:
                start = i
        elif start >= 0:
            out.append((start, i))
            start = -1
    return out


def _line_op(op: Callable[[bytes, int], bytes]) -> Callable[[list[bytes], int], list[bytes]]:
    def apply(lines: list[bytes], n: int) -> list[bytes]:
        if not lines:
            return lines
        i = n % len(lines)
        return [*lines[:i], op(lines[i], n // len(lines)), *lines[i + 1 :]]

    return apply


def _replace_number(new: bytes) -> Callable[[bytes, int], bytes]:
    def op(line: bytes, n: int) -> bytes:
        spots = _numbers(line)
        if not spots:
            return line
        a, b = spots[n % len(spots)]
        return line[:a] + new + line[b:]

    return op


def _insert(line: bytes, n: int) -> bytes:
    at = n % (len(line) + 1)
    return line[:at] + _BYTES[n % len(_BYTES)] + line[at:]


def _cut(line: bytes, n: int) -> bytes:
    return line[: n % (len(line) + 1)]


def _dup(lines: list[bytes], n: int) -> list[bytes]:
    i = n % len(lines) if lines else 0
    return [*lines[: i + 1], *lines[i : i + 1], *lines[i + 1 :]]


def _drop(lines: list[bytes], n: int) -> list[bytes]:
    i = n % len(lines) if lines else 0
    return [*lines[:i], *lines[i + 1 :]]


def _swap(lines: list[bytes], n: int) -> list[bytes]:
    if len(lines) < 2:
        return lines
    i = n % (len(lines) - 1)
    return [*lines[:i], lines[i + 1], lines[i], *lines[i + 2 :]]


def _splice(lines: list[bytes], n: int) -> list[bytes]:
    """Two lines joined where a newline was: strace's text and the program's output interleaved."""
    if len(lines) < 2:
        return lines
    i = n % (len(lines) - 1)
    return [*lines[:i], lines[i] + lines[i + 1], *lines[i + 2 :]]


TRACE_MUTATIONS: dict[str, Callable[[list[bytes], int], list[bytes]]] = {
    "huge-number": _line_op(_replace_number(_HUGE)),
    "negative-number": _line_op(_replace_number(b"-1")),
    "zero": _line_op(_replace_number(b"0")),
    "long-number": _line_op(_replace_number(b"1" * 400)),
    "insert-bytes": _line_op(_insert),
    "cut-line": _line_op(_cut),
    "duplicate-line": _dup,
    "drop-line": _drop,
    "swap-lines": _swap,
    "splice-lines": _splice,
}


def _mutate(
    data: bytes, mutations: Sequence[Mutation], table: dict[str, Callable[[list[bytes], int], list[bytes]]]
) -> bytes:
    lines = data.split(b"\n")
    for name, n in mutations:
        lines = table[name](lines, n)
    return b"\n".join(lines)


def mutate_trace(data: bytes, mutations: Sequence[Mutation]) -> bytes:
    return _mutate(data, mutations, TRACE_MUTATIONS)


_VALUES: tuple[object, ...] = (
    None,
    True,
    -1,
    0,
    2**63 - 1,
    -(2**63),
    1e308,
    -1e308,
    "",
    "x" * 5000,
    "\ufffd",
    [],
    [1],
    ["a", None],
    {},
    {"a": "b"},
)


def _field(obj: dict[str, object], n: int) -> str | None:
    keys = sorted(obj)
    return keys[n % len(keys)] if keys else None


def _set_value(obj: dict[str, object], n: int) -> dict[str, object]:
    key = _field(obj, n)
    if key is not None:
        obj[key] = _VALUES[(n // 7) % len(_VALUES)]
    return obj


def _drop_field(obj: dict[str, object], n: int) -> dict[str, object]:
    key = _field(obj, n)
    if key is not None:
        del obj[key]
    return obj


def _add_field(obj: dict[str, object], n: int) -> dict[str, object]:
    obj[f"extra{n % 3}"] = n
    return obj


def _newer(obj: dict[str, object], n: int) -> dict[str, object]:
    obj["v"] = 99 if n % 2 else 0
    return obj


def _kind(obj: dict[str, object], n: int) -> dict[str, object]:
    obj["kind"] = ("proc.nope", "session.started", "proc.exited", "trace.unparsed", 7)[n % 5]
    return obj


def _json_op(
    op: Callable[[dict[str, object], int], dict[str, object]],
) -> Callable[[list[bytes], int], list[bytes]]:
    def apply(lines: list[bytes], n: int) -> list[bytes]:
        real = [i for i, line in enumerate(lines) if line.strip()]
        if not real:
            return lines
        i = real[n % len(real)]
        try:
            obj = orjson.loads(lines[i])
        except orjson.JSONDecodeError:
            return lines
        if not isinstance(obj, dict):
            return lines
        new = orjson.dumps(op(obj, n // len(real)))
        return [*lines[:i], new, *lines[i + 1 :]]

    return apply


SESSION_MUTATIONS: dict[str, Callable[[list[bytes], int], list[bytes]]] = {
    "set-value": _json_op(_set_value),
    "drop-field": _json_op(_drop_field),
    "add-field": _json_op(_add_field),
    "newer-version": _json_op(_newer),
    "change-kind": _json_op(_kind),
    "garbage-bytes": _line_op(_insert),
    "cut-line": _line_op(_cut),
    "duplicate-line": _dup,
    "drop-line": _drop,
    "swap-lines": _swap,
}


def mutate_session(data: bytes, mutations: Sequence[Mutation]) -> bytes:
    return _mutate(data, mutations, SESSION_MUTATIONS)


# --- the harness -----------------------------------------------------------------------------------------


@attrs.define
class Outcome:
    """What a batch of commands did with one input."""

    commands: int = 0
    errors: list[str] = attrs.Factory(list)  # one-line CliErrors
    escaped: list[str] = attrs.Factory(list)  # tracebacks: the bugs
    imported: bool = False
    replay_failed: bool = False  # an accepted import whose replay --check did not pass


@contextlib.contextmanager
def capsule_home(path: Path) -> Iterator[Path]:
    """CAPSULE_HOME set to `path`; fsync skipped (durability is not what is tested, and it is most of
    the time an import takes on a busy disk)."""
    old = os.environ.get("CAPSULE_HOME")
    os.environ["CAPSULE_HOME"] = str(path)
    fsync = os.fsync
    os.fsync = lambda fd: None
    try:
        yield path
    finally:
        os.fsync = fsync
        if old is None:
            os.environ.pop("CAPSULE_HOME", None)
        else:
            os.environ["CAPSULE_HOME"] = old


def run_cli(args: Sequence[str], outcome: Outcome) -> int:
    """One `capsule ARGS` in-process; a traceback is recorded in `outcome.escaped`, not raised."""
    from capsule.cli import app
    from capsule.cli.base import CliError

    outcome.commands += 1
    result = CliRunner().invoke(app, list(args), catch_exceptions=True)
    exc = result.exception
    if exc is None or isinstance(exc, SystemExit):
        return result.exit_code
    if isinstance(exc, CliError):
        message = str(exc)
        if "\n" in message or not message:
            outcome.escaped.append(f"{' '.join(args)}: a multi-line error: {message!r}")
        else:
            outcome.errors.append(message)
        return exc.code
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
    outcome.escaped.append(f"{' '.join(args)}: {type(exc).__name__}: {exc}\n{tb}")
    return 1


def _reports(ref: str, workdir: Path, outcome: Outcome) -> None:
    run_cli(["report", ref, "--json"], outcome)
    run_cli(["report", ref], outcome)
    run_cli(["report", ref, "--html", str(workdir / "report.html")], outcome)
    for fmt in ("perfetto", "otlp", "jsonl"):
        run_cli(["export", ref, "--format", fmt, "-o", str(workdir / f"out.{fmt}")], outcome)


def _fresh(workdir: Path, data: bytes) -> tuple[Path, Path]:
    """An empty CAPSULE_HOME and the log holding `data`, under `workdir`."""
    home = workdir / "home"
    shutil.rmtree(home, ignore_errors=True)
    log = workdir / "log.strace"
    log.write_bytes(data)
    return home, log


def feed_trace(data: bytes, workdir: Path) -> Outcome:
    """Import `data` as a log, then report, replay --check and export what was accepted."""
    outcome, home, log = Outcome(), *_fresh(workdir, data)
    with capsule_home(home):
        code = run_cli(["import", str(log)], outcome)
        sessions = list((home / "runs").iterdir()) if (home / "runs").is_dir() else []
        if code != 0:
            if sessions:
                outcome.escaped.append(f"a failed import (exit {code}) left {len(sessions)} session(s)")
            return outcome
        outcome.imported = True
        _reports("latest", workdir, outcome)
        if run_cli(["replay", "--check", "latest"], outcome) != 0:
            outcome.replay_failed = True
        run_cli(["ls", "--json"], outcome)
    return outcome


def feed_session(events: bytes, trace: bytes, workdir: Path) -> Outcome:
    """Put a (mutated) events.jsonl beside its trace as a finished session; report, replay, export it."""
    outcome = Outcome()
    home = workdir / "home"
    shutil.rmtree(home, ignore_errors=True)
    session = home / "runs" / "20260101-000000-000aa"
    session.mkdir(parents=True)
    (session / golden.EVENTS).write_bytes(events)
    (session / golden.TRACE).write_bytes(trace)
    with capsule_home(home):
        run_cli(["ls", "--json"], outcome)
        _reports(str(session), workdir, outcome)
        run_cli(["replay", "--check", str(session)], outcome)
    return outcome


# --- the same, through the library (the campaign's fast mode) ----------------------------------------


def _render_all(events: list[object], outcome: Outcome) -> None:
    """Fold and render every report and export the CLI would, as the CLI does it."""
    import orjson as _orjson

    from capsule.report import report_dict
    from capsule.report.html import render_html
    from capsule.report.otlp import export_request
    from capsule.report.perfetto import trace_events

    state = golden.fold(events, _rules())  # type: ignore[arg-type]
    _orjson.dumps(report_dict(state))
    golden.render_text(state)
    render_html(state, warnings=state.warnings)
    _orjson.dumps(trace_events(state))
    _orjson.dumps(export_request(state))
    outcome.commands += 5


_RULES: list[object] = []


def _rules() -> object:
    if not _RULES:
        _RULES.append(golden.packaged_rules())
    return _RULES[0]


def _guard(what: str, outcome: Outcome, run: Callable[[], object]) -> object:
    from capsule.codec import CodecError
    from capsule.stages.derive import ImportRefused

    try:
        return run()
    except (CodecError, ImportRefused) as exc:
        message = str(exc)
        (outcome.escaped if "\n" in message else outcome.errors).append(message)
    except Exception as exc:  # counting what escapes is the point
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
        outcome.escaped.append(f"{what}: {type(exc).__name__}: {exc}\n{tb}")
    return None


def feed_trace_lib(data: bytes, workdir: Path) -> Outcome:
    """`feed_trace` through the library: import, fold and render, re-derive and compare."""
    import trio

    from capsule.stages.derive import from_trace, import_log, rederive
    from capsule.stages.reader import iter_events

    outcome, home, log = Outcome(), *_fresh(workdir, data)
    with capsule_home(home):
        imported = _guard("import", outcome, lambda: trio.run(lambda: import_log(log, home=home, name=None)))
        outcome.commands += 1
        sessions = list((home / "runs").iterdir()) if (home / "runs").is_dir() else []
        if imported is None:
            if sessions:
                outcome.escaped.append(f"a failed import left {len(sessions)} session(s)")
            return outcome
        outcome.imported = True
        (session,) = sessions
        events = list(iter_events(session))
        if not events or not isinstance(events[0], SessionStarted):
            outcome.escaped.append("the import wrote a session whose header does not decode")
            return outcome
        _guard("report", outcome, lambda: _render_all(events, outcome))
        header = events[0]
        rederived = _guard(
            "replay",
            outcome,
            lambda: trio.run(lambda: rederive(session / golden.TRACE, level="process", header=header)),
        )
        outcome.commands += 1
        if rederived is not None:
            outcome.replay_failed = rederived[0] != from_trace(events)  # type: ignore[index]
    return outcome


def feed_session_lib(events: bytes, workdir: Path) -> Outcome:
    """`feed_session` through the library: decode as a report does (bad lines skipped), fold, render."""
    from capsule.codec import LineDecoder

    outcome = Outcome()

    def decode() -> list[object]:
        decoder = LineDecoder()
        decoded = [event for _seq, event in decoder.feed(events + b"\n")]
        decoder.close()
        return decoded  # type: ignore[return-value]

    decoded = _guard("decode", outcome, decode)
    outcome.commands += 1
    if decoded is not None:
        _guard("report", outcome, lambda: _render_all(decoded, outcome))  # type: ignore[arg-type]
    return outcome
