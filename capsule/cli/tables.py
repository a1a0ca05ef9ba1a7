"""`capsule export --format parquet`: the report tables of one session or of all, as Parquet files.

`-o DIR` gets `sessions.parquet`, `processes.parquet`, `files.parquet`, `network.parquet` and
`tasks.parquet`, every row tagged with its session id (capsule/report/tables.py). DuckDB writes them
(the optional `parquet` extra: `pip install 'capsule-recorder[parquet]'`), imported only here.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from capsule.cli.base import EXIT_ENVIRONMENT, _resolve, _rules, fail

EXIT_OUTPUT = 6


def _sessions(ref: str, every: bool) -> list[Path]:
    from capsule.api.sessions import all_session_dirs

    if every:
        return sorted(all_session_dirs())
    return [_resolve(ref)]


def _rows(path: Path, rules: Any) -> list[tuple[str, dict[str, Any]]]:
    from capsule.api import agents
    from capsule.api.sessions import header_of
    from capsule.report.tables import agents_rows, run_rows

    header = header_of(path)
    if header is None:
        return []
    if header.session_kind == "agents":
        from capsule.fold.tasks import status_dict

        run = agents.fold(path)
        session = {
            "id": path.name,
            "kind": "agents",
            "name": header.name,
            "argv": list(header.argv),
            "cwd": header.cwd,
            "host": header.host,
            "started": header.ts,
        }
        return list(agents_rows(session, status_dict(run, agents.live_state(run))))
    from capsule.api.sessions import load
    from capsule.report import report_dict

    state = load(path, rules).state
    failed = frozenset(n.key for n in state.tree.nodes if n.failed)
    return list(run_rows(report_dict(state), failed))


def export_parquet(ref: str, output: Path | None, every: bool = False) -> None:
    """Write the tables of the session `ref` (or of every session, `every`) to the directory `output`."""
    from capsule.report.tables import COLUMNS

    try:
        import duckdb
    except ImportError:
        fail("--format parquet needs DuckDB: pip install 'capsule-recorder[parquet]'", EXIT_ENVIRONMENT)
    if output is None or str(output) == "-":
        fail("--format parquet writes a directory of files: give it with -o DIR", 2)
    rules = _rules()
    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in COLUMNS}
    for path in _sessions(ref, every):
        for table, row in _rows(path, rules):
            tables[table].append(row)
    try:
        output.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect()
        with tempfile.TemporaryDirectory(dir=output) as scratch:
            for name, rows in tables.items():
                _write_table(con, name, rows, Path(scratch), output)
    except (OSError, duckdb.Error) as exc:
        fail(f"cannot write {output}: {getattr(exc, 'strerror', None) or exc}", EXIT_OUTPUT)
    counts = ", ".join(f"{len(rows)} {name}" for name, rows in tables.items())
    print(f"capsule: wrote {output}/{{{','.join(tables)}}}.parquet ({counts})", file=sys.stderr)


def _write_table(con: Any, name: str, rows: list[dict[str, Any]], scratch: Path, output: Path) -> None:
    """One table through a JSON lines file DuckDB reads with the declared column types, then a
    Parquet file written beside its final name and renamed over it."""
    import orjson

    from capsule.report.tables import COLUMNS

    columns = COLUMNS[name]
    source = scratch / f"{name}.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    spec = "{" + ", ".join(f"'{c}': '{t}'" for c, t in columns) + "}"
    select = ", ".join(f'"{c}"' for c, _t in columns)
    temp = scratch / f"{name}.parquet"
    query = f"SELECT {select} FROM read_json('{source}', format='newline_delimited', columns={spec})"  # noqa: S608 (names are ours)
    if not rows:
        query += " LIMIT 0"
    con.execute(f"COPY ({query}) TO '{temp}' (FORMAT parquet)")
    os.replace(temp, output / f"{name}.parquet")
