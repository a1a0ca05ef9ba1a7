"""The functional core reads no clock and opens no file: what import-linter cannot see, the AST can.

import-linter forbids the core's I/O modules (pyproject.toml); a builtin `open(` or a `datetime.now()`
needs no import, so every source file of the core is parsed and its calls are checked here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CAPSULE = Path(__file__).resolve().parents[1] / "capsule"
CORE = ("env", "events", "codec", "parse", "track", "fold", "report", "plan", "rules", "redact.py")
BUILTINS = {"open", "__import__", "input", "breakpoint"}  # files, hidden imports, the terminal
CLOCKS = {
    ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
    ("time", "time"), ("time", "time_ns"), ("time", "monotonic"), ("time", "perf_counter"),
    ("time", "localtime"), ("time", "gmtime"), ("time", "ctime"), ("time", "strftime"),
}  # fmt: skip


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def violations(source: str, filename: str = "<source>") -> list[str]:
    """`file:line: call` for every clock read, builtin file open or hidden import in `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in BUILTINS:
            found.append(f"{filename}:{node.lineno}: {func.id}(")
        elif isinstance(func, ast.Attribute) and (_dotted(func.value), func.attr) in CLOCKS:
            found.append(f"{filename}:{node.lineno}: {_dotted(func.value)}.{func.attr}(")
    return found


def core_files() -> list[Path]:
    files: list[Path] = []
    for name in CORE:
        path = CAPSULE / name
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


@pytest.mark.parametrize(
    "source",
    [
        "open('x')",
        "with open(path, 'rb') as f: pass",
        "datetime.now()",
        "datetime.datetime.now(tz)",
        "date.today()",
        "time.time()",
        "__import__('os')",
    ],
)
def test_the_check_catches(source: str) -> None:
    """Each forbidden spelling is found (the check below would otherwise pass vacuously)."""
    assert violations(source)


def test_the_check_lets_pure_code_be() -> None:
    """Names that only look alike are not flagged."""
    assert violations("state.time + record.now\nfile.open_count\nts = event.ts") == []


def test_core_calls_no_clock_and_opens_no_file() -> None:
    """No module of the core reads the clock, opens a file or imports by name at run time."""
    files = core_files()
    assert len(files) > 30, files  # the core was found
    found = [v for path in files for v in violations(path.read_text(), str(path.relative_to(CAPSULE)))]
    assert found == []
