"""split_args walks tokens at C speed; it must split exactly as the plain character loop it replaced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from capsule.track.args import decode_array, decode_string, exec_head, split_args


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


EXEC_ALPHABET = st.sampled_from(
    [*list('ab ,"\\[]{}()/*x0.'), '", "', '"/bin/sh", [', "], ", "/*", "*/", "..."]
)


def _agrees(text: str) -> None:
    head = exec_head(text)
    if head is None:
        return
    parts = split_args(text)
    path = decode_string(parts[0])
    argv = decode_array(parts[1])
    assert path is not None
    assert argv is not None
    assert head == (path[0], argv[0])
    assert argv[1] is False


@given(st.lists(EXEC_ALPHABET, max_size=30).map("".join))
def test_exec_head_decodes_as_the_general_path(text: str) -> None:
    """The execve fast path gives the path and argv the general decoding gives, or stands aside."""
    _agrees(text)


def test_exec_head_takes_the_common_shape() -> None:
    text = '"/usr/bin/ls", ["ls", "-l", "a, [b]"], 0x7ffd2efff448 /* 35 vars */'
    assert exec_head(text) == ("/usr/bin/ls", ("ls", "-l", "a, [b]"))
    assert exec_head('"/x", []') == ("/x", ())
    assert exec_head('"/x", ["a\\n"], 0x1') is None  # an escape: the general path decodes it
    assert exec_head('"/x", ["a"...], 0x1') is None


_TEXT = st.text(st.sampled_from(list('ab ,[](){}/*."\\\n')), max_size=8)


@given(_TEXT, st.lists(_TEXT, max_size=4), st.sampled_from(["", ", 0x1 /* 3 vars */", ",x", "x", ", [", "]"]))
def test_exec_head_on_execve_shapes(path: str, argv: list[str], rest: str) -> None:
    """Arguments shaped like execve's (any characters inside the strings): the fast path agrees."""
    text = f'"{path}", [' + ", ".join(f'"{a}"' for a in argv) + "]" + rest
    _agrees(text)
    plain = not any(c in s for s in (path, *argv) for c in '"\\')
    if plain and rest[:2] in ("", ", "):
        assert exec_head(text) == (path, tuple(argv))
