"""`capsule import` of a large `-ttt` log splits it between two processes (stages/trace.py
`split_read_stage`, stages/import_part.py, started by the CLI first thing): the second reads, redacts and
chooses the lines of the last part while the importer reads its head. It must give exactly what one process gives, redact every planted
secret shape, fail whole (and leave no session) when the second process fails, and leave no process
behind when the import is interrupted or refuses its input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from capsule.stages import derive, import_part
from tests.conftest import CapsuleRunner, one_error_line
from tests.e2e.test_import_relay import GOLDEN_TRACES, imported, secrets_log
from tests.secret_shapes import SHAPES


@pytest.fixture
def splits(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every log is split, however small; returns the logs that were."""
    monkeypatch.setattr(derive, "SPLIT_MIN", 0)
    split: list[Path] = []
    real = derive.split_read_stage

    async def counting(path: Path, *args: Any, **kwargs: Any) -> None:
        split.append(path)
        await real(path, *args, **kwargs)

    monkeypatch.setattr(derive, "split_read_stage", counting)
    return split


def _epoch_stamped(log: Path) -> bool:
    return derive.StraceParser.filters_from(log.read_bytes()[: derive.PROBE_BYTES])


@pytest.mark.parametrize("log", GOLDEN_TRACES, ids=lambda p: p.parent.name)
def test_split_import_equals_one_process(log: Path, tmp_path: Path, splits: list[Path]) -> None:
    one = imported(log, tmp_path / "b", relay=False)
    assert imported(log, tmp_path / "a", relay=True) == one
    if _epoch_stamped(log) and not isinstance(one, str):
        assert splits == [log]


def test_split_import_redacts_every_shape(tmp_path: Path, splits: list[Path]) -> None:
    log = secrets_log(tmp_path / "secrets.log")
    split = imported(log, tmp_path / "a", relay=True)
    assert splits == [log]
    assert split == imported(log, tmp_path / "b", relay=False)
    assert not isinstance(split, str)
    kept = split[0] + b"\n".join(split[1])
    assert [shape for shape, _rule, _argv, secret in SHAPES if secret.encode() in kept] == []
    assert b"***" in kept


@pytest.mark.parametrize(
    "command",
    [
        "head -c 100 >/dev/null; exit 3",
        "printf 'xxxxxxxxxxxx'",
        "printf '\\002\\0\\0\\0\\0\\0\\0\\0xx'",
        "exit 0",
    ],
    ids=["fails", "half-a-frame", "not-a-frame", "says-nothing"],
)
def test_a_failing_second_process_fails_the_import_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, splits: list[Path], command: str
) -> None:
    monkeypatch.setattr(import_part, "part_argv", lambda *_args: ("sh", "-c", command))
    home = tmp_path / "home"
    log = next(log for log in GOLDEN_TRACES if _epoch_stamped(log))
    with pytest.raises(OSError, match="the process reading the log's last part"):
        imported_or_raise(log, home)
    assert list((home / "runs").iterdir()) == []


def imported_or_raise(log: Path, home: Path) -> None:
    import trio

    trio.run(lambda: derive.import_log(log, home=home, name="x"))


def _big_log(path: Path, *, lines: int, parseable: bool = True) -> Path:
    """A `-f -ttt` log of `lines` lines, large enough to be split (stages/trace.py SPLIT_MIN)."""
    head = '7 1795239818.000000 execve("/bin/sh", ["sh"], 0x1 /* 1 vars */) = 0\n' if parseable else ""
    body = '7 1795239818.000001 read(3, "' + "x" * 64 + '", 64) = 64\n'
    if not parseable:
        body = "1795239818.000001 " + "x" * 80 + "\n"
    with open(path, "w") as out:
        out.write(head)
        out.write(body * lines)
    assert path.stat().st_size >= import_part.SPLIT_MIN
    return path


def _parts(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if any("import_part" in arg for arg in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _reading(pid: int, log: Path) -> bool:
    for part in _parts(pid):
        try:
            if any(f.path == str(log) for f in part.open_files()):
                return True
        except psutil.NoSuchProcess:
            continue
    return False


def _wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


@pytest.mark.parametrize("to_group", [True, False], ids=["ctrl-c", "sigint-to-capsule"])
def test_an_interrupted_split_import_leaves_no_process_and_no_session(
    capsule_home: Path, tmp_path: Path, to_group: bool
) -> None:
    # Large enough that the import is far from done when it is interrupted (~150 MB: seconds of work).
    log = _big_log(tmp_path / "big.log", lines=1_500_000)
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "capsule", "import", str(log)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    runs = capsule_home / "runs"
    try:
        # Under way: the session is made and the second process reads the log (its job has come).
        _wait_for(
            lambda: (
                (runs.is_dir() and any(runs.iterdir()) and _reading(proc.pid, log)) or proc.poll() is not None
            )
        )
        parts = _parts(proc.pid)
        assert parts, "the import ended before its second process was seen"
        if to_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # 130, or killed by the SIGINT itself when it lands outside the handler (at the very end): a shell
    # says 130 either way.
    assert proc.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err.decode()
    for part in parts:
        _wait_for(lambda part=part: not part.is_running())
    assert not runs.exists() or list(runs.iterdir()) == []


def test_a_large_log_of_no_strace_lines_is_refused_in_one_line(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path
) -> None:
    """Refused as a small one is (one line, exit 1), the second process gone with the import."""
    log = _big_log(tmp_path / "junk.log", lines=120_000, parseable=False)
    done = capsule("import", str(log))
    line = one_error_line(done)
    assert "no strace lines recognised" in line
    small = tmp_path / "small.log"
    small.write_bytes(log.read_bytes()[:1000].rpartition(b"\n")[0] + b"\n")
    refused = capsule("import", str(small))
    assert refused.returncode == done.returncode != 0
    assert one_error_line(refused).replace(str(small), "LOG") == line.replace(str(log), "LOG")
    runs = capsule_home / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(log) in (p.info["cmdline"] or [])]


def test_without_o_tmpfile_the_part_goes_to_a_file_unlinked_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, splits: list[Path]
) -> None:
    """A file system without O_TMPFILE: the same import, and no file left beside the session."""
    real_open = os.open

    def no_tmpfile(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(95, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_tmpfile)
    log = next(log for log in GOLDEN_TRACES if _epoch_stamped(log))
    split = imported(log, tmp_path / "a", relay=True)
    assert splits == [log]
    assert split == imported(log, tmp_path / "b", relay=False)
    for session in (tmp_path / "a" / "runs").iterdir():
        assert sorted(p.name for p in session.iterdir() if p.name.startswith(".")) == []
