"""The tracker: parser records -> process events (tree, execs, exits, signals, files, sockets)."""

from __future__ import annotations

from capsule.track.args import decode_array, decode_string, split_args
from capsule.track.tracker import Level, Tracker

__all__ = ["Level", "Tracker", "decode_array", "decode_string", "split_args"]
