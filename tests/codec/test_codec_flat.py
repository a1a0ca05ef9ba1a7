"""The split decoder (capsule/codec/flat.py): `build(flatten_line(line))` is `decode_line(line)`'s event
whenever flatten accepts the line, for every kind and for lines with fields broken in every way."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsule.codec import MalformedLine, NewerVersion, UnknownKind, decode_line, encode_line, to_dict
from capsule.codec.flat import build, flatten_line
from capsule.events import EVENT_TYPES, Event, SessionStarted
from tests.codec.test_codec_roundtrip import SEQS, events_of

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def _decoded(line: bytes) -> Event | None:
    try:
        return decode_line(line)[1]
    except (MalformedLine, UnknownKind, NewerVersion):
        return None


def _agrees(line: bytes) -> bool:
    flat = flatten_line(line)
    if flat is None:
        return True  # declined: decode_line decodes it alone, whatever it is
    event = _decoded(line)
    assert event is not None, f"flatten accepted a line decode_line refuses: {line!r}"
    assert build(flat) == event
    assert type(build(flat)) is type(event)
    return False


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.KIND)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), seq=SEQS)
def test_flatten_then_build_is_decode(cls: type[Event], data: st.DataObject, seq: int) -> None:
    """Every well-formed line of every kind: accepted (but the header) and built into the same event."""
    line = encode_line(seq, data.draw(events_of(cls)))
    declined = _agrees(line)
    assert declined == (cls is SessionStarted)


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.KIND)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), seq=SEQS)
def test_a_broken_line_is_declined_or_decoded_alike(cls: type[Event], data: st.DataObject, seq: int) -> None:
    """Fields removed, added, or given any JSON value (kind, v and seq too): flatten never accepts a line
    decode_line refuses, and never builds another event than it does."""
    obj: dict[str, Any] = to_dict(seq, data.draw(events_of(cls)))
    keys = sorted(obj)
    for key in data.draw(st.lists(st.sampled_from([*keys, "extra"]), max_size=3)):
        action = data.draw(st.sampled_from(["drop", "set"]))
        if action == "drop":
            obj.pop(key, None)
        else:
            obj[key] = data.draw(JSON_VALUES)
    _agrees(orjson.dumps(obj))


@pytest.mark.parametrize(
    "line",
    [b"", b"not json", b"[1, 2]", b"null", b'{"kind": 3, "v": 1, "seq": 0}', b'{"kind": "no.such", "v": 1, "seq": 0}',
     b'{"kind": "proc.exited", "v": 99, "seq": 0, "ts": 1, "pid": 1}', b'{"kind": "proc.exited", "v": true, "seq": 0, "ts": 1, "pid": 1}',
     b'{"kind": "proc.exited", "v": 1, "seq": -1, "ts": 1, "pid": 1}', b'{"kind": "proc.exited", "v": 1, "seq": 0, "ts": 1e12, "pid": 1}',
     b'{"kind": "proc.exec", "v": 1, "seq": 0, "ts": 1, "pid": 1, "path": "/x", "argv": ["a"], "ok": true}'],
    ids=range(11),
)  # fmt: skip
def test_unusual_lines_are_left_to_decode_line(line: bytes) -> None:
    """Bad JSON, other shapes, unknown kinds, old and newer versions, bad seq, out-of-range times: declined."""
    assert flatten_line(line) is None
