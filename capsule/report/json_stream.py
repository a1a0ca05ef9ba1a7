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
        # One dumps per batch: orjson indents a list's items by two, re-indented by two more is the
        # four they have under the key; "[" and "\n  ]" are cut, batches joined with commas.
        first = True
        batch: list[Any] = []
        for item in items:
            batch.append(item)
            if len(batch) >= BATCH:
                yield (b"" if first else b",") + orjson.dumps(batch, option=option).replace(b"\n", b"\n  ")[
                    1:-4
                ]
                first = False
                batch.clear()
        if batch:
            yield (b"" if first else b",") + orjson.dumps(batch, option=option).replace(b"\n", b"\n  ")[1:-4]
            first = False
        yield (b"]" if first else b"\n  ]") + comma + b"\n"
    yield b"}\n"
