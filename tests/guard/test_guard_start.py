"""What a guarded start keeps between runs: the mechanisms that worked."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from capsule.policy.rules import MOUNT, NETNS, SECCOMP
from capsule.stages import guard_probe
from capsule.stages.guard_probe import probe_mechanisms


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


def test_the_key_names_the_launcher_probed(probes, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A success kept for one launcher is probed again with the other (the C one built, or gone)."""
    answers, asked = probes
    answers[SECCOMP] += [None, None]
    monkeypatch.setenv(guard_probe.PRETEND_MISSING, "c-launcher")
    python_key = guard_probe._probe_key(SECCOMP)
    assert python_key is not None
    assert str(guard_probe.LAUNCHER) in python_key
    assert probe_mechanisms((SECCOMP,)) == {}
    monkeypatch.delenv(guard_probe.PRETEND_MISSING)
    c_launcher = guard_probe.launcher_command()
    if c_launcher[0] == sys.executable:
        pytest.skip("the C launcher cannot be built here")
    key = guard_probe._probe_key(SECCOMP)
    assert key is not None
    assert c_launcher[0] in key
    assert str(guard_probe.LAUNCHER) not in key
    _new_process()
    assert probe_mechanisms((SECCOMP,)) == {}
    _new_process()
    assert probe_mechanisms((SECCOMP,)) == {}  # kept for the C one now
    assert asked[SECCOMP] == [None, None]


def test_a_broken_probe_file_costs_a_probe(probes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    answers, asked = probes
    (tmp_path / guard_probe.PROBES).write_text('["not", "a dict"]')
    answers[SECCOMP] += [None]
    assert probe_mechanisms((SECCOMP,)) == {}
    assert asked[SECCOMP] == [None]
