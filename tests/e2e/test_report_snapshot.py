"""`capsule report --json` through the real CLI: a big finished session gets its snapshot, and the output
read from it is the output of the fold."""

from __future__ import annotations

from pathlib import Path

from capsule.stages.snapshot import MIN_EVENTS, SNAPSHOT
from tests.bench.report import make_session
from tests.conftest import CapsuleRunner


def test_cli_report_json_from_snapshot_equals_the_fold(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """First report: folded, snapshot written; second: from the snapshot, same bytes; text report too."""
    session, events = make_session(capsule_home, shells=MIN_EVENTS // 990 + 1, leaves=332)
    assert events >= MIN_EVENTS
    first = capsule("report", "--json", session.name)
    assert first.returncode == 0, first.stderr
    assert (session / SNAPSHOT).is_file()
    second = capsule("report", "--json", session.name)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    (session / SNAPSHOT).unlink()
    again = capsule("report", "--json", session.name)
    assert again.stdout == first.stdout
    assert capsule("report", session.name).returncode == 0  # the text report still folds
