"""The tracker: parser records -> process events (tree, execs, exits, signals, files, sockets).

Its names load on first use (PEP 562): `capsule.track.levels` alone loads no event classes.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from capsule.track.args import decode_array, decode_string, split_args
    from capsule.track.tracker import Level, Tracker


def __getattr__(name: str) -> object:
    if name in ("Level", "Tracker"):
        from capsule.track import tracker as home
    elif name in ("decode_array", "decode_string", "split_args"):
        from capsule.track import args as home  # type: ignore[no-redef]
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(home, name)
    globals()[name] = value
    return value


__all__ = ["Level", "Tracker", "decode_array", "decode_string", "split_args"]
