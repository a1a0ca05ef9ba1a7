"""What can go wrong reading a session, as a tree:

CodecError
├── MalformedLine      a line that is not a JSON object of a known shape
│   └── UnknownKind    a `kind` this reader has never heard of
└── NewerVersion       a format or kind version newer than this reader knows (upgrade capsule)
"""

from __future__ import annotations


class CodecError(Exception):
    """A session line could not be decoded."""


class MalformedLine(CodecError):
    """Not a JSON object with `kind`, `v`, `seq`, `ts` and the fields of its kind."""


class UnknownKind(MalformedLine):
    """The line names a kind this reader does not know."""


class NewerVersion(CodecError):
    """Written by a newer capsule: refuse rather than misread."""
