"""A big report's second core (stages/forked.py): the same events, notes and bytes as one process, a
child that dies or is abandoned replaced or reaped, never left behind."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import psutil
import pytest

from capsule.api import sessions
from capsule.codec import LineDecoder, NewerVersion, encode_line
from capsule.events import ProcExec, ProcExited, ProcSpawned, SessionStarted, kind_versions
from capsule.stages import forked, snapshot
from capsule.stages.reader import iter_events
from capsule.stages.retention import archive_session
from tests.golden import discover

RUN_AND_IMPORT = [
    s for s in discover() if b'"session_kind":"agents"' not in (s / "events.jsonl").read_bytes()[:2000]
]


@pytest.fixture(autouse=True)
def small_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Golden sessions are small: frames of a few hundred bytes make many frames of each."""
    monkeypatch.setattr(forked, "FRAME_READ", 300)


@pytest.fixture(autouse=True)
def no_child_left() -> object:
    """Whatever a test does, it leaves no child process behind (neither running nor a zombie)."""
    yield
    assert psutil.Process().children(recursive=True) == []


def _one_process(path: Path) -> tuple[list[object], LineDecoder]:
    decoder = LineDecoder()
    return list(iter_events(path, decoder)), decoder


def _two_processes(path: Path) -> tuple[list[object], LineDecoder]:
    decoder = LineDecoder()
    return list(forked.iter_events_forked(path, decoder)), decoder


def _same(path: Path) -> None:
    (one, d1), (two, d2) = _one_process(path), _two_processes(path)
    assert two == one
    assert [type(e) for e in two] == [type(e) for e in one]
    assert (d2.bad_lines, d2.torn_tail, d2.line_no) == (d1.bad_lines, d1.torn_tail, d1.line_no)


def _copy(golden: Path, home: Path) -> Path:
    path = home / "runs" / golden.name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copytree(golden, path, ignore=shutil.ignore_patterns("expected"))
    return path


@pytest.mark.parametrize("golden", discover(), ids=lambda p: p.name)
def test_forked_reading_gives_the_same_events(golden: Path) -> None:
    """Every golden session (run, import, env, agents): the same events in the same order."""
    _same(golden)


@pytest.mark.parametrize("every", [1, 2, 3])
def test_frames_flattened_here_give_the_same_events(
    every: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever share of the frames the child leaves raw for this process (all, every other, every third):
    the same events, notes and line numbers, the hostile lines and the biggest golden session alike."""
    monkeypatch.setattr(forked, "HERE_EVERY", every)
    _hostile(tmp_path / "s")
    _same(tmp_path / "s")
    _same(max(RUN_AND_IMPORT, key=lambda p: (p / "events.jsonl").stat().st_size))


def _hostile(path: Path) -> None:
    path.mkdir(parents=True)
    header = SessionStarted(
        ts=1.0, capsule_version="0.1.0", session_id="h", session_kind="run", argv=("x",), cwd="/",
        host="h", tracer="strace", tracer_version="6.1", tracer_flags=(), kinds=kind_versions(),
    )  # fmt: skip
    lines = [
        encode_line(0, header),
        encode_line(1, ProcSpawned(ts=1.0, pid=10, ppid=None, via="root")),
        b"this is not json\n",
        b"\n",
        b'{"kind": "no.such", "v": 1, "seq": 3, "ts": 1}\n',
        b'{"kind": "proc.exec", "v": 1, "seq": 4, "ts": 1.5, "pid": 10, "path": "/x", "argv": ["x"], "ok": true}\n',
        b'{"kind": "proc.exited", "v": 1, "seq": 5, "ts": 2, "pid": 10, "exit_code": "zero"}\n',
        encode_line(6, ProcExec(ts=2.0, pid=10, path="/bin/y", argv=("y", "z"), ok=True)),
        encode_line(7, ProcExited(ts=3.0, pid=10, exit_code=0)),
        b'{"kind": "proc.exited", "v": 1, "seq": 8, "ts": 3, "pi',
    ]
    (path / "events.jsonl").write_bytes(b"".join(lines))


def test_bad_old_and_torn_lines_are_noted_alike(tmp_path: Path) -> None:
    """Bad JSON, an unknown kind, an old version (upcast), bad fields, blank lines and a torn tail."""
    _hostile(tmp_path / "s")
    _same(tmp_path / "s")
    assert len(_two_processes(tmp_path / "s")[1].bad_lines) == 3


def test_an_archived_session_is_read_alike(capsule_home: Path) -> None:
    """A session kept as events.jsonl.zst."""
    path = _copy(RUN_AND_IMPORT[0], capsule_home)
    before = _one_process(path)[0]
    archive_session(path)
    assert (path / "events.jsonl.zst").is_file()
    _same(path)
    assert _two_processes(path)[0] == before


def test_a_newer_version_stops_both_alike(tmp_path: Path) -> None:
    """A line of a newer Capsule raises in the reader, and the child is reaped."""
    _hostile(tmp_path / "s")
    with open(tmp_path / "s" / "events.jsonl", "ab") as file:
        file.write(b'\n{"kind": "proc.exited", "v": 99, "seq": 9, "ts": 4, "pid": 10}\n')
    with pytest.raises(NewerVersion):
        _one_process(tmp_path / "s")
    with pytest.raises(NewerVersion):
        _two_processes(tmp_path / "s")


def test_a_child_that_dies_is_replaced_by_reading_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child exits mid-session: the rest is read in this process, from its last whole frame."""
    golden = max(RUN_AND_IMPORT, key=lambda p: (p / "events.jsonl").stat().st_size)
    parent, real, calls = os.getpid(), forked.flatten_lines, [0]

    def dying(lines: list[bytes], line_no: int) -> object:
        calls[0] += 1
        if os.getpid() != parent and calls[0] > 5:
            os._exit(3)
        return real(lines, line_no)

    monkeypatch.setattr(forked, "flatten_lines", dying)
    _same(golden)


def test_an_abandoned_reading_reaps_its_child() -> None:
    """A reader closed after a few events kills and reaps its child (the fixture checks)."""
    golden = max(RUN_AND_IMPORT, key=lambda p: (p / "events.jsonl").stat().st_size)
    events = forked.iter_events_forked(golden, LineDecoder())
    assert [next(events) for _ in range(3)]
    events.close()


@pytest.fixture
def always_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every session counts as big, so every golden session takes the two-process path."""
    monkeypatch.setattr(sessions, "FORK_MIN_PROCESSES", 0)
    monkeypatch.setattr(sessions, "FORK_MIN_BYTES", 0)
    monkeypatch.setattr(snapshot, "MIN_EVENTS", 0)


def _report(path: Path) -> bytes:
    snapshot.drop_snapshot(path)
    out = io.BytesIO()
    sessions.write_report_json(path, out)
    return out.getvalue()


@pytest.mark.parametrize("golden", RUN_AND_IMPORT, ids=lambda p: p.name)
@pytest.mark.usefixtures("always_forked")
def test_a_forked_report_has_the_same_bytes(
    golden: Path, capsule_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`report --json` made by two processes (and its snapshot) is byte for byte the one-process one."""
    path = _copy(golden, capsule_home)
    two = _report(path)
    stored = io.BytesIO()
    snapshot.copy_report(path / snapshot.SNAPSHOT, stored)
    assert stored.getvalue() == two
    monkeypatch.setattr(forked, "worth_forking", lambda: False)
    assert _report(path) == two


@pytest.mark.usefixtures("always_forked")
def test_a_failed_or_impossible_child_is_replaced(
    capsule_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's child fails, or its spill file cannot be made: the same bytes, made here."""
    path = _copy(max(RUN_AND_IMPORT, key=lambda p: (p / "events.jsonl").stat().st_size), capsule_home)
    expected = _report(path)
    parent, real = os.getpid(), forked.forked_chunks

    def failing(produce, where):  # type: ignore[no-untyped-def]
        def only_here():  # type: ignore[no-untyped-def]
            if os.getpid() != parent:
                raise RuntimeError("the child fails")
            return produce()

        return real(only_here, where)

    monkeypatch.setattr(forked, "forked_chunks", failing)
    assert _report(path) == expected
    monkeypatch.setattr(forked, "forked_chunks", lambda produce, _where: real(produce, Path("/proc")))
    assert _report(path) == expected


def test_forked_chunks_without_a_folder_draws_here() -> None:
    """No spill file can be made in the folder: the chunks are drawn in this process."""
    with forked.forked_chunks(lambda: iter([b"a", b"b"]), Path("/proc")) as result:
        assert b"".join(result()) == b"ab"
