"""Redaction of secret-looking values: one row per shape, in argv lists, command strings, raw trace
bytes and events; what was run is kept but for the secret itself."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsule.events import SessionStarted
from capsule.events.env import SvcStarting
from capsule.events.process import ProcExec
from capsule.events.tasks import TaskStarted
from capsule.redact import MASK, RULES, redact_argv, redact_bytes, redact_event, redact_text
from tests.secret_shapes import SHAPES

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
    "PWD=/home/bob",
    "TOKENIZERS_PARALLELISM=false",
    "--bypass-cache=yes",
    "docker",
    "run",
    "-u",
    "1000:1000",
    "ssh-keygen",
    "https://example.test/path?q=1",
    "/etc/passwd",
]


def strace_line(argv: list[str]) -> bytes:
    """An execve line as strace prints it (quotes, backslashes and newlines escaped)."""
    quoted = ", ".join(
        '"' + a.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"' for a in argv
    )
    return f'123 1.5 execve("/bin/{argv[0]}", [{quoted}], 0x7ffd /* 3 vars */) = 0\n'.encode()


@pytest.mark.parametrize(("shape", "rule", "argv", "secret"), SHAPES, ids=[s[0] for s in SHAPES])
def test_each_shape_is_masked_and_nothing_else_changes(
    shape: str, rule: str, argv: list[str], secret: str
) -> None:
    """argv: exactly the secret becomes the mask; the rule named in the row is what does it."""
    assert redact_argv(argv) == tuple(a.replace(secret, MASK) for a in argv), shape
    only = next(r for r in RULES if r.name == rule)
    rendered = "[" + ", ".join('"' + a.replace("\n", "\\n").replace('"', '\\"') + '"' for a in argv) + "]"
    assert only.text.search(rendered), f"{rule} does not match {shape}"


@pytest.mark.parametrize(("shape", "rule", "argv", "secret"), SHAPES, ids=[s[0] for s in SHAPES])
def test_each_shape_is_masked_in_the_raw_trace(shape: str, rule: str, argv: list[str], secret: str) -> None:
    """The same shape in a raw strace line is masked there too, the line otherwise unchanged."""
    line = strace_line(argv)
    escaped = secret.replace("\n", "\\n").encode()
    assert redact_bytes(line) == line.replace(escaped, MASK.encode()), shape


@pytest.mark.parametrize(("shape", "rule", "argv", "secret"), SHAPES, ids=[s[0] for s in SHAPES])
def test_each_shape_is_masked_inside_a_shell_string(
    shape: str, rule: str, argv: list[str], secret: str
) -> None:
    """`sh -c 'CMD'`: the shape inside one script string is masked, the script's `;` kept."""
    script = " ".join(a if " " not in a else f"'{a}'" for a in argv) + "; true"
    out = redact_text(script)
    assert secret not in out, shape
    assert out.endswith("; true")


def test_every_rule_has_a_row() -> None:
    """The data file and the table agree: each rule is exercised by at least one shape (and ≥ 40 shapes)."""
    assert {r.name for r in RULES} == {s[1] for s in SHAPES}
    assert len(SHAPES) >= 40


def test_shell_operators_after_a_value_are_kept() -> None:
    """`true --token=X; true` keeps its `;` (it used to become `true --token=*** true`)."""
    assert redact_text("true --token=X; true") == f"true --token={MASK}; true"
    assert redact_text("a --token=X&&b|c") == f"a --token={MASK}&&b|c"
    assert redact_text("export TOKEN='abc'; run") == f"export TOKEN='{MASK}'; run"
    line = b'1 execve("/bin/sh", ["sh", "-c", "true --token=X; true"], 0x1 /* 1 vars */) = 0\n'
    assert redact_bytes(line) == line.replace(b"=X;", b"=***;")


def test_flag_and_value_pair_in_argv_and_trace() -> None:
    """`--password x`: the element after a secret-naming flag is masked, in a list and in a trace line."""
    assert redact_argv(["mysql", "--password", "hunter2", "db"]) == ("mysql", "--password", MASK, "db")
    line = b'1 execve("/bin/mysql", ["mysql", "--password", "hun\\"ter2", "db"], 0x1 /* 1 vars */) = 0\n'
    out = redact_bytes(line)
    assert b"hun" not in out
    assert b'"db"' in out


def test_harmless_arguments_are_kept() -> None:
    """Ordinary arguments, including ones that merely contain `auth`, `token` or `key` words, pass untouched."""
    assert redact_argv(HARMLESS) == tuple(HARMLESS)
    assert redact_bytes(strace_line(HARMLESS)) == strace_line(HARMLESS)


def test_argv_elements_keep_their_escapes() -> None:
    """Quotes, backslashes, tabs and control characters survive the rendering round trip."""
    argv = ['a"b', "c\\d", "e\tf\x01", "--token=s\\x", "ünï"]
    assert redact_argv(argv) == ('a"b', "c\\d", "e\tf\x01", f"--token={MASK}", "ünï")


def test_redaction_is_idempotent() -> None:
    """Redacting twice changes nothing more: replay of a redacted trace re-derives the same events."""
    for _shape, _rule, argv, _secret in SHAPES:
        once = redact_bytes(strace_line(argv))
        assert redact_bytes(once) == once
        assert redact_argv(redact_argv(argv)) == redact_argv(argv)


def test_events_not_from_the_trace_are_redacted() -> None:
    """Headers, task and service events carry argv from plans and configs: every string is redacted."""
    header = SessionStarted(
        ts=1.0, capsule_version="x", session_id="s", session_kind="run", argv=("curl", "-u", "a:pw1")
    )
    assert redact_event(header).argv == ("curl", "-u", f"a:{MASK}")  # type: ignore[attr-defined]
    svc = SvcStarting(ts=1.0, name="api", argv=("srv", "--token=tk1", "--port", "1"), cwd="/x")
    assert redact_event(svc).argv == ("srv", f"--token={MASK}", "--port", "1")  # type: ignore[attr-defined]
    task = TaskStarted(
        ts=1.0, task="t", attempt=1, pid=1, started=1.0, pgid=1, argv=("sh", "-c", "x --password p; y")
    )
    assert redact_event(task).argv == ("sh", "-c", f"x --password {MASK}; y")  # type: ignore[attr-defined]
    clean = SvcStarting(ts=1.0, name="api", argv=("srv",), cwd="/x")
    assert redact_event(clean) is clean


def test_trace_events_are_left_to_the_trace() -> None:
    """Events parsed from the (already redacted) trace are passed through untouched, for speed."""
    event = ProcExec(ts=1.0, pid=1, path="/bin/x", argv=("x", "--token=raw"), ok=True)
    assert redact_event(event) is event


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_and_keep_line_count(data: bytes) -> None:
    """Any bytes redact without error, and the number of lines never changes."""
    assert redact_bytes(data).count(b"\n") == data.count(b"\n")


@given(st.lists(st.text(max_size=40), max_size=6))
def test_arbitrary_argv_keeps_its_length(argv: list[str]) -> None:
    """Any argv redacts to one of the same length."""
    assert len(redact_argv(argv)) == len(argv)


_NEAR_SECRET = st.lists(
    st.sampled_from(
        [
            *(b"TOKEN", b"token", b"Pass", b"pAsSwOrD", b"_key", b"Api-Key", b"Dsn", b"COOKIE", b"auth"),
            *(
                b"=",
                b":",
                b" ",
                b"\t",
                b'"',
                b"'",
                b"\\",
                b"abc",
                b"\xc3\x89",
                b"\xff",
                b"-",
                b".",
                b"_",
                b"K",
            ),
        ]
    ),
    max_size=24,
).map(b"".join)


@given(_NEAR_SECRET)
def test_a_rule_reads_a_lowered_line_as_the_line(line: bytes) -> None:
    """A rule's `need` read over the lowered line (what redact_bytes has at hand) lets through exactly
    the lines it lets through read over the line itself: the same line comes out, masked or not."""
    for rule in RULES:
        assert rule.mask_raw(line, line.lower()) == rule.mask_raw(line), rule.name
