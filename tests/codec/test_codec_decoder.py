"""LineDecoder and decode_line: torn tails, bad lines, chunking, newer versions, unknown kinds, upcasters."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from capsule.codec import (
    LineDecoder,
    MalformedLine,
    NewerVersion,
    UnknownKind,
    decode_line,
    encode_line,
    encode_lines,
    to_dict,
)
from capsule.codec import upcast as upcast_module
from capsule.events import FORMAT_VERSION, Event, ProcExec, ProcExited, SessionStarted

BAD_LINE = b"this is not json"


def decode_all(chunks: list[bytes]) -> tuple[list[tuple[int, Event]], list[tuple[int, str]], bytes, int]:
    """Feed chunks in order, close, and return everything the decoder produced."""
    decoder = LineDecoder()
    events = [pair for chunk in chunks for pair in decoder.feed(chunk)]
    decoder.close()
    return events, decoder.bad_lines, decoder.torn_tail, decoder.line_no


def line_of(seq: int, event: Event, /, **changes: Any) -> bytes:
    """An encoded line with some of its JSON keys changed (None removes a key)."""
    obj = to_dict(seq, event)
    for key, value in changes.items():
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    return orjson.dumps(obj) + b"\n"


@pytest.fixture
def session(sample_events: tuple[Event, ...]) -> bytes:
    """A whole sample session: every kind, one line each, newline-terminated."""
    return encode_lines(0, list(sample_events))


@pytest.fixture
def damaged(sample_events: tuple[Event, ...]) -> bytes:
    """The sample session with a malformed third line and a torn last line."""
    lines = encode_lines(0, list(sample_events)).splitlines(keepends=True)
    torn = encode_line(len(lines), ProcExited(ts=2.0, pid=1, exit_code=0))[:-9]
    return b"".join([*lines[:2], BAD_LINE + b"\n", *lines[2:], torn])


def test_whole_session_decodes(session: bytes, sample_events: tuple[Event, ...]) -> None:
    """A complete session decodes to its events, numbered by seq, with nothing bad or torn."""
    assert decode_all([session]) == (list(enumerate(sample_events)), [], b"", len(sample_events))


def test_line_starts_with_the_envelope(sample_events: tuple[Event, ...]) -> None:
    """Every line opens with kind, v, seq, ts in that order, then the record's fields."""
    for seq, event in enumerate(sample_events):
        assert list(orjson.loads(encode_line(seq, event)))[:4] == ["kind", "v", "seq", "ts"]


def test_torn_last_line_is_tolerated(session: bytes, sample_events: tuple[Event, ...]) -> None:
    """A last line without its newline is not decoded, not an error, and is reported in torn_tail."""
    torn = encode_line(len(sample_events), ProcExited(ts=2.0, pid=1))[:-1]  # complete but for its newline
    events, bad, tail, _ = decode_all([session + torn])
    assert events == list(enumerate(sample_events))
    assert bad == []
    assert tail == torn


def test_malformed_middle_line_is_recorded_and_skipped(
    damaged: bytes, sample_events: tuple[Event, ...]
) -> None:
    """A bad line lands in bad_lines with its line number; the lines after it still decode."""
    events, bad, tail, line_no = decode_all([damaged])
    assert events == list(enumerate(sample_events))
    assert [number for number, _ in bad] == [3]
    assert bad[0][1].startswith("not JSON")
    assert tail.startswith(b'{"kind":"proc.exited"')
    assert line_no == len(sample_events) + 1


def test_blank_lines_are_skipped_but_counted(sample_events: tuple[Event, ...]) -> None:
    """An empty line is neither an event nor an error, but line numbers stay true to the file."""
    data = encode_line(0, sample_events[0]) + b"\n  \n" + BAD_LINE + b"\n"
    events, bad, _, _ = decode_all([data])
    assert events == [(0, sample_events[0])]
    assert [number for number, _ in bad] == [4]


def test_chunks_split_at_every_byte_give_the_same_result(damaged: bytes) -> None:
    """Splitting the stream in two at any byte, or feeding one byte at a time, changes nothing."""
    whole = decode_all([damaged])
    for cut in range(len(damaged) + 1):
        assert decode_all([damaged[:cut], damaged[cut:]]) == whole, cut
    assert decode_all([damaged[i : i + 1] for i in range(len(damaged))]) == whole


def test_newer_kind_version_is_refused(sample_events: tuple[Event, ...]) -> None:
    """A kind version newer than this reader knows raises NewerVersion, also from inside LineDecoder."""
    line = line_of(1, ProcExited(ts=1.0, pid=1), v=ProcExited.VERSION + 1)
    with pytest.raises(NewerVersion, match=r"proc\.exited v2 was written by a newer capsule"):
        decode_line(line)
    with pytest.raises(NewerVersion):
        decode_all([encode_line(0, sample_events[0]), line])


def test_newer_session_format_is_refused(sample_events: tuple[Event, ...]) -> None:
    """A header whose container format is newer than FORMAT_VERSION raises NewerVersion."""
    header = sample_events[0]
    assert isinstance(header, SessionStarted)
    line = line_of(0, header, format=FORMAT_VERSION + 1)
    with pytest.raises(NewerVersion, match="session format 2 is newer"):
        decode_line(line)
    with pytest.raises(NewerVersion):
        decode_all([line])


def test_unknown_kind(sample_events: tuple[Event, ...]) -> None:
    """An unknown kind raises UnknownKind (a MalformedLine), so LineDecoder records and skips it."""
    line = line_of(0, ProcExited(ts=1.0, pid=1), kind="proc.teleported")
    with pytest.raises(UnknownKind, match=r"proc\.teleported"):
        decode_line(line)
    events, bad, _, _ = decode_all([line, encode_line(1, sample_events[1])])
    assert events == [(1, sample_events[1])]
    assert bad == [(1, "unknown event kind 'proc.teleported'")]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"extra": 1}, "bad proc.exited fields"),
        ({"pid": None}, "bad proc.exited fields"),
        ({"kind": None}, "missing 'kind'"),
        ({"v": None}, "missing 'v'"),
        ({"seq": None}, "missing 'seq'"),
        ({"v": "1"}, "must be integers"),
        ({"seq": 1.5}, "must be integers"),
        ({"v": True}, "must be integers"),
        ({"seq": False}, "must be integers"),
        ({"v": 0}, "at least 1"),
        ({"seq": -1}, "at least 0"),
        ({"kind": ["proc.exited"]}, "must be a string"),
    ],
    ids=[
        "extra-field",
        "missing-field",
        "no-kind",
        "no-v",
        "no-seq",
        "string-v",
        "float-seq",
        "bool-v",
        "bool-seq",
        "v0-has-no-upcaster",
        "negative-seq",
        "list-kind",
    ],
)
def test_malformed_objects(changes: dict[str, Any], match: str) -> None:
    """Extra or missing fields and a broken envelope raise MalformedLine (not UnknownKind)."""
    with pytest.raises(MalformedLine, match=match) as caught:
        decode_line(line_of(0, ProcExited(ts=1.0, pid=1), **changes))
    assert not isinstance(caught.value, UnknownKind)


@pytest.mark.parametrize("line", [b"[]", b"1", b'"x"', b"null", b"{", b"\xff"])
def test_not_an_object(line: bytes) -> None:
    """Anything but a JSON object raises MalformedLine."""
    with pytest.raises(MalformedLine):
        decode_line(line)


def test_bad_header_format_is_malformed(sample_events: tuple[Event, ...]) -> None:
    """A header whose `format` is not an integer is a bad line, not a crash of the decoder."""
    header = sample_events[0]
    assert isinstance(header, SessionStarted)
    events, bad, _, _ = decode_all([line_of(0, header, format="1"), line_of(1, header)])
    assert events == [(1, header)]
    assert bad == [(1, "`format` must be an integer")]


def test_upcaster_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """An old line is brought forward one version at a time, each upcaster in turn, then decoded."""
    monkeypatch.setattr(ProcExec, "VERSION", 3)
    calls = []

    def v1_to_v2(fields: dict[str, Any]) -> dict[str, Any]:  # v2 renamed `file` to `path`
        calls.append(1)
        fields["path"] = fields.pop("file")
        return fields

    def v2_to_v3(fields: dict[str, Any]) -> dict[str, Any]:  # v3 split the command line into argv
        calls.append(2)
        fields["argv"] = fields.pop("cmdline").split()
        return fields

    monkeypatch.setitem(upcast_module.UPCASTERS, ("proc.exec", 1), v1_to_v2)
    monkeypatch.setitem(upcast_module.UPCASTERS, ("proc.exec", 2), v2_to_v3)
    v1 = b'{"kind":"proc.exec","v":1,"seq":4,"ts":1.5,"pid":9,"file":"/bin/ls","cmdline":"ls -l","ok":true}'
    v2 = b'{"kind":"proc.exec","v":2,"seq":5,"ts":1.5,"pid":9,"path":"/bin/ls","cmdline":"ls -l","ok":true}'
    expected = ProcExec(ts=1.5, pid=9, path="/bin/ls", argv=("ls", "-l"), ok=True)
    assert decode_line(v1) == (4, expected)
    assert calls == [1, 2]
    assert decode_line(v2) == (5, expected)
    assert calls == [1, 2, 2]
    v3 = encode_line(6, expected)
    assert b'"v":3' in v3
    assert decode_line(v3) == (6, expected)
    assert calls == [1, 2, 2]


def test_session_started_v1_is_upcast_to_current() -> None:
    """A v1 header (before `parent`, `trace_clock`, `derivation`) decodes with them None."""
    from capsule.codec import decode_line
    from capsule.events import SessionStarted

    line = (
        b'{"kind":"session.started","v":1,"seq":0,"ts":1.0,"format":1,"capsule_version":"0.1.0",'
        b'"session_id":"x","session_kind":"run","kinds":{"session.started":1}}'
    )
    _seq, header = decode_line(line)
    assert isinstance(header, SessionStarted)
    assert (header.parent, header.trace_clock, header.trace_origin, header.derivation) == (None,) * 4
    assert SessionStarted.VERSION == 4
