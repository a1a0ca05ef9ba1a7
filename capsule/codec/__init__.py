"""The edge between records and bytes: JSONL lines via orjson (cattrs for any field type the line format
does not spell), with upcasters for old versions."""

from __future__ import annotations

from capsule.codec.errors import CodecError, MalformedLine, NewerVersion, UnknownKind
from capsule.codec.lines import (
    LineDecoder,
    converter,
    decode_line,
    encode_line,
    encode_lines,
    from_dict,
    to_dict,
)

__all__ = [
    "CodecError",
    "LineDecoder",
    "MalformedLine",
    "NewerVersion",
    "UnknownKind",
    "converter",
    "decode_line",
    "encode_line",
    "encode_lines",
    "from_dict",
    "to_dict",
]
