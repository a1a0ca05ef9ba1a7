"""Redaction of secret-looking values in raw trace bytes and argv lists."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsule.redact import MASK, redact_argv, redact_bytes, redact_text

SECRET_ARGS = [
    ("sk-ant-api03-AAAABBBBCCCCDDDDEEEE", "sk-ant-api03-AAAABBBBCCCCDDDDEEEE"),
    ("--token=tok-123", "tok-123"),
    ("--api-key=k-456", "k-456"),
    ("Authorization: Bearer abc.def", "abc.def"),
    ("authorization: token zyx987", "zyx987"),
    ("GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz", "ghp_abcdefghijklmnopqrstuvwxyz"),
    ("db_password=hunter2", "hunter2"),
    ("https://bob:pa55w0rd@example.com/x", "pa55w0rd"),
    ("AKIAABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOP"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig_part", "eyJzdWIiOiIxMjM0NTY3ODkwIn0"),
    ("echo '--token=abc123' x", "abc123"),
]

HARMLESS = [
    "ls",
    "-la",
    "--author=Bob",
    "author.txt",
    "git",
    "commit",
    "-m",
    "fix token parsing",
    "KEY=value",
]


@pytest.mark.parametrize(("arg", "secret"), SECRET_ARGS)
def test_secret_is_masked_in_text_and_trace_bytes(arg: str, secret: str) -> None:
    """Each secret shape is masked in an argv element and in a strace line holding it."""
    assert secret not in redact_text(arg)
    assert MASK in redact_text(arg)
    line = f'123 1.5 execve("/bin/x", ["x", "{arg}"], 0x7ffd /* 3 vars */) = 0\n'.encode()
    assert secret.encode() not in redact_bytes(line)


def test_flag_and_value_pair_in_argv_and_trace() -> None:
    """`--password x`: the element after a secret-naming flag is masked, in a list and in a trace line."""
    assert redact_argv(["mysql", "--password", "hunter2", "db"]) == ("mysql", "--password", MASK, "db")
    line = b'1 execve("/bin/mysql", ["mysql", "--password", "hun\\"ter2", "db"], 0x1 /* 1 vars */) = 0\n'
    out = redact_bytes(line)
    assert b"hun" not in out
    assert b'"db"' in out


def test_harmless_arguments_are_kept() -> None:
    """Ordinary arguments, including ones that merely contain `auth` or `token` words, pass untouched."""
    assert redact_argv(HARMLESS) == tuple(HARMLESS)


def test_redaction_is_idempotent() -> None:
    """Redacting twice changes nothing more: replay of a redacted trace re-derives the same events."""
    line = b'1 execve("/bin/x", ["x", "--token=abc", "--password", "p", "GITHUB_TOKEN=ghp_aaaaaaaaaaaaaaaaaaaaaaaa"]) = 0\n'
    once = redact_bytes(line)
    assert redact_bytes(once) == once


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_and_keep_line_count(data: bytes) -> None:
    """Any bytes redact without error, and the number of lines never changes."""
    assert redact_bytes(data).count(b"\n") == data.count(b"\n")
