"""Write and check `schemas/`: the JSON Schema files generated from the event records.

    python -m capsule.stages.schemas write   # (re)write schemas/<kind>.v<N>.json for every current kind
    python -m capsule.stages.schemas check   # exit 1, listing each file that drifted from the records

What the files must say is decided in `capsule.codec.schema`; this module only reads and writes them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from capsule.codec.schema import all_schemas, drift, render, stale

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

# Exit codes of `check`.
OK = 0
DRIFT = 1


def read_committed(directory: Path = SCHEMA_DIR) -> dict[str, str]:
    """Every `*.json` file in `directory`, name -> text."""
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(directory.glob("*.json"))}


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """Write every current schema and remove stale files (older versions stay); say what was done."""
    directory.mkdir(parents=True, exist_ok=True)
    committed = read_committed(directory)
    done = []
    for name, schema in sorted(all_schemas().items()):
        text = render(schema)
        if committed.get(name) != text:
            (directory / name).write_text(text, encoding="utf-8")
            done.append(f"wrote {name}")
    for name in stale(committed):
        (directory / name).unlink()
        done.append(f"removed {name}")
    return done


def check(directory: Path = SCHEMA_DIR) -> list[str]:
    """The drift between `directory` and the records; [] when none."""
    return drift(read_committed(directory))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m capsule.stages.schemas", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["write", "check"])
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="the schemas directory")
    args = parser.parse_args(argv)
    if args.command == "write":
        for line in write(args.dir):
            print(line)
        return OK
    problems = check(args.dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("schemas drifted: run `python -m capsule.stages.schemas write`", file=sys.stderr)
        return DRIFT
    return OK


if __name__ == "__main__":
    sys.exit(main())
