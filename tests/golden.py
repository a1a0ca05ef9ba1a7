"""The golden sessions in sessions/: discovery, folding, deterministic rendering, and the bless step.

Every `sessions/<slug>/` holding an `events.jsonl` is a golden session; its `expected/` holds the reports
the current code must reproduce. `python -m tests.golden bless` (`just bless`) rewrites every `expected/`
from the current code, to be reviewed in the diff; `python -m tests.golden check` lists the ones that
differ. Sessions themselves are re-recorded (`sessions/record.sh`), never edited; bless rewrites a
session's events.jsonl only after a bump of `capsule.events.DERIVATION` (how Capsule derives events from
a trace), re-deriving it from its own raw trace, and refuses to when the events changed without one.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path

import orjson
from rich.console import Console

from capsule.codec import LineDecoder
from capsule.events import Event
from capsule.fold import SessionState
from capsule.fold.labels import RuleSet
from capsule.report import render, report_dict

SESSIONS_DIR = Path(__file__).resolve().parents[1] / "sessions"
EVENTS = "events.jsonl"
TRACE = "trace.strace"
TRACE_EBPF = "trace.ebpf"  # sessions recorded with `--tracer ebpf`
EXPECTED = "expected"
WIDTH = 100  # the report text is rendered this wide, without colour, whatever the terminal


def discover(root: Path = SESSIONS_DIR) -> list[Path]:
    """Every golden session directory, by name."""
    return sorted(path.parent for path in root.glob(f"*/{EVENTS}"))


def trace_file(session: Path) -> Path:
    """The session's raw trace: trace.strace, or trace.ebpf for one recorded by the eBPF tracer."""
    ebpf = session / TRACE_EBPF
    return ebpf if ebpf.is_file() else session / TRACE


def tracer_of(session: Path) -> str:
    """`strace` or `ebpf`: which parser and tracker re-derive the session."""
    return "ebpf" if trace_file(session).name == TRACE_EBPF else "strace"


def packaged_rules() -> RuleSet:
    """The rules shipped in capsule/rules/ only: a user's $CAPSULE_HOME/rules.toml never leaks in."""
    sources = [
        (f"capsule/rules/{f.name}", f.read_text(encoding="utf-8"))
        for f in sorted(files("capsule.rules").iterdir(), key=lambda f: f.name)
        if f.name.endswith(".toml")
    ]
    return RuleSet.from_sources(*sources)


def load_events(session: Path) -> list[Event]:
    """The events of a session, strictly: a bad or torn line in a golden session is an error."""
    decoder = LineDecoder()
    events = [event for _seq, event in decoder.feed((session / EVENTS).read_bytes())]
    decoder.close()
    assert decoder.bad_lines == [], decoder.bad_lines
    assert decoder.torn_tail == b"", decoder.torn_tail
    return events


def fold(events: Iterable[Event], rules: RuleSet, state: SessionState | None = None) -> SessionState:
    state = state if state is not None else SessionState.new(rules)
    for event in events:
        state.apply(event)
    return state


def render_json(state: SessionState) -> bytes:
    """`capsule report --json`, byte for byte as the CLI prints it."""
    return orjson.dumps(report_dict(state), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def render_text(state: SessionState) -> bytes:
    """`capsule report` as a NO_COLOR, non-TTY, WIDTH-column console prints it, trailing blanks cut.

    Trailing blanks (rich pads table cells) are cut so an editor trimming them cannot break a golden.
    """
    out = io.StringIO()
    console = Console(
        file=out,
        width=WIDTH,
        color_system=None,
        force_terminal=False,
        no_color=True,
        highlight=False,
        soft_wrap=False,
        emoji=False,
        legacy_windows=False,
    )
    console.print(render(state))
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines()).encode()


def reports(session: Path, rules: RuleSet) -> dict[str, bytes]:
    """The expected/ files of a session as the current code renders them."""
    state = fold(load_events(session), rules)
    return {"report.json": render_json(state), "report.txt": render_text(state)}


def rederive_events(sessions: Iterable[Path]) -> list[Path]:
    """Re-derive the events.jsonl of every golden that names another DERIVATION than this Capsule's
    (after a bump of `capsule.events.DERIVATION`); returns the files written. One that names this
    derivation and no longer re-derives is refused (CheckFailed): bump DERIVATION first."""
    from capsule.api.sessions import rederive

    return [session / EVENTS for session in sessions if rederive(session).written]


def bless(sessions: Iterable[Path]) -> list[Path]:
    """Rewrite every expected/ file that differs, after re-deriving the events of goldens derived by
    another DERIVATION; returns the files written."""
    sessions = list(sessions)
    rules = packaged_rules()
    written = rederive_events(sessions)
    for session in sessions:
        (session / EXPECTED).mkdir(exist_ok=True)
        for name, data in reports(session, rules).items():
            path = session / EXPECTED / name
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
                written.append(path)
    return written


def stale(sessions: Iterable[Path]) -> list[Path]:
    """The expected/ files the current code no longer reproduces."""
    rules = packaged_rules()
    return [
        session / EXPECTED / name
        for session in sessions
        for name, data in reports(session, rules).items()
        if not (session / EXPECTED / name).exists() or (session / EXPECTED / name).read_bytes() != data
    ]


def main(argv: list[str]) -> int:
    usage = "usage: python -m tests.golden bless|check"
    if len(argv) != 1 or argv[0] not in ("bless", "check"):
        print(usage, file=sys.stderr)
        return 2
    sessions = discover()
    if argv[0] == "bless":
        from capsule.api.errors import CheckFailed

        try:
            written = bless(sessions)
        except CheckFailed as exc:
            print(f"bless: {exc}", file=sys.stderr)
            return 1
        for path in written:
            print(f"blessed {path.relative_to(SESSIONS_DIR.parent)}")
        print(f"{len(sessions)} sessions, {len(written)} files rewritten")
        return 0
    changed = stale(sessions)
    for path in changed:
        print(f"stale {path.relative_to(SESSIONS_DIR.parent)}")
    print(f"{len(sessions)} sessions, {len(changed)} expected files stale")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
