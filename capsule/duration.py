"""The one duration parser (every duration Capsule reads: plans, capsule.toml, `--older-than`, the API)
and the one way reports show a duration.

`500ms`, `90s`, `15m`, `1.5h`, `1d`, `2w`, and compounds such as `1h30m` or `1d 12h`; a bare number, in
TOML or on the command line, is seconds. Negative and empty durations are errors.
"""

from __future__ import annotations

import re

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_PART = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d|w)\s*", re.IGNORECASE)
HINT = "write e.g. 500ms, 90s, 15m, 1h30m, 1d, 2w, or a number of seconds"


def parse_duration(value: object) -> float:
    """Seconds from a duration string or a number of seconds; ValueError (saying why) otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r} ({HINT})")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"negative duration: {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"not a duration: {value!r} ({HINT})")
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    total, at = 0.0, 0
    for part in _PART.finditer(text):
        if part.start() != at:
            break
        total += float(part[1]) * UNITS[part[2].lower()]
        at = part.end()
    if not text or at != len(text):
        raise ValueError(f"not a duration: {value!r} ({HINT})")
    return total


def format_duration(seconds: float | None) -> str:
    """A duration as the reports show it: `12 ms`, `1.72 s`, `3m 05s`, `2h 01m`; `?` when unknown."""
    if seconds is None:
        return "?"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
