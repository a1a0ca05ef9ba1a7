"""Capsule: a flight recorder and supervisor for AI coding agents and the commands they run.

`capsule/` is the functional core: it decides, and never does I/O. The trio shell lives in `stages/`.
The Python API is exported here lazily (`capsule --help` must not pay for it):

    import capsule
    session = capsule.record(["make", "test"])        # or capsule.open("latest")
    assert session.ran("pytest *") and not session.failures
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~5 ms of every command)
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from capsule.api.session import Process, Session, SessionInfo, record
    from capsule.api.session import list_sessions as sessions
    from capsule.api.session import open_session as open

__all__ = ["Process", "Session", "SessionInfo", "__version__", "open", "record", "sessions"]

_LAZY = {
    "open": "open_session",
    "sessions": "list_sessions",
    "record": "record",
    "Session": "Session",
    "SessionInfo": "SessionInfo",
    "Process": "Process",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from capsule.api import session

        return getattr(session, _LAZY[name])
    raise AttributeError(f"module 'capsule' has no attribute {name!r}")
