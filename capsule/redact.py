"""Redaction of secret-looking values, in raw strace bytes and in argv lists alike.

strace output carries argv (and with -v the environment). Capsule redacts before anything reaches the
session directory: the raw trace is redacted line by line before it is written or parsed, so events
derived from it, and a replay of it, agree. The same patterns run over an argv list (the header's argv).
A redacted value becomes `***`, which needs no escaping inside a strace-quoted string.
"""

from __future__ import annotations

import re

MASK = "***"

# Words that make a flag or a variable name secret: `--api-key`, `GITHUB_TOKEN`, `db_password`.
_SECRET_NAME = r"(?:token|secret|passw(?:or)?d|passwd|api[-_]?key|apikey|access[-_]?key|private[-_]?key|credentials?|auth(?:orization)?(?![a-zA-Z]))"  # noqa: S105 (a pattern, not a password)

# Token shapes that are secrets wherever they stand, each with the provider it belongs to.
_TOKEN_SHAPES = (
    r"sk-[A-Za-z0-9_\-]{16,}",  # OpenAI / Anthropic API keys (sk-..., sk-ant-..., sk-proj-...)
    r"gh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{20,}",  # GitHub fine-grained tokens
    r"glpat-[A-Za-z0-9_\-]{20,}",  # GitLab personal access tokens
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack tokens
    r"AKIA[0-9A-Z]{16}",  # AWS access key ids
    r"AIza[0-9A-Za-z_\-]{35}",  # Google API keys
    r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+",  # JWTs
)

# A value runs to the end of the quoted string (either quote), a space, a comma or a backslash escape.
_VALUE = r"[^\"'\s\\,]+"

_PATTERNS_TEXT: tuple[tuple[str, str], ...] = (
    # `Authorization: Bearer abc`, `authorization: token abc`, `Authorization: Basic abc`
    (r"(?i)(authorization\s*[:=]\s*(?:bearer|basic|token|bot)?\s*)" + _VALUE, r"\1" + MASK),
    # a bare `Bearer abc` (e.g. curl -H "X: Bearer abc")
    (r"(?i)(\bbearer\s+)" + _VALUE, r"\1" + MASK),
    # `--token=abc`, `--api-key=abc`, `-password=abc`
    (r"(?i)(-{1,2}[\w\-]*" + _SECRET_NAME + r"[\w\-]*=)" + _VALUE, r"\1" + MASK),
    # `GITHUB_TOKEN=abc`, `db_password=abc` (an environment assignment or a config key)
    (r"(?i)(\b[\w\-]*" + _SECRET_NAME + r"[\w\-]*=)" + _VALUE, r"\1" + MASK),
    # credentials in a URL: `https://user:secret@host`
    (r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s\"]+:)[^@/\s\"]+(@)", r"\1" + MASK + r"\2"),
    *((r"\b" + shape, MASK) for shape in _TOKEN_SHAPES),
)

# In strace's argv arrays a flag and its value are neighbours: `"--password", "hunter2"`.
_PAIR_IN_TRACE = re.compile(
    rb'(?i)("-{1,2}[\w\-]*' + _SECRET_NAME.encode() + rb'[\w\-]*", ")((?:[^"\\]|\\.)*)(")'
)
_FLAG_BEFORE_VALUE = re.compile(r"(?i)^-{1,2}[\w\-]*" + _SECRET_NAME + r"[\w\-]*$")

_TEXT = tuple((re.compile(pattern), repl) for pattern, repl in _PATTERNS_TEXT)
_BYTES = tuple((re.compile(pattern.encode()), repl.encode()) for pattern, repl in _PATTERNS_TEXT)

# Literals (lowercase) at least one of which every pattern above needs: lines without any skip the
# patterns. A lowercased copy and `bytes.find` scan ~70 MB/s here; an equivalent case-insensitive regex
# alternation scanned 6 MB/s and was 73% of `capsule import`.
_HINTS = (
    b"token",
    b"secret",
    b"passw",
    b"key",
    b"credential",
    b"auth",
    b"bearer",
    b"://",  # names, URLs
    b"sk-",
    b"gh",
    b"glpat-",
    b"xox",
    b"akia",
    b"aiza",
    b"eyj",  # token shapes (`gh`: ghp_… github_pat_)
)
# Each hint is one pass over the chunk (~30 ms per 42 MB here), so families share one: `key` stands
# for api_key, access-key, privatekey…; `gh` flags a few thousand lines of a big trace for nothing,
# which costs less than the five passes it saves.


def _flagged_lines(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every line holding a hint, in order, each once; `end` includes the newline."""
    lowered = data.lower()
    starts: set[int] = set()
    for hint in _HINTS:
        at = lowered.find(hint)
        while at >= 0:
            if hint == b"gh" and lowered[at + 3 : at + 4] != b"_" and lowered[at : at + 11] != b"github_pat_":
                at = lowered.find(hint, at + 2)  # `gh` alone is common; ghp_, gho_… and github_pat_ are not
                continue
            starts.add(lowered.rfind(b"\n", 0, at) + 1)
            line_end = lowered.find(b"\n", at)
            if line_end < 0:
                break
            at = lowered.find(hint, line_end)
    spans = []
    for start in sorted(starts):
        end = data.find(b"\n", start)
        spans.append((start, len(data) if end < 0 else end + 1))
    return spans


def redact_bytes(data: bytes) -> bytes:
    """Redact a chunk of raw trace (whole lines; patterns never span a newline).

    Only lines holding a hint go through the patterns: a chunk of a full-syscall trace has a few in
    thousands.
    """
    spans = _flagged_lines(data)
    if not spans:
        return data
    pieces: list[bytes] = []
    done = 0
    for start, end in spans:
        pieces.append(data[done:start])
        pieces.append(_redact_line(data[start:end]))
        done = end
    pieces.append(data[done:])
    return b"".join(pieces)


def _redact_line(line: bytes) -> bytes:
    line = _PAIR_IN_TRACE.sub(rb"\1" + MASK.encode() + rb"\3", line)
    for pattern, repl in _BYTES:
        line = pattern.sub(repl, line)
    return line


def redact_text(text: str) -> str:
    """Redact one string (an argv element, a command line)."""
    for pattern, repl in _TEXT:
        text = pattern.sub(repl, text)
    return text


def redact_argv(argv: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Redact an argv: every element, and the element after a secret-naming flag (`--password x`)."""
    out: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next:
            out.append(MASK)
            mask_next = False
            continue
        out.append(redact_text(arg))
        mask_next = bool(_FLAG_BEFORE_VALUE.match(arg))
    return tuple(out)
