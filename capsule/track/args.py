"""Decode strace's argument text: top-level splitting, quoted strings with C escapes, string arrays.

strace prints bytes outside printable ASCII as octal (`\\303\\251`) or, with `-x`, hex (`\\xc3`) escapes; a
string cut by `-s` ends `"..."...` and an array cut by `-s` ends `, ...]`. Decoded bytes are read as UTF-8
with invalid sequences replaced by U+FFFD (`bytes.decode("utf-8", "replace")`): a `\\xff` in the text
would be indistinguishable from an argument that really is backslash, x, f, f.
"""

from __future__ import annotations

import re

_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_SIMPLE = {"n": 10, "t": 9, "r": 13, "v": 11, "f": 12, "a": 7, "b": 8, "e": 27}
_OPEN = {"[": "]", "{": "}", "(": ")"}


# One token of argument text: a quoted string (to its closing quote, or the end if strace cut it), a
# comment, a bracket, a comma, or a run of anything else. Walking tokens, not characters, keeps the
# loop in C for the long strings of an argv (19 us -> a few us per execve).
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|/\*.*?(?:\*/|\Z)|[\[{(\]})]|,|[^",\[\]{}()/]+|/', re.DOTALL)


def split_args(text: str) -> list[str]:
    """Split `a, "b, c", [d, e], {f=g}` at top-level commas, minding quotes, brackets and comments."""
    out: list[str] = []
    depth = 0
    start = 0
    for m in _TOKEN.finditer(text):
        c = text[m.start()]
        if c in "[{(":
            depth += 1
        elif c in "]})":
            depth = max(depth - 1, 0)
        elif c == "," and depth == 0:
            out.append(text[start : m.start()].strip())
            start = m.end()
    last = text[start:].strip()
    if last or out:
        out.append(last)
    return out


# `"/bin/ls", ["ls", "-l"], 0x7ffd /* 35 vars */` -- the common head of an execve's arguments: a path and an
# argv of plain strings (no backslash, no cut), then the end or a comma.
_PLAIN_EXEC = re.compile(r'"([^"\\]*)", \[((?:"[^"\\]*", )*"[^"\\]*")?\](?=, |\Z)')
_PLAIN_ITEM = re.compile(r'"([^"\\]*)"')


def exec_head(text: str) -> tuple[str, tuple[str, ...]] | None:
    """The path and argv of execve arguments whose first two are a plain string and a plain, whole
    array: what `split_args`, `decode_string` and `decode_array` make of them (argv not truncated);
    None for any other shape (escapes, a cut string or array, `[/* 3 vars */]`...)."""
    m = _PLAIN_EXEC.match(text)
    if m is None:
        return None
    items = m[2]
    return m[1], tuple(_PLAIN_ITEM.findall(items)) if items is not None else ()


def _unescape(body: str) -> str:
    raw = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(body):
        raw += body[pos : m.start()].encode("utf-8", "replace")
        esc = m[1]
        first = esc[0]
        if first == "x" and len(esc) > 1:
            raw.append(int(esc[1:], 16))
        elif first in "01234567":
            raw.append(int(esc, 8) & 0xFF)
        elif first in _SIMPLE:
            raw.append(_SIMPLE[first])
        else:
            raw += esc.encode("utf-8", "replace")
        pos = m.end()
    raw += body[pos:].encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def decode_string(token: str) -> tuple[str, bool] | None:
    """`"a\\tb"` -> ("a\\tb", False); `"abc"...` -> ("abc", True); None when `token` is not a string."""
    token = token.strip()
    truncated = token.endswith('"...')
    if truncated:
        token = token[:-3]
    if len(token) < 2 or token[0] != '"' or token[-1] != '"':
        return None
    body = token[1:-1]
    return (_unescape(body) if "\\" in body else body), truncated


def decode_array(token: str) -> tuple[tuple[str, ...], bool] | None:
    """`["a", "b", ...]` -> (("a", "b"), True); `[/* 5 vars */]` -> ((), True); None if not an array."""
    token = token.strip()
    if len(token) < 2 or token[0] != "[" or token[-1] != "]":
        return None
    items: list[str] = []
    truncated = False
    for part in split_args(token[1:-1]):
        if part == "...":
            truncated = True
            continue
        if part.startswith("/*"):  # `[/* 35 vars */]`: strace elided the whole array
            truncated = True
            continue
        decoded = decode_string(part)
        if decoded is None:
            items.append(part)
            continue
        value, cut = decoded
        items.append(value)
        truncated = truncated or cut
    return tuple(items), truncated
