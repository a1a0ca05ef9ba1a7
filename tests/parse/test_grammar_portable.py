"""Capsule's regexes mean the same on every Python it supports: no possessive repeats (`*+`, `++`, `?+`,
`{m,n}+`) and no atomic groups (`(?>…)`), which Python 3.11.2 — Debian 12's own python3, the README's
quick start — matches wrongly in some patterns (the line choice of capsule/parse/wanted.py lost a third
of a trace's lines there, so a recording's processes had no parent and no exit), right from a later 3.11
release. Checked on the parsed patterns, so a string that merely contains `+++` is no false alarm."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator

import capsule
from capsule.parse import grammar

_parser = re._parser  # type: ignore[attr-defined]
_constants = re._constants  # type: ignore[attr-defined]
FORBIDDEN = {_constants.POSSESSIVE_REPEAT, _constants.ATOMIC_GROUP}


def _ops(parsed: object) -> Iterator[object]:
    for op, av in parsed:  # type: ignore[attr-defined]
        yield op
        for part in av if isinstance(av, (list, tuple)) else ():
            if isinstance(part, _parser.SubPattern):
                yield from _ops(part)
            elif isinstance(part, (list, tuple)):
                for sub in part:
                    if isinstance(sub, _parser.SubPattern):
                        yield from _ops(sub)


def _patterns() -> Iterator[tuple[str, re.Pattern]]:  # type: ignore[type-arg]
    for info in pkgutil.walk_packages(capsule.__path__, "capsule."):
        if info.name == "capsule.__main__" or info.name.startswith(
            ("capsule.mcp", "capsule.stages.executors.ray")
        ):
            continue  # optional dependencies; no patterns of the trace path there
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern):
                yield f"{info.name}.{name}", value
    keep = frozenset({"execve", "clone", "wait4", "exit_group"})
    yield "grammar.wanted_runs", grammar.wanted_runs(keep, frozenset({"SIGCHLD"}))
    yield "grammar.wanted_lines", grammar.wanted_lines(keep, frozenset({"SIGCHLD"}))


def test_no_regex_uses_possessive_repeats_or_atomic_groups() -> None:
    found = list(_patterns())
    assert len(found) > 20  # the walk did reach the grammar
    bad = []
    for name, pattern in found:
        source = pattern.pattern
        parsed = _parser.parse(source.decode("latin-1") if isinstance(source, bytes) else source)
        if FORBIDDEN & set(_ops(parsed)):
            bad.append(name)
    assert bad == []


def test_the_line_choice_keeps_every_line_of_a_run() -> None:
    """What 3.11.2 got wrong: a run of one pid's unwanted calls, then its wanted ones."""
    keep = frozenset({"execve", "exit_group"})
    rx = grammar.wanted_runs(keep)
    lines = [b"7 1795239818.000001 read(3, x) = 1"] * 3 + [
        b'7 1795239818.000002 execve("/bin/true", ["true"], 0x1 /* 1 var */) = 0',
        b"8 1795239818.000003 read(3, x) = 1",
        b"7 1795239818.000004 exit_group(0) = ?",
    ]
    data = b"\n" + b"\n".join(lines)
    wanted = [m[2] for m in rx.finditer(data) if m[2] is not None]
    assert wanted == [lines[3], lines[5]]
    runs = [m[1] for m in rx.finditer(data) if m[1] is not None]
    assert runs == [b"7", b"8"]
