"""bashlex, imported with its parse tables kept between runs.

bashlex (the guard's shell parser, capsule/policy/commands.py) builds its LALR tables from its grammar
every time it is imported: ~0.15 s, paid by a guarded tree at its first `sh -c` exec, while that exec
waits in the kernel for the guard's answer. The tables depend only on bashlex's own sources, so they are
kept in the user's cache directory under a name that is the hash of those sources and of the Python that
built them, as plain data (marshal: dicts, tuples, strings and numbers, no code), and rebuilt whenever
the file is missing, unreadable or not what a build would give in shape.

`load()` imports bashlex this way (once per process; the core's own `import bashlex` then finds it in
`sys.modules`). Any failure of the cache falls back to bashlex's own build: never a failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import sys
from importlib import util
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

from capsule.stages import cache_file
from capsule.stages.ebpf_build import cache_dir

FORMAT = 1  # the cache file's layout; bump when it changes


def load() -> ModuleType:
    """bashlex, with its parser built from cached tables when they are there."""
    if "bashlex" in sys.modules:
        return sys.modules["bashlex"]
    spec = util.find_spec("bashlex")
    if spec is None or spec.loader is None:
        raise ImportError("bashlex is not installed")
    # The package's __init__ imports its parser, which builds the tables: create the package first
    # without running it, so its yacc module can be patched before the parser's import calls it.
    package = util.module_from_spec(spec)
    sys.modules["bashlex"] = package
    try:
        from bashlex import yacc  # type: ignore[import-untyped]
    except BaseException:
        del sys.modules["bashlex"]
        raise
    cache = _cache_path(spec)
    real = yacc.yacc

    def cached_yacc(*args: Any, **kwargs: Any) -> Any:
        # called by bashlex.parser at its import: its module globals hold the grammar's p_* functions
        grammar_module = yacc.get_caller_module_dict(2)
        if cache is not None:
            tables = _read(cache)
            if tables is not None:
                with contextlib.suppress(Exception):
                    return _parser(yacc, tables, grammar_module)
        # bashlex's own build, told the module, as the caller it would look for is this function
        parser = real(*args, **{**kwargs, "module": sys.modules["bashlex.parser"]})
        if cache is not None:
            _write(cache, parser)
        return parser

    yacc.yacc = cached_yacc
    try:
        spec.loader.exec_module(package)
    except BaseException:
        for name in [m for m in sys.modules if m == "bashlex" or m.startswith("bashlex.")]:
            del sys.modules[name]
        raise
    finally:
        yacc.yacc = real
    return package


def _cache_path(spec: ModuleSpec) -> Path | None:
    if not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    digest = hashlib.sha256(f"{FORMAT} {sys.version}".encode())
    try:
        for name in ("parser.py", "yacc.py", "tokenizer.py", "flags.py"):
            digest.update((folder / name).read_bytes())
    except OSError:
        return None
    return cache_dir() / f"bashlex-{digest.hexdigest()[:16]}.tables"


def _read(path: Path) -> tuple[Any, Any, Any] | None:
    try:
        data = marshal.loads(path.read_bytes())  # noqa: S302 (our own file, in the user's cache)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not (isinstance(data, tuple) and len(data) == 3):
        return None
    productions, action, goto = data
    if not (isinstance(productions, tuple) and isinstance(action, dict) and isinstance(goto, dict)):
        return None
    return productions, action, goto


def _parser(yacc: Any, tables: tuple[Any, Any, Any], grammar_module: dict[str, Any]) -> Any:
    productions, action, goto = tables

    class Table:  # what LRParser reads of the LRTable bashlex would have built
        lr_productions: list[Any] = []
        lr_action = action
        lr_goto = goto

    for number, name, symbols, func in productions:
        production = yacc.Production(number, name, symbols, func=func)
        production.bind(grammar_module)
        Table.lr_productions.append(production)
    return yacc.LRParser(Table, grammar_module["p_error"])


def _write(path: Path, parser: Any) -> None:
    productions = tuple((p.number, p.name, tuple(p.prod), p.func) for p in parser.productions)
    cache_file.keep(path, marshal.dumps((productions, dict(parser.action), dict(parser.goto))))
