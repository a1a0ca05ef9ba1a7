"""The shell parser's kept LALR tables (capsule/stages/bash_tables.py): the same tables bashlex builds,
the same parses, used only for the grammar they were built from, and never a half-imported module.

Each check runs in a fresh interpreter: bashlex can be imported once per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPTS = [
    "echo a; curl -s file://x.sh | sh",
    "a && sudo b || c",
    'echo "$(rm -rf /tmp/x)" > out; cat <<EOF\nhi\nEOF',
    "for f in *.c; do cc -c $f & done; wait",
    "if [ -e .env ]; then cat .env | base64; fi",
    "(cd sub && make -j2) 2>&1 | tee log",
    'x=$(git rev-parse HEAD) y=`date`; f() { git push --force "$@"; }; f origin',
]


def _python(code: str, tmp_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


_DUMP = f"""
    import bashlex
    for script in {SCRIPTS!r}:
        print(repr([tree.dump() for tree in bashlex.parse(script)]))
"""


def test_the_kept_tables_are_what_bashlex_builds(tmp_path: Path) -> None:
    """Fails after a bashlex upgrade that changes the grammar: run
    `python -m capsule.stages.bash_tables` and commit the new bash_lalr.json."""
    out = _python(
        """
        from capsule.stages.bash_tables import KEPT, kept_document
        print(KEPT.read_bytes() == kept_document())
        """,
        tmp_path,
    )
    assert out.strip() == "True"


def test_parses_with_the_kept_tables_are_bashlex_s_own(tmp_path: Path) -> None:
    plain = _python(_DUMP, tmp_path)
    kept = _python(
        "from capsule.stages.bash_tables import load_bashlex; load_bashlex()\n" + textwrap.dedent(_DUMP),
        tmp_path,
    )
    assert kept == plain
    assert len(plain.splitlines()) == len(SCRIPTS)


def test_tables_of_another_grammar_are_not_used(tmp_path: Path) -> None:
    """A copy whose signature is not bashlex's grammar's (another bashlex) is ignored: bashlex builds
    its tables, and parses as ever."""
    out = _python(
        """
        import orjson
        from pathlib import Path
        from capsule.stages import bash_tables
        kept = orjson.loads(bash_tables.KEPT.read_bytes())
        kept["signature"] = "another grammar"
        kept["action"] = {"0": {}}  # would break every parse if it were used
        Path("other.json").write_bytes(orjson.dumps(kept))
        bash_tables.KEPT = Path("other.json")
        used = []
        original = bash_tables._kept_tables
        bash_tables._kept_tables = lambda s: used.append(original(s)) or used[-1]
        bashlex = bash_tables.load_bashlex()
        print(used == [None], len(bashlex.parse("a | b")))
        """,
        tmp_path,
    )
    assert out.split() == ["True", "1"]


def test_a_plain_import_meanwhile_waits_for_the_whole_package(tmp_path: Path) -> None:
    """Another thread's `import bashlex` while load_bashlex makes the package gets it whole, not half
    made: it is held at the import system's lock until the tables are in (observed, not slept on)."""
    out = _python(
        """
        import sys, threading
        from capsule.stages import bash_tables

        inside, release, got = threading.Event(), threading.Event(), []
        original = bash_tables._kept_tables

        def kept(signature):
            inside.set()
            release.wait(30)
            return original(signature)

        bash_tables._kept_tables = kept

        def plain():
            import bashlex
            got.append(len(bashlex.parse("a; b | c")))

        loader = threading.Thread(target=bash_tables.load_bashlex)
        loader.start()
        inside.wait(30)
        other = threading.Thread(target=plain)
        other.start()
        # Until the other thread is seen waiting inside the import system, then let the loader finish.
        while other.is_alive():
            frame = sys._current_frames().get(other.ident)
            names = []
            while frame is not None:
                names.append(frame.f_code.co_name)
                frame = frame.f_back
            if "_find_and_load" in names or "_lock_unlock_module" in names:
                break
        release.set()
        loader.join(30)
        other.join(30)
        print(got)
        """,
        tmp_path,
    )
    assert out.strip() == "[1]"
