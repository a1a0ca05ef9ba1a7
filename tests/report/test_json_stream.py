"""The streamed `report --json` writer equals dumping the whole object at once, whatever the batching."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsule.report import json_stream

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
items = st.lists(st.dictionaries(st.text(max_size=4), values, max_size=4) | values, max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    before=st.dictionaries(st.sampled_from(["a", "session", "z"]), values, max_size=2),
    listed=items,
    after=st.dictionaries(st.sampled_from(["summary", "warnings"]), values, max_size=2),
    batch=st.integers(1, 5),
)
def test_chunks_equal_whole_dump(before, listed, after, batch) -> None:  # type: ignore[no-untyped-def]
    """Batched dumps (of every size, including a batch boundary at the end) give orjson's own bytes."""
    obj = {**before, "processes": listed, **after}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(json_stream, "BATCH", batch)
        streamed = b"".join(json_stream.json_chunks({**obj, "processes": None}, "processes", iter(listed)))
    assert streamed == orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n"


@settings(max_examples=300, deadline=None)
@given(
    before=st.dictionaries(st.sampled_from(["a", "session", "z"]), values, max_size=2),
    listed=items,
    after=st.dictionaries(st.sampled_from(["summary", "warnings"]), values, min_size=1, max_size=2),
    batch=st.integers(1, 5),
    data=st.data(),
)
def test_pieces_made_apart_join_into_the_whole_dump(before, listed, after, batch, data) -> None:  # type: ignore[no-untyped-def]
    """The list cut anywhere, its two parts' chunks made separately (as two processes do), then joined."""
    cut = data.draw(st.integers(0, len(listed)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(json_stream, "BATCH", batch)
        joined = b"".join(
            [
                json_stream.opening(before, "processes"),
                *json_stream.items_chunks(listed[:cut], first=True),
                *json_stream.items_chunks(listed[cut:], first=cut == 0),
                json_stream.closing(empty=not listed, last=False),
                json_stream.members(after, last=True),
                b"}\n",
            ]
        )
    assert (
        joined == orjson.dumps({**before, "processes": listed, **after}, option=orjson.OPT_INDENT_2) + b"\n"
    )
