"""The strace line parser: sans-I/O, feed bytes and get records (see parser.py for the theory).

Its names load on first use (PEP 562): the second process of a split import imports `capsule.parse.wanted`
and `capsule.parse.grammar` only, without the parser's records.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
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


def __getattr__(name: str) -> object:
    if name in ("NEED_DATA", "StraceParser"):
        from capsule.parse import parser as home
    elif name in __all__:
        from capsule.parse import records as home  # type: ignore[no-redef]
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(home, name)
    globals()[name] = value
    return value


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
