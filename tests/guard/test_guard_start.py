"""What a guarded start keeps between runs: the shell parser's tables and the mechanisms that worked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from capsule.policy.rules import MOUNT, NETNS, SECCOMP
from capsule.stages import guard_probe
from capsule.stages.guard_probe import probe_mechanisms

SCRIPTS = [
    "a; b | c",
    "echo a && sudo rm -rf / || true",
    "x=$(curl -s file:///tmp/x.sh | sh); echo `id` <(ls)",
    "for i in 1 2; do if [ $i = 1 ]; then git push --force; fi; done",
    "sh -c 'bash -c \"rm -rf ~/x\"'",
    "cat <<EOF\nhello\nEOF\n",
]

# Prints what the parser is: its tables and what it makes of SCRIPTS, with or without the kept tables.
PROBE = """
import sys
if sys.argv[1] == "kept":
    from capsule.stages import shell_grammar
    bashlex = shell_grammar.load()
else:
    import bashlex
import bashlex.parser as p
y = p.yaccparser
print(repr(sorted(y.action.items())), repr(sorted(y.goto.items())))
print([(q.name, q.prod, q.func, q.len, q.str) for q in y.productions], sorted(y.defaulted_states.items()))
for script in sys.argv[2:]:
    print([t.dump() for t in bashlex.parse(script)])
"""


def _parser_says(how: str, cache: Path) -> str:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, how, *SCRIPTS], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def _tables(cache: Path) -> list[Path]:
    return sorted((cache / "capsule").glob("bashlex-*.tables"))


def test_kept_tables_make_the_same_parser(tmp_path: Path) -> None:
    fresh = _parser_says("fresh", tmp_path)
    assert _tables(tmp_path) == []
    assert _parser_says("kept", tmp_path) == fresh  # built, then kept
    [kept] = _tables(tmp_path)
    assert kept.stat().st_mode & 0o777 == 0o600
    assert _parser_says("kept", tmp_path) == fresh  # read from what was kept


@pytest.mark.parametrize("content", [b"", b"\x00garbage", b"\xe3\x03\x00\x00\x00", None])
def test_a_broken_table_file_is_rebuilt(tmp_path: Path, content: bytes | None) -> None:
    import marshal

    fresh = _parser_says("fresh", tmp_path)
    _parser_says("kept", tmp_path)
    [kept] = _tables(tmp_path)
    # None: well-formed data of the wrong shape (a production naming no function of the grammar)
    kept.write_bytes(
        content if content is not None else marshal.dumps((((0, "x", ("y",), "p_nope"),), {}, {}))
    )
    assert _parser_says("kept", tmp_path) == fresh
    assert _parser_says("kept", tmp_path) == fresh


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, list[str | None]]:
    """Each mechanism's probe replaced by one that answers what its list says next (and counts)."""
    monkeypatch.setenv("CAPSULE_HOME", str(tmp_path))
    monkeypatch.delenv(guard_probe.PRETEND_MISSING, raising=False)
    answers: dict[str, list[str | None]] = {m: [] for m in (SECCOMP, MOUNT, NETNS)}
    asked: dict[str, list[str | None]] = {m: [] for m in answers}

    def probe(mechanism: str) -> str | None:
        answer = answers[mechanism].pop(0)
        asked[mechanism].append(answer)
        return answer

    for mechanism in answers:
        monkeypatch.setitem(guard_probe._PROBES, mechanism, lambda m=mechanism: probe(m))
    guard_probe._probed.cache_clear()
    yield answers, asked  # type: ignore[misc]
    guard_probe._probed.cache_clear()


def _new_process() -> None:
    guard_probe._probed.cache_clear()  # what a new `capsule run` starts with


def test_a_success_is_kept_and_a_failure_is_not(probes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    answers, asked = probes
    answers[SECCOMP] += [None]
    answers[NETNS] += ["no netns", "no netns"]
    assert probe_mechanisms((SECCOMP, NETNS)) == {NETNS: "no netns"}
    _new_process()
    assert probe_mechanisms((SECCOMP, NETNS)) == {NETNS: "no netns"}
    assert asked == {SECCOMP: [None], MOUNT: [], NETNS: ["no netns", "no netns"]}
    assert (tmp_path / guard_probe.PROBES).stat().st_mode & 0o777 == 0o600


def test_doctor_probes_afresh(probes) -> None:  # type: ignore[no-untyped-def]
    answers, asked = probes
    answers[SECCOMP] += [None, "gone"]
    assert probe_mechanisms((SECCOMP,)) == {}
    assert probe_mechanisms((SECCOMP,), fresh=True) == {SECCOMP: "gone"}
    assert asked[SECCOMP] == [None, "gone"]


def test_a_changed_setting_or_program_is_probed_again(probes, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    answers, asked = probes
    setting = tmp_path / "max_user_namespaces"
    setting.write_text("100\n")
    monkeypatch.setattr(guard_probe, "_SYSCTLS", (str(setting),))
    bwrap = tmp_path / "bin" / "bwrap"
    bwrap.parent.mkdir()
    bwrap.write_text("#!/bin/sh\n")
    bwrap.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bwrap.parent}:{os.environ['PATH']}")
    answers[MOUNT] += [None, None, "bwrap fails"]
    assert probe_mechanisms((MOUNT,)) == {}
    _new_process()
    assert probe_mechanisms((MOUNT,)) == {}  # kept
    setting.write_text("0\n")  # user namespaces turned off
    _new_process()
    assert probe_mechanisms((MOUNT,)) == {}
    bwrap.write_text("#!/bin/sh\nexit 1\n")  # the program replaced
    _new_process()
    assert probe_mechanisms((MOUNT,)) == {MOUNT: "bwrap fails"}
    assert asked[MOUNT] == [None, None, "bwrap fails"]


def test_a_broken_probe_file_costs_a_probe(probes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    answers, asked = probes
    (tmp_path / guard_probe.PROBES).write_text('["not", "a dict"]')
    answers[SECCOMP] += [None]
    assert probe_mechanisms((SECCOMP,)) == {}
    assert asked[SECCOMP] == [None]
