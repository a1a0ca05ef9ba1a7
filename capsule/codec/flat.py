"""Lines as flat tuples: a line checked and reduced to `(kind, field values…)` by one process, built into
its record by another (a big report decodes on a second core: stages/forked.py).

`flatten_line` is the fast path of `decode_line` split in two halves that a pipe can sit between: the
half that reads JSON and checks every field's JSON type, and the half that sets the record's slots.
It only accepts what `decode_line` would decode the same way without help — a current version of a
known kind other than the header, with exactly its fields, each of its type — and declines (None)
everything else, which then goes through `decode_line` itself: old versions, unknown kinds, bad fields
and their error messages stay in one place. The law, tested: `build(flatten_line(line)) ==
decode_line(line)[1]` whenever `flatten_line(line)` is not None.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

import attrs
import orjson

from capsule import events
from capsule.codec.lines import CHECK_SCOPE, KINDS, _check, _Hooks
from capsule.events import Event, SessionStarted

Flat = tuple[Any, ...]  # (kind, value of each field in attrs order)


def flatten_line(line: bytes) -> Flat | None:
    """The line's kind and field values, checked as `decode_line` checks them; None to decline."""
    try:
        obj = orjson.loads(line)
        flat: Flat | None = _flatten[obj["kind"]](obj)
    except (ValueError, TypeError, KeyError):  # not JSON, not an object, no kind or an unknown one
        return None
    return flat


def flatten_lines(lines: list[bytes], line_no: int) -> tuple[list[Any], int]:
    """`flatten_line` of each line (numbered on from `line_no`) or, where it declines, `(number, line)`;
    blank lines left out. Returns those and the last line's number. One loop for a frame of lines: a
    call less per line than `flatten_line` in a loop."""
    items: list[Any] = []
    append, loads, hooks = items.append, orjson.loads, _flatten
    for line in lines:
        line_no += 1
        try:
            obj = loads(line)
            flat = hooks[obj["kind"]](obj)
        except (ValueError, TypeError, KeyError):
            flat = None
        if flat is not None:
            append(flat)
        elif line.strip():
            append((line_no, line))
    return items, line_no


def build(flat: Flat) -> Event:
    """The record of a flattened line (its values were checked by `flatten_line`)."""
    return _build[flat[0]](flat)


def _decline(_obj: dict[str, Any]) -> None:
    return None


def _make_flatten(kind: str) -> Callable[[dict[str, Any]], Flat | None]:
    """The flattener of a line of `kind` (a KeyError for an unknown one): its `v` and `seq` checked,
    then its fields, each of its type (a TypeError, or a KeyError for a missing one, to decline)."""
    if not KINDS:
        KINDS.update(events.KINDS)
    cls = KINDS[kind]
    if cls is SessionStarted:  # the header's `format` is checked by decode_line; one line per session
        return _decline
    hints = typing.get_type_hints(cls)
    fields = attrs.fields(cls)
    if any(_check(hints[f.name], "v") is None for f in fields):
        return _decline  # a field the line format does not spell: decode_line's cattrs path
    scope: dict[str, Any] = {
        **CHECK_SCOPE, "names": frozenset(("kind", "v", "seq", *(f.name for f in fields))), "kind": kind,
        "version": cls.VERSION,
    }  # fmt: skip
    body = []
    for i, f in enumerate(fields):
        x, name = f"x{i}", repr(f.name)
        check = f"if not {_check(hints[f.name], x)}: raise TypeError"
        convert = [f"if {x} is not None: {x} = tuple({x})"] if str(f.type).startswith("tuple") else []
        if f.default is attrs.NOTHING:
            body += [f"{x} = d[{name}]", check, *convert]
            continue
        if isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            scope[f"make{i}"] = f.default.factory  # a fresh one per record, as attrs makes it
            absent = f"{x} = make{i}()"
        else:
            scope[f"default{i}"] = f.default
            if eval(str(_check(hints[f.name], "v")), {**CHECK_SCOPE, "v": f.default}):  # noqa: S307 (our own)
                body += [f"{x} = d.get({name}, default{i})", check, *convert]  # checked as if given
                continue
            absent = f"{x} = default{i}"
        body += [f"if {name} in d:", f"    {x} = d[{name}]", f"    {check}", *(f"    {c}" for c in convert)]
        body += ["else:", f"    {absent}"]
    values = "".join(f", x{i}" for i in range(len(fields)))
    source = "\n".join(
        [
            "def flatten(d):",
            "    v, seq = d['v'], d['seq']",
            "    if type(v) is not int or v != version or type(seq) is not int or seq < 0:",
            "        return None",
            "    if not names.issuperset(d):",
            "        return None",
            *(f"    {line}" for line in body),
            f"    return (kind{values})",
        ]
    )
    exec(compile(source, f"<flatten {kind}>", "exec"), scope)  # noqa: S102 (generated above, like attrs)
    made: Callable[[dict[str, Any]], Flat | None] = scope["flatten"]
    return made


def _make_build(kind: str) -> Callable[[Flat], Event]:
    if not KINDS:
        KINDS.update(events.KINDS)
    cls = KINDS[kind]
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls}
    lines = ["def build(t):", "    e = new(cls)"]
    for i, f in enumerate(attrs.fields(cls)):
        owner = next(k for k in cls.__mro__ if f.name in getattr(k, "__slots__", ()))
        scope[f"set{i}"] = owner.__dict__[f.name].__set__
        lines.append(f"    set{i}(e, t[{i + 1}])")
    lines.append("    return e")
    exec(compile("\n".join(lines), f"<build {kind}>", "exec"), scope)  # noqa: S102 (generated above)
    made: Callable[[Flat], Event] = scope["build"]
    return made


_flatten: dict[str, Callable[[dict[str, Any]], Flat | None]] = _Hooks(_make_flatten)
_build: dict[str, Callable[[Flat], Event]] = _Hooks(_make_build)
# `build` by kind, for a loop over a million flat lines (one call less per line than `build`).
BUILDERS: dict[str, Callable[[Flat], Event]] = _build
