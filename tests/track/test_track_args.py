"""Decoding strace argument text: splitting, strings with escapes, truncated strings and arrays."""

from __future__ import annotations

import pytest

from capsule.track import decode_array, decode_string, split_args


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '"/bin/echo", ["a, b", "c"], 0x7ffe /* 35 vars */',
            ['"/bin/echo"', '["a, b", "c"]', "0x7ffe /* 35 vars */"],
        ),
        (
            "{flags=CLONE_VM|CLONE_THREAD, exit_signal=0}, 88",
            ["{flags=CLONE_VM|CLONE_THREAD, exit_signal=0}", "88"],
        ),
        ('"q\\"uote, x", 1', ['"q\\"uote, x"', "1"]),
        ("", []),
        ('AT_FDCWD, "/x"', ["AT_FDCWD", '"/x"']),
    ],
)
def test_split_args(text: str, expected: list[str]) -> None:
    """Top-level commas split; commas inside quotes, brackets and braces do not."""
    assert split_args(text) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ('"plain"', ("plain", False)),
        ('"tab\\there\\nnl"', ("tab\there\nnl", False)),
        ('"q\\"uote back\\\\slash"', ('q"uote back\\slash', False)),
        ('"\\1ctl"', ("\x01ctl", False)),
        ('"h\\303\\251llo"', ("héllo", False)),
        ('"\\x41\\x42"', ("AB", False)),
        ('"\\377bad"', ("\ufffdbad", False)),
        ('"abcdefgh"...', ("abcdefgh", True)),
        ("NULL", None),
        ("0x7ffe", None),
    ],
)
def test_decode_string(token: str, expected: tuple[str, bool] | None) -> None:
    """C escapes, octal and hex bytes decode as UTF-8 (invalid bytes become U+FFFD); `..."` is truncation."""
    assert decode_string(token) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ('["a", "b"]', (("a", "b"), False)),
        ('["/bin/ech"..., "abcdefgh"..., "2", ...]', (("/bin/ech", "abcdefgh", "2"), True)),
        ("[/* 5 vars */]", ((), True)),
        ("[]", ((), False)),
        ("NULL", None),
    ],
)
def test_decode_array(token: str, expected: tuple[tuple[str, ...], bool] | None) -> None:
    """String arrays, truncated arrays and elided arrays."""
    assert decode_array(token) == expected
