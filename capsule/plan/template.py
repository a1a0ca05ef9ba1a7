"""`[[template]]` tables, `params` and `matrix`: raw `[[task]]` tables expanded into plain ones before they
are parsed (`capsule.plan.spec`).

A task names a template (`template = "fix"`) and fills its `{name}` placeholders from `params`; a `matrix`
(`{ file = ["a.py", "b.py"] }`) makes one task per combination, its id the task's (or the template's) with
the values in brackets (`fix[a.py]`, `fix[a.py,3.12]`). Placeholders are filled in every string of the
task's fields; `{name}`s that are not params (`${HOME}`, `{inputs.dep.stdout}`) are left alone.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")  # a value in a task id: ids name files, branches and cgroups


class TemplateError(ValueError):
    """A template, its params or a matrix are malformed; the message names the task or template."""


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """` (did you mean 'timeout'?)` when `word` is close to one of `known`, else ``."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def fill(value: Any, params: Mapping[str, str]) -> Any:
    """`value` with `{name}` replaced by `params[name]` in every string it holds (tables and lists too)."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: params.get(m[1], m[0]), value)
    if isinstance(value, list):
        return [fill(v, params) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, params) for k, v in value.items()}
    return value


def _param_table(value: object, where: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TemplateError(f"{where}: {key}: expected a table")
    return value


def _scalar(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TemplateError(f"{where}: expected a string or a number, got {value!r}")
    return str(value)


def templates(raw: object) -> dict[str, dict[str, Any]]:
    """The plan's `[[template]]` tables by id; each keeps its `params` (names, or a table of defaults)."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise TemplateError("[[template]] must be an array of tables")
    out: dict[str, dict[str, Any]] = {}
    for i, table in enumerate(raw):
        if not isinstance(table, dict) or not isinstance(table.get("id"), str):
            raise TemplateError(f"template #{i + 1}: expected a table with an id")
        if table["id"] in out:
            raise TemplateError(f"template {table['id']!r}: defined twice")
        out[table["id"]] = table
    return out


def _defaults(template: Mapping[str, Any], where: str) -> dict[str, str | None]:
    """A template's params: name -> default (None: the task must give it)."""
    params = template.get("params", [])
    if isinstance(params, list) and all(isinstance(p, str) for p in params):
        return dict.fromkeys(params)
    if isinstance(params, dict):
        return {k: _scalar(v, f"{where}: params.{k}") for k, v in params.items()}
    raise TemplateError(f"{where}: params: expected a list of names or a table of defaults")


def expand(raw_tasks: list[Any], raw_templates: object) -> list[Any]:
    """Plain task tables: templates applied, params filled, matrices multiplied out (plan order kept)."""
    found = templates(raw_templates)
    out: list[Any] = []
    for index, raw in enumerate(raw_tasks):
        if not isinstance(raw, dict) or not ({"template", "params", "matrix"} & set(raw)):
            out.append(raw)
            continue
        out.extend(_expand_one(raw, found, index))
    return out


def _expand_one(raw: dict[str, Any], found: Mapping[str, dict[str, Any]], index: int) -> list[dict[str, Any]]:
    name = raw.get("template")
    base_id = raw.get("id", name)
    where = f"task {base_id!r}" if isinstance(base_id, str) else f"task #{index + 1}"
    template: dict[str, Any] = {}
    defaults: dict[str, str | None] = {}
    if name is not None:
        if not isinstance(name, str) or name not in found:
            raise TemplateError(f"{where}: template: no template {name!r}{did_you_mean(str(name), found)}")
        template = found[name]
        defaults = _defaults(template, f"template {name!r}")
    given = {
        k: _scalar(v, f"{where}: params.{k}")
        for k, v in _param_table(raw.get("params", {}), where, "params").items()
    }
    matrix = _param_table(raw.get("matrix", {}), where, "matrix")
    axes: list[tuple[str, list[str]]] = []
    for key, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise TemplateError(f"{where}: matrix.{key}: expected a non-empty list")
        axes.append((key, [_scalar(v, f"{where}: matrix.{key}") for v in values]))
    known = {*defaults, *given, *matrix}
    if template:
        unknown = (
            sorted(set(given) | set(matrix))
            if not defaults
            else sorted((set(given) | set(matrix)) - set(defaults))
        )
        if unknown:
            raise TemplateError(
                f"{where}: params: template {name!r} has no param {unknown[0]!r}"
                f"{did_you_mean(unknown[0], defaults)}"
            )
    body = {k: v for k, v in template.items() if k not in ("id", "params")}
    body.update({k: v for k, v in raw.items() if k not in ("template", "params", "matrix", "id")})
    out = []
    for combo in itertools.product(*(values for _key, values in axes)) if axes else [()]:
        chosen = dict(zip((key for key, _values in axes), combo, strict=True))
        params = {**{k: v for k, v in defaults.items() if v is not None}, **given, **chosen}
        missing = sorted(known - set(params))
        if missing:
            raise TemplateError(f"{where}: param {missing[0]!r} is not given (params or matrix)")
        task_id = f"{base_id}[{','.join(UNSAFE.sub('_', v) for v in combo)}]" if combo else base_id
        task = fill(body, params)
        task["id"] = task_id
        task["params"] = params
        out.append(task)
    return out
