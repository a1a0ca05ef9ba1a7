"""bashlex with its LALR parse tables kept, instead of rebuilt at every import.

bashlex's yacc (a modified PLY) builds the LALR tables of the bash grammar each time `bashlex` is
imported, and never reads the `parsetab.py` it ships: ~0.12 s of CPU (0.25 s under a profiler) in
every guarded tree whose policy has command rules, on the guard's server beside the tree's own start.
The tables depend on the grammar alone, so Capsule keeps a copy (`bash_lalr.json`, written by
`python -m capsule.policy.bash_tables`; JSON, because a Python literal of its size takes as long to
compile as the tables to build wherever no bytecode was written) with a signature of the grammar it was built from: at import,
bashlex's table builder is swapped for one that uses the copy when bashlex's grammar has that
signature (its productions, their precedence, the precedence table and the start symbol), and builds
the tables as before otherwise (another bashlex: slower, never wrong). The copy is part of Capsule's
package, as trusted as its code; `tests/guard/test_bash_tables.py` checks it equals what bashlex builds.

The guard's server loads bashlex this way before it answers its first exec; the core's shell parser
(capsule/policy/commands.py) then finds it imported. Elsewhere the core imports bashlex plainly.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

_LOCK = threading.Lock()


def grammar_signature(grammar: Any) -> str:
    """What the LALR tables depend on, hashed: each production (its number, name, symbols and
    precedence), the precedence table and the start symbol."""
    parts = [repr((p.number, p.name, p.prod, p.prec)) for p in grammar.Productions if p is not None]
    parts.append(repr(sorted(grammar.Precedence.items())))
    parts.append(repr(grammar.Start))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def load_bashlex() -> ModuleType:
    """The bashlex module, imported with the kept tables where they fit (once; thread-safe)."""
    with _LOCK, _import_lock("bashlex"):
        if "bashlex.parser" not in sys.modules:
            _import_with(_kept_table_class)
    return sys.modules["bashlex"]


@contextlib.contextmanager
def _import_lock(name: str) -> Iterator[None]:
    """The import system's own lock of module `name`, where this Python has it (CPython's
    importlib._bootstrap): another thread's plain `import bashlex` meanwhile waits for the whole
    package, instead of finding it half made (its __spec__ is marked initializing for that)."""
    manager = getattr(importlib._bootstrap, "_ModuleLockManager", None)
    with manager(name) if manager is not None else contextlib.nullcontext():
        yield


def _import_with(table_class: Callable[[type], type]) -> None:
    """Import bashlex with `table_class(LRTable)` as its table builder. The package's __init__
    imports its parser, which builds the tables at once, so the package is made first without
    running __init__, its yacc imported and patched, and __init__ run last."""
    for name in [m for m in sys.modules if m == "bashlex" or m.startswith("bashlex.")]:
        del sys.modules[name]
    spec = importlib.util.find_spec("bashlex")
    if spec is None or spec.loader is None:
        raise ImportError("bashlex is not installed")
    package = importlib.util.module_from_spec(spec)
    spec._initializing = True  # type: ignore[attr-defined]  # as importlib marks a module it is running
    sys.modules["bashlex"] = package
    try:
        yacc: Any = importlib.import_module("bashlex.yacc")
        built = yacc.LRTable
        yacc.LRTable = table_class(built)
        try:
            spec.loader.exec_module(package)
        finally:
            yacc.LRTable = built
            spec._initializing = False  # type: ignore[attr-defined]
    except BaseException:
        for name in [m for m in sys.modules if m == "bashlex" or m.startswith("bashlex.")]:
            del sys.modules[name]
        raise


def _kept_table_class(built: type) -> type:
    class KeptTable(built):  # type: ignore[misc]
        """bashlex's LRTable, filled from the kept copy when the grammar is the one it was built from."""

        def __init__(self, grammar: Any, log: Any = None) -> None:
            kept = _kept_tables(grammar_signature(grammar))
            if kept is None:
                super().__init__(grammar, log)
                return
            # The attributes LRTable.__init__ sets, with the tables it would have computed.
            self.grammar = grammar
            self.log = log
            self.lr_action, self.lr_goto = kept
            self.lr_productions = grammar.Productions
            self.lr_goto_cache: dict[Any, Any] = {}
            self.lr0_cidhash: dict[Any, Any] = {}
            self._add_count = 0
            self.sr_conflict = self.rr_conflict = 0
            self.conflicts: list[Any] = []
            self.sr_conflicts: list[Any] = []
            self.rr_conflicts: list[Any] = []
            self.lr_method = "LALR"

    return KeptTable


KEPT = Path(__file__).with_name("bash_lalr.json")


def _kept_tables(signature: str) -> tuple[dict[Any, Any], dict[Any, Any]] | None:
    import orjson

    try:
        kept = orjson.loads(KEPT.read_bytes())
        if kept["signature"] != signature:
            return None
        # JSON keys are strings; the tables' states are numbers.
        return _states(kept["action"]), _states(kept["goto"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no usable copy: bashlex builds the tables


def _states(table: dict[str, dict[str, int]]) -> dict[int, dict[str, int]]:
    return {int(state): dict(row) for state, row in table.items()}


def built_tables() -> tuple[str, dict[Any, Any], dict[Any, Any]]:
    """bashlex's grammar signature and the tables its own builder makes (bashlex is imported anew
    here, with its own builder; use in a process of its own, or call `load_bashlex` afterwards)."""
    captured: dict[str, Any] = {}

    def capture(built: type) -> type:
        class Capture(built):  # type: ignore[misc]
            def __init__(self, grammar: Any, log: Any = None) -> None:
                super().__init__(grammar, log)
                captured["signature"] = grammar_signature(grammar)
                captured["action"] = {k: dict(v) for k, v in self.lr_action.items()}
                captured["goto"] = {k: dict(v) for k, v in self.lr_goto.items()}

        return Capture

    _import_with(capture)
    return captured["signature"], captured["action"], captured["goto"]


def kept_document() -> bytes:
    """The content of bash_lalr.json for the installed bashlex."""
    import orjson

    signature, action, goto = built_tables()
    document = {"signature": signature, "action": action, "goto": goto}
    return orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS) + b"\n"


if __name__ == "__main__":
    KEPT.write_bytes(kept_document())
    print(f"written {KEPT}")
