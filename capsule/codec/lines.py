"""Encode events as JSONL lines and decode them back: orjson at the edge, generated code per record.

A line is one flat JSON object: `kind`, `v`, `seq`, `ts`, then the record's fields. Decoding refuses
unknown fields (forbid_extra_keys) and versions newer than this reader, and upcasts older ones.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import orjson

from capsule import events
from capsule.codec.errors import MalformedLine, NewerVersion, UnknownKind
from capsule.codec.upcast import upcast
from capsule.events import FORMAT_VERSION, Event, SessionStarted


class _Hooks(dict[Any, Any]):
    """Per-kind hooks built on first use: generating all of them cost ~10 ms of every start."""

    def __init__(self, build: Callable[[Any], Any]) -> None:
        super().__init__()
        self._build = build

    def __missing__(self, key: Any) -> Any:
        hook = self[key] = self._build(key)
        return hook


def converter() -> Any:
    """The cattrs converter (orjson preconf) for records with a field the line format does not spell;
    built on first use: every record today has only spelled fields, and cattrs cost ~11 ms to import."""
    global _converter
    if _converter is None:
        from cattrs.preconf.orjson import make_converter

        _converter = make_converter(forbid_extra_keys=True, detailed_validation=False)
    return _converter


_converter: Any = None


def _fast_unstructure(cls: type[Event]) -> Callable[[Any], dict[str, Any]]:
    """A record's fields as a line's object, in field order, as cattrs' unstructure hook makes it
    (tuples become lists, dicts are copied) when every field is of a type the line format spells
    (`_check`); for any other, cattrs' own hook. `capsule run` writes its header before strace starts:
    it need not import cattrs first (tests/codec/test_codec_roundtrip.py compares the two)."""
    hints = typing.get_type_hints(cls)
    fields = attrs.fields(cls)
    if any(_check(hints[f.name], "v") is None for f in fields):
        hook: Callable[[Any], dict[str, Any]] = converter().get_unstructure_hook(cls)
        return hook
    items = []
    for f in fields:
        hint, value = hints[f.name], f"e.{f.name}"
        optional = type(None) in typing.get_args(hint)
        inner = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
        make = {tuple: "list", dict: "dict"}.get(typing.get_origin(inner))
        if make is not None:
            value = f"(None if {value} is None else {make}({value}))" if optional else f"{make}({value})"
        items.append(f"{f.name!r}: {value}")
    scope: dict[str, Any] = {}
    exec(f"def unstructure(e):\n    return {{{', '.join(items)}}}\n", scope)  # noqa: S102 (our own fields)
    made: Callable[[Any], dict[str, Any]] = scope["unstructure"]
    return made


_unstructure: dict[type[Event], Callable[[Any], dict[str, Any]]] = _Hooks(_fast_unstructure)


def _check(annotation: object, v: str) -> str | None:
    """A Python expression true when `v` (a name) holds a JSON value of the field type `annotation`."""
    if annotation is bool:
        return f"type({v}) is bool"
    if annotation is int:
        return f"type({v}) is int"
    if annotation is float:  # JSON writes 2.0 as 2; beyond ±1e11 s (3000 years) no time or duration
        return f"((type({v}) is float or type({v}) is int) and -1e11 < {v} < 1e11)"
    if annotation is str:
        return f"type({v}) is str"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        inner = _check(next(a for a in args if a is not type(None)), v)
        return None if inner is None else f"({v} is None or {inner})"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if args[0] in _EXACT:  # every item of exactly that type: one C-level pass, not a generator
            return f"(type({v}) is list and only_{args[0].__name__}.issuperset(map(type, {v})))"
        item = _check(args[0], "x")
        return None if item is None else f"(type({v}) is list and all({item} for x in {v}))"
    if origin is dict and len(args) == 2 and args[0] is str:
        if args[1] in _EXACT:
            values = f"only_{args[1].__name__}.issuperset(map(type, {v}.values()))"
            return f"(type({v}) is dict and only_str.issuperset(map(type, {v})) and {values})"
        item = _check(args[1], "x")
        return (
            None
            if item is None
            else f"(type({v}) is dict and all(type(k) is str and {item} for k, x in {v}.items()))"
        )
    return None  # a type the line format does not spell: left to the schema tests


_EXACT = (bool, int, str)
# The names `_check`'s expressions use, for the scope of the code generated from them.
CHECK_SCOPE: dict[str, Any] = {f"only_{t.__name__}": frozenset({t}) for t in _EXACT}


def _fast_structure(cls: type[Event]) -> Callable[[dict[str, Any]], Event]:
    """Build a record from a line's fields the way `cls(**fields)` would, about three times faster.

    A report folds a million events and decoding is most of its cost: cattrs' structure hooks took
    ~4.5 us per event here and attrs' frozen `__init__` ~1.4 us (it goes through `object.__setattr__`
    per field). This sets each slot through its own descriptor, turns JSON arrays back into tuples, and
    still refuses unknown and missing fields and values of the wrong JSON type (`"ts": null`, `"argv":
    [1]`): a session line is input from outside, and the folds and reports trust what they are given.
    """
    fields = attrs.fields(cls)
    hints = typing.get_type_hints(cls)
    scope: dict[str, Any] = {
        **CHECK_SCOPE, "new": object.__new__, "cls": cls, "names": frozenset(f.name for f in fields)
    }  # fmt: skip
    body = []
    for i, f in enumerate(fields):
        owner = next(k for k in cls.__mro__ if f.name in getattr(k, "__slots__", ()))
        scope[f"set{i}"] = owner.__dict__[f.name].__set__
        check = _check(hints[f.name], "v")
        given = [f"v = d[{f.name!r}]"]
        if check is not None:
            given.append(f"if not {check}: raise TypeError('{f.name}: not ' + {_spell(hints[f.name])!r})")
        if str(f.type).startswith("tuple"):
            given.append("if v is not None: v = tuple(v)")
        if f.default is attrs.NOTHING:
            body.extend(given)
        else:
            if isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
                scope[f"make{i}"] = f.default.factory
                absent = f"v = make{i}()"
            else:
                scope[f"default{i}"] = f.default
                absent = f"v = default{i}"
            body.append(f"if {f.name!r} in d:")
            body.extend(f"    {line}" for line in given)
            body.append("else:")
            body.append(f"    {absent}")
        body.append(f"set{i}(event, v)")
    source = "\n".join(
        [
            "def structure(d):",
            "    if not names.issuperset(d):",
            "        raise TypeError('unexpected field(s) ' + ', '.join(sorted(set(d) - names)))",
            "    event = new(cls)",
            "    try:",
            *(f"        {line}" for line in body),
            "    except KeyError as missing:",
            "        raise TypeError(f'missing field {missing.args[0]!r}') from None",
            "    return event",
        ]
    )
    exec(compile(source, f"<structure {cls.KIND}>", "exec"), scope)  # noqa: S102 (generated above, like attrs)
    structure: Callable[[dict[str, Any]], Event] = scope["structure"]
    return structure


def _spell(annotation: object) -> str:
    """`int | None` -> `an integer or null`: how a wrong field is explained."""
    names = {bool: "a boolean", int: "an integer", float: "a number (under 1e11)", str: "a string"}
    if annotation in names:
        return names[annotation]
    args = typing.get_args(annotation)
    if type(None) in args:
        return _spell(next(a for a in args if a is not type(None))) + " or null"
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return f"a list of {_spell(args[0]).split(' ', 1)[1]}s"
    if origin is dict:
        return f"an object of {_spell(args[1]).split(' ', 1)[1]}s"
    return str(annotation)


# Every kind by name, filled by the first decode: a writer (`capsule run`) never loads the kinds it
# does not write (capsule/events/__init__.py). Kept here, not looked up in capsule.events per line.
KINDS: dict[str, type[Event]] = {}
_structure: dict[str, Callable[[dict[str, Any]], Event]] = _Hooks(lambda kind: _fast_structure(KINDS[kind]))


def to_dict(seq: int, event: Event) -> dict[str, Any]:
    """The JSON object of one line, keys in line order: kind, v, seq, then ts and the fields."""
    cls = type(event)
    return {"kind": cls.KIND, "v": cls.VERSION, "seq": seq, **_unstructure[cls](event)}


def encode_line(seq: int, event: Event) -> bytes:
    """One line, newline included."""
    return orjson.dumps(to_dict(seq, event), option=orjson.OPT_APPEND_NEWLINE)


def encode_lines(first_seq: int, events: list[Event]) -> bytes:
    """A batch of lines numbered from `first_seq`, ready for one write()."""
    return b"".join(encode_line(first_seq + i, event) for i, event in enumerate(events))


def from_dict(obj: Any) -> tuple[int, Event]:
    """Decode one line's object into (seq, event), upcasting old versions."""
    if not isinstance(obj, dict):
        raise MalformedLine("a session line must be a JSON object")
    try:
        kind = obj.pop("kind")
        version = obj.pop("v")
        seq = obj.pop("seq")
    except KeyError as missing:
        raise MalformedLine(f"missing {missing.args[0]!r}") from None
    # The common case, checked in one go: a current version of a known kind (bool is an int subclass
    # in Python, but `true` is no version or sequence number, hence `type(...) is int`).
    if (
        type(seq) is int
        and seq >= 0
        and type(version) is int
        and type(kind) is str
        and (cls := KINDS.get(kind)) is not None
        and version == cls.VERSION
        and cls is not SessionStarted
    ):
        try:
            return seq, _structure[kind](obj)
        except (TypeError, ValueError) as exc:
            raise MalformedLine(f"bad {kind} fields: {exc}") from None
    if not isinstance(kind, str):
        raise MalformedLine("`kind` must be a string")
    if not KINDS:  # the first decode of this process: the slow path below handles its line too
        KINDS.update(events.KINDS)
    cls = KINDS.get(kind)
    if cls is None:
        raise UnknownKind(f"unknown event kind {kind!r}")
    if type(version) is not int or type(seq) is not int:
        raise MalformedLine("`v` and `seq` must be integers")
    if version < 1 or seq < 0:
        raise MalformedLine("`v` must be at least 1 and `seq` at least 0")
    if version > cls.VERSION:
        raise NewerVersion(
            f"{kind} v{version} was written by a newer capsule (this one reads up to v{cls.VERSION})"
        )
    if version < cls.VERSION:
        obj = upcast(kind, version, cls.VERSION, obj)
    if cls is SessionStarted and type(obj.get("format", FORMAT_VERSION)) is not int:
        raise MalformedLine("`format` must be an integer")
    if cls is SessionStarted and obj.get("format", FORMAT_VERSION) > FORMAT_VERSION:
        raise NewerVersion(
            f"session format {obj['format']} is newer than this capsule reads ({FORMAT_VERSION})"
        )
    try:
        return seq, _structure[kind](obj)
    except (TypeError, ValueError) as exc:  # unknown, missing or ill-typed fields
        raise MalformedLine(f"bad {kind} fields: {exc}") from None


def decode_line(line: bytes) -> tuple[int, Event]:
    """Decode one line (with or without its newline)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise MalformedLine(f"not JSON: {exc}") from None
    return from_dict(obj)


@attrs.define
class LineDecoder:
    """Sans-I/O reader of events.jsonl: feed bytes, get (seq, event) pairs.

    A malformed line is reported through `bad_lines` (line number, reason) and skipped, so one bad line
    never hides the rest of a session. A last line without its newline is torn (the writer died mid-write)
    and is tolerated: `close()` reports it in `torn_tail` instead of decoding it.
    """

    bad_lines: list[tuple[int, str]] = attrs.field(factory=list)
    torn_tail: bytes = b""
    line_no: int = 0
    _buffer: bytes = b""

    def feed(self, data: bytes) -> Iterator[tuple[int, Event]]:
        data = self._buffer + data
        end = data.rfind(b"\n")
        if end < 0:
            self._buffer = data
            return
        self._buffer = data[end + 1 :]
        for line in data[:end].split(b"\n"):
            self.line_no += 1
            if not line.strip():
                continue
            decoded = self.decode(self.line_no, line)
            if decoded is not None:
                yield decoded

    def decode(self, line_no: int, line: bytes) -> tuple[int, Event] | None:
        """One line (number `line_no`) as `feed` decodes it: None, and noted in `bad_lines`, if malformed."""
        try:
            return decode_line(line)
        except NewerVersion:
            raise
        except MalformedLine as exc:
            self.bad_lines.append((line_no, str(exc)))
            return None

    def close(self) -> None:
        self.torn_tail, self._buffer = self._buffer, b""
