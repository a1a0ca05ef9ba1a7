"""`report --json` as a stream of byte chunks: the bytes of `orjson.dumps(obj, OPT_INDENT_2)` plus a
newline, with one list (`processes`) drawn lazily from an iterator so a huge session never holds all its
dicts at once. The CLI prints these chunks; the derived report snapshot stores the very same ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

BATCH = 1000  # items joined per chunk: one write per thousand processes


def json_chunks(obj: dict[str, Any], key: str, items: Iterable[Any]) -> Iterator[bytes]:
    """The chunks of `obj` dumped with two-space indents, `obj[key]` replaced by `items`' elements."""
    option = orjson.OPT_INDENT_2
    keys = list(obj)
    yield b"{\n"
    for i, name in enumerate(keys):
        comma = b"," if i < len(keys) - 1 else b""
        head = b"  " + orjson.dumps(name) + b": "
        if name != key:
            yield head + orjson.dumps(obj[name], option=option).replace(b"\n", b"\n  ") + comma + b"\n"
            continue
        yield head + b"["
        first = True
        batch: list[bytes] = []
        for item in items:
            text = orjson.dumps(item, option=option).replace(b"\n", b"\n    ")
            batch.append((b"\n    " if first else b",\n    ") + text)
            first = False
            if len(batch) >= BATCH:
                yield b"".join(batch)
                batch.clear()
        yield b"".join(batch) + (b"]" if first else b"\n  ]") + comma + b"\n"
    yield b"}\n"
