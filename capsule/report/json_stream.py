"""`report --json` as a stream of byte chunks: the bytes of `orjson.dumps(obj, OPT_INDENT_2)` plus a
newline, with one list (`processes`) drawn lazily from an iterator so a huge session never holds all its
dicts at once. The CLI prints these chunks; the derived report snapshot stores the very same ones.

The pieces (`opening`, `items_chunks`, `closing`, `members`) let two processes each make a part of
the same bytes: a big report's last processes and the members after them are made by a second process
while this one writes the first processes (capsule/api/sessions.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

Chunk = bytes | memoryview  # a batch of items is a view into orjson's bytes, not a copy of them
BATCH = 1000  # items joined per chunk: one write per thousand processes
_OPTION = orjson.OPT_INDENT_2


def json_chunks(obj: dict[str, Any], key: str, items: Iterable[Any]) -> Iterator[Chunk]:
    """The chunks of `obj` dumped with two-space indents, `obj[key]` replaced by `items`' elements."""
    keys = list(obj)
    at = keys.index(key)
    yield opening({k: obj[k] for k in keys[:at]}, key)
    empty = True
    for chunk in items_chunks(items, first=True):
        empty = False
        yield chunk
    after = {k: obj[k] for k in keys[at + 1 :]}
    yield closing(empty=empty, last=not after) + members(after, last=True) + b"}\n"


def opening(before: dict[str, Any], key: str) -> bytes:
    """The object's start, the members `before` the list, and the list's start."""
    return b"{\n" + members(before, last=False) + b"  " + orjson.dumps(key) + b": ["


def items_chunks(items: Iterable[Any], *, first: bool) -> Iterator[Chunk]:
    """The list's items, a batch per chunk; `first`: these begin the list (no comma before them)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= BATCH:
            if not first:
                yield b","
            yield _batch(batch)
            first = False
            batch.clear()
    if batch:
        if not first:
            yield b","
        yield _batch(batch)


def _batch(batch: list[Any]) -> memoryview:
    # Dumped as the list of a one-member object, orjson indents the items by four: what they have
    # under the key, so there is nothing to re-indent (a `replace` pass cost as much as the dump).
    # The view cuts `{"_": [` before and `]}` after (with their newlines) without a copy.
    return memoryview(orjson.dumps({"_": batch}, option=_OPTION))[_CUT_BEFORE:-_CUT_AFTER]


_CUT_BEFORE = len(b'{\n  "_": [')
_CUT_AFTER = len(b"\n  ]\n}")


def closing(*, empty: bool, last: bool) -> bytes:
    """The list's end (`empty`: it had no items), with a comma unless it is the `last` member."""
    return (b"]" if empty else b"\n  ]") + (b"" if last else b",") + b"\n"


def members(obj: dict[str, Any], *, last: bool) -> bytes:
    """The lines of `obj`'s members inside an indented object; the last without its comma if `last`."""
    keys = list(obj)
    return b"".join(
        b"  "
        + orjson.dumps(name)
        + b": "
        + orjson.dumps(obj[name], option=_OPTION).replace(b"\n", b"\n  ")
        + (b"," if i < len(keys) - 1 or not last else b"")
        + b"\n"
        for i, name in enumerate(keys)
    )
