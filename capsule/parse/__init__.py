"""The strace line parser: sans-I/O, feed bytes and get records (see parser.py for the theory)."""

from __future__ import annotations

from capsule.parse.parser import NEED_DATA, StraceParser
from capsule.parse.records import (
    Attached,
    Exited,
    Killed,
    Message,
    Record,
    Signal,
    Superseded,
    Syscall,
    SyscallState,
    Unparsed,
)

__all__ = [
    "NEED_DATA",
    "Attached",
    "Exited",
    "Killed",
    "Message",
    "Record",
    "Signal",
    "StraceParser",
    "Superseded",
    "Syscall",
    "SyscallState",
    "Unparsed",
]
