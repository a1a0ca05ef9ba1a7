"""The session fold: status, counters, warnings, and the prefix law."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from capsule.events import Event
from capsule.fold import SessionState, apply, fold_session
from capsule.report import report_dict
from tests.fold.builders import Script, packaged_rules

RULES = packaged_rules()


def simple_run() -> Script:
    s = Script().start("sh", "-c", "ls")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", "ls; git status")
    s.run(2, 1, "/bin/ls", "ls")
    return s


def test_complete_session() -> None:
    """An ended session is complete, with its exit code and duration from session.ended."""
    s = simple_run()
    s.exit(1, 3).end(3)
    state = fold_session(s.events, RULES)
    assert state.status == "complete"
    assert state.exit_code == 3
    assert state.duration == s.events[-1].duration_s  # type: ignore[attr-defined]
    assert state.events == len(s.events)


def test_incomplete_session() -> None:
    """No session.ended: incomplete, said in the warnings, exit taken from the root if it exited."""
    state = fold_session(simple_run().events, RULES)
    assert state.status == "incomplete"
    assert state.exit_code is None
    assert state.duration is not None
    assert any("no end" in w for w in state.warnings)


def test_recovered_session() -> None:
    """A session.recovered makes the status recovered, even with an end."""
    s = simple_run()
    s.exit(1).recovered().end()
    state = fold_session(s.events, RULES)
    assert state.status == "recovered"
    assert any("recovered" in w for w in state.warnings)


def test_counters_and_spawn_failures() -> None:
    """Unparsed lines are counted; a command that could not start is a warning."""
    s = Script().start("nosuch")
    s.unparsed(3).unparsed(9).spawn_failed("nosuch", "--flag").end(127)
    state = fold_session(s.events, RULES)
    assert state.unparsed_lines == 2
    assert len(state.unparsed_samples) == 2
    assert len(state.spawn_failures) == 1
    assert any("could not start nosuch" in w for w in state.warnings)
    assert len(state.tree) == 0


def test_incremental_apply_equals_fold_session() -> None:
    """apply() one event at a time is what fold_session does."""
    s = simple_run()
    s.exit(1).end()
    state = SessionState.new(RULES)
    for event in s.events:
        state = apply(state, event)
    assert report_dict(state) == report_dict(fold_session(s.events, RULES))


# --- the prefix law -------------------------------------------------------------------------------------

PIDS = st.integers(min_value=1, max_value=6)
ARGVS = st.sampled_from(
    [
        ("/bin/sh", ("sh", "-c", "x")),
        ("/usr/bin/git", ("git", "status")),
        ("/usr/bin/python3", ("python3", "-m", "pytest")),
        ("/usr/bin/node", ("node", "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js")),
        ("/usr/bin/true", ("true",)),
        ("/nope", ("nope",)),
    ]
)


@st.composite
def event_streams(draw: st.DrawFn) -> list[Event]:
    """Plausible and implausible streams alike: the law must hold for any sequence of events."""
    s = Script().start("sh")
    for _ in range(draw(st.integers(min_value=0, max_value=40))):
        op = draw(st.sampled_from(["spawn", "exec", "fail", "exit", "kill", "signal", "sample", "junk"]))
        pid = draw(PIDS)
        if op == "spawn":
            s.spawn(pid, draw(st.none() | PIDS), via=draw(st.sampled_from(["fork", "clone", "vfork"])))
        elif op in ("exec", "fail"):
            path, argv = draw(ARGVS)
            if op == "exec":
                s.exec(pid, path, *argv)
            else:
                s.fail_exec(pid, path, *argv)
        elif op == "exit":
            s.exit(pid, draw(st.integers(min_value=0, max_value=3)))
        elif op == "kill":
            s.exit(pid, signal="SIGKILL")
        elif op == "signal":
            s.signaled(pid, "SIGTERM")
        elif op == "sample":
            s.sample(pid, draw(st.floats(0, 400)), draw(st.integers(0, 2**32)))
        else:
            s.unparsed(pid)
    if draw(st.booleans()):
        s.end()
    return s.events


@settings(max_examples=150, deadline=None)
@given(events=event_streams(), data=st.data())
def test_prefix_law(events: list[Event], data: st.DataObject) -> None:
    """Folding a prefix, snapshotting, then folding the rest equals folding everything."""
    cut = data.draw(st.integers(min_value=0, max_value=len(events)))
    whole = fold_session(events, RULES)
    prefix = fold_session(events[:cut], RULES)
    resumed = copy.deepcopy(prefix)
    for event in events[cut:]:
        resumed = apply(resumed, event)
    assert report_dict(resumed) == report_dict(whole)


@settings(max_examples=150, deadline=None)
@given(events=event_streams(), data=st.data())
def test_folding_flat_lines_equals_folding_records(events: list[Event], data: st.DataObject) -> None:
    """`apply_flat` (a big report's fold, capsule/codec/flat.py tuples, the common kinds folded without a
    record) gives the state `apply` gives: any stream, any timestamps, lines it declined (not JSON, an
    old version) through the decoder, any batching."""
    import attrs

    from capsule.codec import LineDecoder, encode_line
    from capsule.codec.flat import flatten_lines

    events = [attrs.evolve(e, ts=data.draw(st.sampled_from([e.ts, e.ts - 5, 0.5]))) for e in events]
    lines = [encode_line(seq, e).rstrip(b"\n") for seq, e in enumerate(events)]
    for at in sorted(data.draw(st.lists(st.integers(0, len(lines)), max_size=3)), reverse=True):
        lines.insert(at, data.draw(st.sampled_from([b"not json", b"", b'{"kind": "proc.exited", "v": 0}'])))
    decoder, one = LineDecoder(), LineDecoder()
    whole = SessionState.new(RULES)
    for _seq, event in one.feed(b"\n".join(lines) + b"\n"):
        whole.apply(event)
    flat = SessionState.new(RULES)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(lines)), max_size=3)))
    line_no = 0
    for a, b in zip([0, *cuts], [*cuts, len(lines)], strict=True):
        items, line_no = flatten_lines(lines[a:b], line_no)
        flat.apply_flat(items, decoder.decode)
    assert report_dict(flat) == report_dict(whole)
    assert (flat.events, flat.first_ts, flat.last_ts, flat.earliest_ts) == (
        whole.events, whole.first_ts, whole.last_ts, whole.earliest_ts
    )  # fmt: skip
    assert decoder.bad_lines == one.bad_lines


def test_the_common_kinds_fold_flat() -> None:
    """The fast kinds of `apply_flat` still match their records' fields (else they would be built)."""
    from capsule.fold import session

    assert (session._SPAWNED, session._EXITED) == ("proc.spawned", "proc.exited")
