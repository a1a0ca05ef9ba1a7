"""Every event of every kind survives encode -> decode, and its line validates against its schema."""

from __future__ import annotations

import types
import typing
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from capsule.codec import LineDecoder, decode_line, encode_line, encode_lines
from capsule.codec.schema import all_schemas, schema_filename
from capsule.events import EVENT_TYPES, FORMAT_VERSION, Event, SessionStarted

# orjson writes integers of up to 64 bits; text must be valid UTF-8, so no lone surrogates.
INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# The codec refuses floats beyond ±1e11 (no time or duration is 3000 years): see capsule/codec/lines.py.
FLOATS = st.floats(min_value=-1e11, max_value=1e11, exclude_min=True, exclude_max=True)
TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)))
SEQS = st.integers(min_value=0, max_value=2**63 - 1)

VALIDATORS = {name: Draft202012Validator(schema) for name, schema in all_schemas().items()}


def strategy_for(annotation: object) -> st.SearchStrategy[Any]:
    """Values of one field type, as the records spell them (the same types `schema.type_schema` knows)."""
    scalars: dict[object, st.SearchStrategy[Any]] = {int: INTS, float: FLOATS, str: TEXT, bool: st.booleans()}
    if annotation in scalars:
        return scalars[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        return st.one_of(*(st.none() if arg is type(None) else strategy_for(arg) for arg in args))
    if origin is tuple and args[1:] == (Ellipsis,):
        return st.lists(strategy_for(args[0]), max_size=5).map(tuple)
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=5)
    raise TypeError(f"no strategy for {annotation!r}")


def events_of(cls: type[Event]) -> st.SearchStrategy[Event]:
    """Every field drawn, defaulted ones included, so the whole record is exercised."""
    hints = typing.get_type_hints(cls)
    fields = {field.name: strategy_for(hints[field.name]) for field in attrs.fields(cls)}
    if cls is SessionStarted:  # a newer format is refused by design (test_codec_decoder)
        fields["format"] = st.integers(min_value=1, max_value=FORMAT_VERSION)
    return st.builds(cls, **fields)


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.KIND)
@settings(deadline=None)
@given(data=st.data())
def test_round_trip_and_schema(cls: type[Event], data: st.DataObject) -> None:
    """decode(encode(e)) == e, and the encoded line validates against the schema of its kind and version."""
    event = data.draw(events_of(cls), label="event")
    seq = data.draw(SEQS, label="seq")
    line = encode_line(seq, event)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert decode_line(line) == (seq, event)
    VALIDATORS[schema_filename(cls.KIND, cls.VERSION)].validate(orjson.loads(line))


@settings(deadline=None, max_examples=50)
@given(st.lists(st.one_of(*(events_of(cls) for cls in EVENT_TYPES)), max_size=10))
def test_round_trip_of_a_stream(events: list[Event]) -> None:
    """A batch of mixed kinds comes back from LineDecoder in order, numbered from the first seq."""
    decoder = LineDecoder()
    decoded = list(decoder.feed(encode_lines(7, events)))
    decoder.close()
    assert decoded == list(enumerate(events, 7))
    assert decoder.bad_lines == []
    assert decoder.torn_tail == b""


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.KIND)
@settings(deadline=None, max_examples=25)
@given(data=st.data())
def test_encoding_is_what_cattrs_makes(cls: type[Event], data: st.DataObject) -> None:
    """The generated unstructure of each kind (capsule/codec/lines.py, so that a writer need not import
    cattrs) gives what cattrs' own hook gives: the same keys in the same order, lists for tuples."""
    from capsule.codec import lines

    event = data.draw(events_of(cls), label="event")
    ours = lines._unstructure[cls](event)
    theirs = lines.converter().get_unstructure_hook(cls)(event)
    assert list(ours.items()) == list(theirs.items())
    assert [type(v) for v in ours.values()] == [type(v) for v in theirs.values()]
