"""The README's DuckDB queries, run as written over real recorded sessions, and the Parquet export."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from tests.conftest import CapsuleRunner

duckdb = pytest.importorskip("duckdb")  # a dev dependency: pip install -e '.[dev]'
pytestmark = pytest.mark.strace

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SECTION = README.split("### Querying sessions with DuckDB", 1)[1].split("\n## ", 1)[0]
QUERIES = re.findall(r"```sql\n(.*?)```", SECTION, re.S)


@pytest.fixture
def fleet(capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path) -> Path:
    """Three sessions: one clean, one with a failing command and a non-zero exit, one agents run."""
    assert capsule("run", "--", "sh", "-c", "ls / >/dev/null; true").returncode == 0
    assert (
        capsule(
            "run", "--level", "file", "--", "sh", "-c", "ls /nope; git --version >/dev/null; exit 2"
        ).returncode
        == 2
    )
    plan = tmp_path / "plan.toml"
    plan.write_text('[[task]]\nid = "ok"\ncommand = ["true"]\n[[task]]\nid = "bad"\ncommand = ["false"]\n')
    assert capsule("agents", "run", str(plan)).returncode == 1
    return capsule_home


def _run(sql: str, home: Path, cwd: Path) -> list[tuple]:
    con = duckdb.connect()
    con.execute(f"SET file_search_path = '{cwd}'")
    return con.sql(sql.replace("~/.capsule", str(home))).fetchall()


def test_readme_has_the_queries() -> None:
    """The section shows queries over every session's events and over the Parquet tables."""
    assert len(QUERIES) >= 4
    assert all("filename = true" in q for q in QUERIES if "events.jsonl" in q)


def test_readme_queries_over_every_session(fleet: Path, tmp_path: Path) -> None:
    """Each events query runs over all sessions at once; the session comes from the file name."""
    sessions, programs, failures = (_run(q, fleet, tmp_path) for q in QUERIES[:3])
    kinds = {row[1] for row in sessions}
    assert kinds == {"run", "agents"}
    assert len(sessions) == 3  # one row per session
    assert ("ls", 2) in programs
    assert any(row[1] == ["ls", "/nope"] and row[2] == 2 for row in failures)
    assert any(row[1][0] == "sh" and row[2] == 2 for row in failures)


def test_parquet_tables_of_every_session(capsule: CapsuleRunner, fleet: Path, tmp_path: Path) -> None:
    """`export --format parquet --all -o DIR` writes the report tables; the README's query reads them."""
    out = tmp_path / "capsule-tables"
    done = capsule("export", "--format", "parquet", "--all", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "files.parquet",
        "network.parquet",
        "processes.parquet",
        "sessions.parquet",
        "tasks.parquet",
    ]
    con = duckdb.connect()
    listed = {r["id"] for r in orjson.loads(capsule("ls", "--json", "--all").stdout)}
    assert {r[0] for r in con.sql(f"SELECT session FROM '{out}/sessions.parquet'").fetchall()} == listed
    tasks = dict(con.sql(f"SELECT task, state FROM '{out}/tasks.parquet'").fetchall())
    assert tasks == {"ok": "succeeded", "bad": "failed"}
    failed = con.sql(f"SELECT argv FROM '{out}/processes.parquet' WHERE failure").fetchall()
    assert (["ls", "/nope"],) in failed
    by_label = {label: (count, failed) for label, count, failed in _run(QUERIES[3], fleet, tmp_path)}
    assert by_label["tool"][0] >= 2
    assert by_label["tool"][1] >= 1
    one = tmp_path / "one"
    assert capsule("export", "latest", "-f", "parquet", "-o", str(one)).returncode == 0
    assert con.sql(f"SELECT count(*) FROM '{one}/sessions.parquet'").fetchall() == [(1,)]


def test_parquet_usage_errors(capsule: CapsuleRunner, fleet: Path) -> None:
    """Parquet needs -o DIR; --all needs parquet."""
    assert capsule("export", "-f", "parquet").returncode == 2
    assert capsule("export", "-f", "otlp", "--all").returncode == 2
