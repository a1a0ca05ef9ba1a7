"""split_args walks tokens at C speed; it must split exactly as the plain character loop it replaced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from capsule.track.args import split_args


def _reference(text: str) -> list[str]:
    """The original character-by-character splitter: the oracle."""
    out: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c in "[{(":
            depth += 1
        elif c in "]})":
            depth = max(depth - 1, 0)
        elif c == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 1
        elif c == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
        i += 1
    last = text[start:].strip()
    if last or out:
        out.append(last)
    return out


ARG_ALPHABET = st.sampled_from([*list('ab ,"\\[]{}()/*x0.'), "/*", "*/", '\\"', "..."])


@given(st.lists(ARG_ALPHABET, max_size=40).map("".join))
def test_splits_like_the_character_loop(text: str) -> None:
    """Any text built from the characters that matter splits as the reference loop splits it."""
    assert split_args(text) == _reference(text)


def test_execve_arguments() -> None:
    """A real execve argument list: path, argv array, environment comment."""
    text = '"/bin/sh", ["sh", "-c", "echo \\"a, b\\" [x]"], 0x7ffd2efff448 /* 35 vars */'
    assert split_args(text) == [
        '"/bin/sh"',
        '["sh", "-c", "echo \\"a, b\\" [x]"]',
        "0x7ffd2efff448 /* 35 vars */",
    ]
