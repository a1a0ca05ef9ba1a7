"""The pytest plugin, loaded automatically when Capsule is installed (entry point `pytest11`).

- `capsule_run`: a fixture that records a command under strace in a temporary `CAPSULE_HOME` and returns
  its `capsule.Session` (`session = capsule_run(["make", "test"], level="file")`).
- `--capsule-sessions DIR`: every session folder under DIR (a folder holding `events.jsonl`) becomes a
  test that re-derives it from its raw trace (`capsule replay --check`) and compares its report with
  the stored `expected/report.json`; `--capsule-bless` writes those expectations instead, and re-derives
  the events.jsonl of a session an older Capsule derived differently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from capsule.api.session import Session

Runner = Callable[..., "Session"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("capsule", "Capsule recorded sessions")
    group.addoption(
        "--capsule-sessions",
        metavar="DIR",
        action="append",
        default=[],
        help="turn every Capsule session folder under DIR into a replay test (repeatable)",
    )
    group.addoption(
        "--capsule-bless",
        action="store_true",
        default=False,
        help="write each --capsule-sessions folder's expected/report.json instead of comparing (and "
        "re-derive the events of a session an older Capsule derived differently)",
    )


@pytest.fixture
def capsule_run(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """Record a command (like `capsule run`, output captured) into a temporary CAPSULE_HOME."""
    from capsule.api.session import record

    home = tmp_path_factory.mktemp("capsule-home")

    def run(argv: Sequence[str], **options: Any) -> Session:
        options.setdefault("home", home)
        return record(argv, **options)

    return run


_DIRS = pytest.StashKey[list[Path]]()


def pytest_configure(config: pytest.Config) -> None:
    dirs: list[Path] = []
    for value in config.getoption("capsule_sessions"):
        root = Path(value).resolve()
        if not root.is_dir():
            raise pytest.UsageError(f"--capsule-sessions {value}: no such directory")
        dirs.append(root)
        config.args.append(str(root))  # collected like a path given on the command line
    config.stash[_DIRS] = dirs


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name != "events.jsonl":
        return None
    dirs = parent.config.stash.get(_DIRS, [])
    if any(root == file_path.parent or root in file_path.parents for root in dirs):
        return SessionFile.from_parent(parent, path=file_path)
    return None


class SessionFile(pytest.File):
    """A committed session folder's events.jsonl: one replay test."""

    def collect(self) -> Iterator[pytest.Item]:
        yield SessionItem.from_parent(self, name="replay")


class SessionMismatch(Exception):
    """A committed session no longer replays to what was stored."""


class SessionItem(pytest.Item):
    """One committed session folder, replayed: events re-derived, report compared."""

    def runtest(self) -> None:
        from capsule.testing import bless, replay

        folder = self.path.parent
        if self.config.getoption("capsule_bless"):
            from capsule.api.errors import CapsuleError

            try:
                bless(folder)
            except CapsuleError as exc:  # a changed file, or a session with nothing to re-derive from
                raise SessionMismatch(str(exc)) from None
            return
        result = replay(folder)
        if result.report_match is None:
            raise SessionMismatch(
                f"{folder}: no expected/report.json yet; run pytest --capsule-bless to write it"
            )
        if not result.matches:
            raise SessionMismatch(result.explain())

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, SessionMismatch):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"capsule session {self.path.parent.name}"
