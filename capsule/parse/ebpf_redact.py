r"""Redaction of an eBPF trace before it reaches disk: the same rules as strace's, applied per exec.

strace prints an argv on one line, so redacting the line redacts the argv (`--password x` included).
The eBPF program prints an exec in pieces — `E` then one `A` line an argument, the new program's argv
area as `V` hex pieces, then `S` or `X` — and hex hides a secret from any text rule. So the lines of an
exec are held until it ends, its argv is rebuilt and redacted with `redact_argv` (which knows flag
pairs), and the lines are written again with the redacted text (the V pieces re-encoded, their size
updated). Every other line goes through `redact_bytes` like strace's. Held lines keep their order
among themselves; other lines may pass them, which the tracker tolerates (it parks records of a
process until that process is known, and argv lines follow their exec wherever it is).
"""

from __future__ import annotations

import json
from typing import Final

import orjson

from capsule.redact import redact_argv, redact_bytes

PIECE: Final = 199  # bytes per V line, as the program reads them


class EbpfRedactor:
    """`feed(chunk) -> chunk` over whole lines (the stage aligns them); `close()` flushes the rest."""

    def __init__(self) -> None:
        self._held: dict[int, list[tuple[str, str]]] = {}  # tid or pid -> (tag, data) of an exec so far
        self._buffer = b""

    def feed(self, data: bytes) -> bytes:
        data = self._buffer + data
        cut = data.rfind(b"\n") + 1
        self._buffer = data[cut:]
        out: list[bytes] = []
        for line in data[:cut].splitlines(keepends=True):
            self._line(line, out)
        return b"".join(out)

    def close(self) -> bytes:
        out: list[bytes] = []
        if self._buffer:
            out.append(redact_bytes(self._buffer))
            self._buffer = b""
        for key in list(self._held):
            out += self._flush(key)
        return b"".join(out)

    def _line(self, line: bytes, out: list[bytes]) -> None:
        data = _printf_data(line)
        if data is None:
            out.append(redact_bytes(line))
            return
        tag, _, rest = data.partition(" ")
        fields = rest.split(" ")
        try:
            if tag == "E":
                key = int(fields[1])
                out += self._flush(key)  # an exec that never ended (should not happen): let it out
                self._held[key] = [(tag, data)]
                return
            if tag in ("A", "M") and int(fields[0]) in self._held:
                self._held[int(fields[0])].append((tag, data))
                return
            if tag == "V":
                self._held.setdefault(-int(fields[0]), []).append((tag, data))
                return
            if tag == "X":
                out += self._flush(int(fields[1]))
            elif tag == "S":
                out += self._flush(int(fields[2]))  # the exec'ing thread's E and A lines
                out += self._flush(-int(fields[1]))  # the new program's argv area
        except (ValueError, IndexError):
            pass
        out.append(redact_bytes(line))

    def _flush(self, key: int) -> list[bytes]:
        held = self._held.pop(key, None)
        if not held:
            return []
        if key < 0:
            return _redact_area(held)
        args = [d.split(" ", 3)[3] if len(d.split(" ", 3)) == 4 else "" for t, d in held if t == "A"]
        redacted = iter(redact_argv([a.rstrip("\n") for a in args]))
        lines: list[bytes] = []
        for tag, data in held:
            if tag == "A":
                head = " ".join(data.split(" ", 3)[:3])
                data = f"{head} {next(redacted)}\n"
            else:
                data = redact_bytes(data.encode()).decode("utf-8", "replace")
            lines.append(_printf_line(data))
        return lines


def _redact_area(held: list[tuple[str, str]]) -> list[bytes]:
    """V pieces of one argv area: decoded, redacted as an argv, re-encoded with the new size."""
    first = held[0][1].split(" ")
    pid = first[1]
    area = bytearray()
    for _tag, data in held:
        hexed = data.rstrip("\n").split(" ", 4)[4] if data.count(" ") >= 4 else ""
        try:
            area += bytes.fromhex(hexed.replace("\\x", ""))
        except ValueError:
            return [_printf_line(redact_bytes(d.encode()).decode("utf-8", "replace")) for _t, d in held]
    try:
        size = int(first[2])
    except (ValueError, IndexError):
        size = len(area)
    whole = len(area) >= size
    parts = bytes(area).split(b"\0")
    if area.endswith(b"\0"):
        parts.pop()
    # Elements that are not UTF-8 are redacted as text and written back as the bytes of that text:
    # the tracker decodes them with U+FFFD either way.
    texts = [p.decode("utf-8", "surrogateescape") for p in parts]
    redacted = [t.encode("utf-8", "surrogateescape") for t in redact_argv(texts)]
    new = b"".join(r + b"\0" for r in redacted)
    if not whole and not area.endswith(b"\0"):
        new = new[:-1]  # the last element was cut: it stays cut
    new_size = len(new) + (size - len(area) if not whole else 0)
    return [
        _printf_line(f"V {pid} {new_size} {o} " + "".join(f"\\x{b:02x}" for b in new[o : o + PIECE]) + "\n")
        for o in range(0, len(new), PIECE)
    ]


def _printf_data(line: bytes) -> str | None:
    if b'"printf"' not in line:
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:  # bytes that are not UTF-8, copied by the recorder as they are
            obj = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            return None
    if not isinstance(obj, dict) or obj.get("type") != "printf":
        return None
    data = obj.get("data")
    return data if isinstance(data, str) else None


def _printf_line(data: str) -> bytes:
    return orjson.dumps({"type": "printf", "data": data}, option=orjson.OPT_APPEND_NEWLINE)
