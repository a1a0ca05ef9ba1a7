"""The one duration parser (capsule/duration.py), and that every door that reads a duration uses it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsule.duration import UNITS, parse_duration
from capsule.env.config import parse_config
from capsule.plan.spec import parse_plan
from capsule.stages.retention import parse_age


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("90s", 90.0),
        ("15m", 900.0),
        ("1.5h", 5400.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("2w", 14 * 86400.0),
        ("1d 12h", 129600.0),
        ("1m30s500ms", 90.5),
        ("2H", 7200.0),
        ("30", 30.0),
        ("0.25", 0.25),
        (7, 7.0),
        (2.5, 2.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    """Units ms s m h d w, compounds, and a bare number of seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "soon", "5x", "1h30", "h", "-5s", "1.2.3s", "30 minutes", True, None, -1]
)
def test_bad_durations(text: object) -> None:
    """Anything else is a ValueError that says how to write one."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(UNITS))), min_size=1, max_size=4))
def test_compounds_add_up(parts: list[tuple[int, str]]) -> None:
    """A compound is the sum of its parts."""
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert parse_duration(text) == pytest.approx(sum(n * UNITS[unit] for n, unit in parts))


def test_every_door_reads_durations_alike() -> None:
    """capsule.toml, plans and --older-than take the same forms; a bare number is seconds in each."""
    config = parse_config(
        '[[process]]\nname = "a"\ncommand = "x"\nbackoff = "1h30m"\nstop_timeout = 2\n', "c"
    )
    assert config.processes[0].backoff == 5400.0
    assert config.processes[0].stop_timeout == 2.0
    plan = parse_plan('[[task]]\nid = "a"\ncommand = "x"\ntimeout = "1d"\nbackoff = "2w"\n', name="p")
    assert plan.tasks[0].timeout_s == 86400.0
    assert plan.tasks[0].backoff_s == 14 * 86400.0
    assert parse_age("30") == 30.0  # seconds, as everywhere (it was days)
    assert parse_age("1d12h") == 129600.0
