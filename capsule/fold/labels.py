"""Labels and workflows of a process, from data rules (TOML) matched on its executable and argv.

The core reads no files: the shell hands the TOML *text* of `capsule/rules/labels.toml`,
`capsule/rules/workflows.toml` (see `PACKAGED_RULE_FILES`) and the user's `$CAPSULE_HOME/rules.toml` to
`RuleSet.from_toml(...)`, lowest precedence first. A rules text holds `[[label]]` and `[[workflow]]` tables:

    [[label]]
    name = "claude-code"            # unique per kind; a later text's rule of the same name replaces it
    label = "agent"                 # agent | tool | system | unknown
    agent = "claude-code"           # agents only: the agent's name (defaults to the rule name)
    exe = ["node", "node*"]         # globs on the executable's basename (a glob with "/" matches the path)
    args = ["*/@anthropic-ai/claude-code/*"]   # some argv[1:] element matches one of these globs
    subcommand = ["run build"]      # the positional (non "-") arguments start with these words
    module = ["pytest"]             # `python -m pytest`

    [[workflow]]
    name = "pytest"
    workflow = "test"
    exe = ["pytest", "py.test"]

    [[runner]]                      # a runner is classified and named by the tool it runs
    name = "npx"
    exe = ["npx", "uvx"]            # `npx [options] jest …` is jest: test
    options_with_value = ["-p"]     # options whose value is the next argument
    script = false                  # true: the first argument is a script naming the tool (node)

    [[exit]]                        # non-zero exits that are answers, not failures
    name = "grep-no-match"
    exe = ["grep", "rg"]
    codes = [1]                     # these exit codes of a matching process are not failures

Every condition given must hold; within one condition any listed pattern may match. Rules are tried in
precedence order (later texts first, then file order) against the last successful exec of a process; an
`agent` rule is tried against every successful exec of its chain (`claude` is a script whose shebang
re-execs node). When nothing matches the last exec, earlier execs of the chain are tried. An `exit` rule is
tried against the last successful exec only: what answers is the program that exited.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Sequence
from typing import Any

import attrs

LABELS = ("agent", "tool", "system", "unknown")
WORKFLOWS = ("explore", "edit", "build", "test", "vcs", "install", "execute")

# Read these from the `capsule` package's `rules/` folder, in this order, then the user's rules.toml.
PACKAGED_RULE_FILES = ("labels.toml", "workflows.toml", "exits.toml", "runners.toml")

# (executable path, argv) of one successful exec
ExecImage = tuple[str, tuple[str, ...]]

_KEYS = {"name", "exe", "args", "subcommand", "module"}
_LABEL_KEYS = _KEYS | {"label", "agent"}
_WORKFLOW_KEYS = _KEYS | {"workflow"}
_EXIT_KEYS = _KEYS | {"codes"}
_RUNNER_KEYS = _KEYS | {"script", "options_with_value"}
_ALL_KEYS = {
    "label": _LABEL_KEYS,
    "workflow": _WORKFLOW_KEYS,
    "exit": _EXIT_KEYS,
    "runner": _RUNNER_KEYS,
}
# A node script's path names the CLI it is: `…/node_modules/.bin/jest`, `…/node_modules/jest/bin/jest.js`,
# `…/npm/bin/npm-cli.js` (npm), `…/typescript/bin/tsc`.
_SCRIPT_EXTENSIONS = (".js", ".cjs", ".mjs", ".ts")
_CACHE_LIMIT = 65_536


class RuleError(ValueError):
    """A rules text is not valid TOML, or one of its rules is malformed (the message names the rule)."""


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _globs(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def _python_module(argv: tuple[str, ...]) -> str | None:
    """The X of `python [-flags] -m X`, or None when a script or `-c` comes first."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, None)
        if arg.startswith("-m"):
            return arg[2:]
        if arg in ("-c", "-") or not arg.startswith("-"):
            return None
        if arg in ("-W", "-X", "-Q"):  # options that take a value
            next(args, None)
    return None


@attrs.frozen(kw_only=True)
class Rule:
    """One compiled rule: `value` is the label or the workflow it gives."""

    name: str
    kind: str  # label | workflow
    value: str
    agent: str | None = None
    exe: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    subcommand: tuple[tuple[str, ...], ...] = ()
    module: tuple[str, ...] = ()
    codes: frozenset[int] = frozenset()  # exit rules: the exit codes that are answers
    script: bool = False  # runner rules: the first argument is a script naming the tool (node)
    options_with_value: frozenset[str] = frozenset()  # runner rules: options that take the next arg
    origin: str = ""
    _exe_names: frozenset[str] = attrs.field(init=False, eq=False, repr=False)
    _exe_globs: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)
    _path_globs: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)
    _arg_globs: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        plain = frozenset(p for p in self.exe if not any(c in p for c in "*?[/"))
        globbed = [p for p in self.exe if p not in plain and "/" not in p]
        paths = [p for p in self.exe if "/" in p]
        object.__setattr__(self, "_exe_names", plain)
        object.__setattr__(self, "_exe_globs", _globs(globbed))
        object.__setattr__(self, "_path_globs", _globs(paths))
        object.__setattr__(self, "_arg_globs", _globs(self.args))

    def matches(self, exe: str, argv: tuple[str, ...]) -> bool:
        if self.exe:
            names = {basename(exe), basename(argv[0])} if argv else {basename(exe)}
            if not (
                names & self._exe_names
                or (self._exe_globs is not None and any(self._exe_globs.match(n) for n in names))
                or (self._path_globs is not None and self._path_globs.match(exe) is not None)
            ):
                return False
        if self._arg_globs is not None and not any(self._arg_globs.match(a) for a in argv[1:]):
            return False
        if self.module and _python_module(argv) not in self.module:
            return False
        if self.subcommand:
            positional = tuple(a for a in argv[1:] if not a.startswith("-"))
            if not any(positional[: len(words)] == words for words in self.subcommand):
                return False
        return True


@attrs.frozen(kw_only=True)
class Classification:
    """What the rules say about one process."""

    label: str = "unknown"
    workflow: str | None = None
    agent: str | None = None  # the agent's name when label == "agent"
    label_rule: str | None = None
    workflow_rule: str | None = None
    answers: frozenset[int] = frozenset()  # non-zero exit codes that are answers, not failures
    exit_rule: str | None = None
    tool: str | None = None  # the tool a runner ran (`npx jest`, `node …/jest/bin/jest.js`: jest)


UNCLASSIFIED = Classification()


def _first_match(rules: Sequence[Rule], chain: Sequence[ExecImage], *, agent_chain: bool) -> Rule | None:
    if not chain:
        return None
    last_exe, last_argv = chain[-1]
    for rule in rules:
        if rule.matches(last_exe, last_argv):
            return rule
        if agent_chain and rule.value == "agent" and any(rule.matches(e, a) for e, a in chain[:-1]):
            return rule
    for exe, argv in reversed(chain[:-1]):
        for rule in rules:
            if rule.matches(exe, argv):
                return rule
    return None


def _unwrap(rule: Rule, argv: tuple[str, ...]) -> ExecImage | None:
    """The argv after a runner's own words and options (see `[[runner]]` in capsule/rules/runners.toml)."""
    words = {w for sub in rule.subcommand for w in sub}
    rest = list(argv[1:])
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--":
            i += 1
            break
        if arg in rule.options_with_value:
            i += 2
        elif arg.startswith("-") or (arg in words and not rule.script):
            i += 1
        else:
            break
    inner = rest[i:]
    if not inner:
        return None
    if rule.script:
        name = script_tool(inner[0])
        if name is None:
            return None
        return name, (name, *inner[1:])
    return inner[0], tuple(inner)


def script_tool(path: str) -> str | None:
    """The CLI a script is, by its path: `…/node_modules/.bin/jest` and `…/jest/bin/jest.js` are jest,
    `…/npm/bin/npm-cli.js` is npm; None for a script outside a package's bin/ (a user's own)."""
    parts = path.split("/")
    if len(parts) < 2:
        return None
    if parts[-2] not in (".bin", "bin"):
        return None
    name = parts[-1]
    for ext in _SCRIPT_EXTENSIONS:
        name = name.removesuffix(ext)
    return name.removesuffix("-cli") or None


def _string_list(rule_name: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RuleError(f"rule {rule_name!r}: {key!r} must be a string or a list of non-empty strings")
    return tuple(value)


def _compile(kind: str, table: Any, origin: str, index: int) -> Rule:
    if not isinstance(table, dict):
        raise RuleError(f"{origin}: [[{kind}]] #{index + 1} is not a table")
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise RuleError(f"{origin}: [[{kind}]] #{index + 1} has no `name`")
    where = f"{origin}: {kind} rule {name!r}"
    unknown = set(table) - _ALL_KEYS[kind]
    if unknown:
        raise RuleError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    codes: frozenset[int] = frozenset()
    value: Any
    if kind == "exit":
        raw = table.get("codes")
        if (
            not isinstance(raw, list)
            or not raw
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 < c < 256 for c in raw)
        ):
            raise RuleError(f"{where}: `codes` must be a non-empty list of exit codes (1-255)")
        codes = frozenset(raw)
        value = "answer"
    elif kind == "runner":
        value = "runner"
        if not isinstance(table.get("script", False), bool):
            raise RuleError(f"{where}: `script` must be true or false")
    else:
        value = table.get(kind)
    if not isinstance(value, str) or not value:
        raise RuleError(f"{where}: `{kind}` must be a non-empty string")
    if kind == "label" and value not in LABELS:
        raise RuleError(f"{where}: label {value!r} is not one of {', '.join(LABELS)}")
    agent = table.get("agent")
    if agent is not None and (kind != "label" or value != "agent" or not isinstance(agent, str)):
        raise RuleError(f'{where}: `agent` is a string, and only for rules with label = "agent"')
    if kind == "label" and value == "agent" and agent is None:
        agent = name
    try:
        conditions = {
            key: _string_list(name, key, table[key])
            for key in ("exe", "args", "subcommand", "module")
            if key in table
        }
    except RuleError as exc:
        raise RuleError(f"{origin}: {kind} {exc}") from None
    if not any(conditions.values()):
        raise RuleError(f"{where}: needs at least one of exe, args, subcommand, module")
    try:
        return Rule(
            name=name,
            kind=kind,
            value=value,
            agent=agent,
            exe=conditions.get("exe", ()),
            args=conditions.get("args", ()),
            subcommand=tuple(tuple(s.split()) for s in conditions.get("subcommand", ())),
            module=conditions.get("module", ()),
            codes=codes,
            script=bool(table.get("script", False)),
            options_with_value=frozenset(
                _string_list(name, "options_with_value", table["options_with_value"])
                if "options_with_value" in table
                else ()
            ),
            origin=origin,
        )
    except re.error as exc:
        raise RuleError(f"{where}: bad glob: {exc}") from None


@attrs.define
class RuleSet:
    """Label and workflow rules in precedence order, with a cache of classifications by exec chain."""

    label_rules: tuple[Rule, ...] = ()
    workflow_rules: tuple[Rule, ...] = ()
    exit_rules: tuple[Rule, ...] = ()
    runner_rules: tuple[Rule, ...] = ()
    _cache: dict[tuple[ExecImage, ...], Classification] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def empty(cls) -> RuleSet:
        """No rules: every process is `unknown` (its workflow `execute`)."""
        return cls()

    @classmethod
    def from_toml(cls, *texts: str) -> RuleSet:
        """Rules from TOML texts, lowest precedence first (packaged files, then the user's rules.toml)."""
        return cls.from_sources(*((f"rules text {i + 1}", text) for i, text in enumerate(texts)))

    @classmethod
    def from_sources(cls, *sources: tuple[str, str]) -> RuleSet:
        """Like `from_toml`, with each text given as (origin, text) so errors name the file."""
        by_kind: dict[str, list[Rule]] = {"label": [], "workflow": [], "exit": [], "runner": []}
        for origin, text in sources:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise RuleError(f"{origin}: invalid TOML: {exc}") from None
            unknown = set(data) - set(by_kind)
            if unknown:
                raise RuleError(f"{origin}: unknown table(s) {', '.join(sorted(unknown))}")
            for kind, rules in by_kind.items():
                tables = data.get(kind, [])
                if not isinstance(tables, list):
                    raise RuleError(f"{origin}: `{kind}` must be an array of tables ([[{kind}]])")
                new = [_compile(kind, table, origin, i) for i, table in enumerate(tables)]
                names = [r.name for r in new]
                dupes = sorted({n for n in names if names.count(n) > 1})
                if dupes:
                    raise RuleError(f"{origin}: {kind} rule {dupes[0]!r} is defined twice")
                replaced = set(names)
                rules[:] = new + [r for r in rules if r.name not in replaced]
        return cls(
            tuple(by_kind["label"]),
            tuple(by_kind["workflow"]),
            tuple(by_kind["exit"]),
            tuple(by_kind["runner"]),
        )

    def classify(self, chain: Sequence[ExecImage]) -> Classification:
        """Classify a process by its exec chain: (path, argv) of each successful exec, oldest first."""
        key = tuple(chain)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        label_rule = _first_match(self.label_rules, key, agent_chain=True)
        label = label_rule.value if label_rule is not None else None
        workflow_rule = (
            None if label == "agent" else _first_match(self.workflow_rules, key, agent_chain=False)
        )
        if label is None:
            label = "tool" if workflow_rule is not None else "unknown"
        workflow = workflow_rule.value if workflow_rule is not None else None
        if workflow is None and label in ("tool", "unknown") and key:
            workflow = "execute"
        exit_rule = self.answer_rule(*key[-1]) if key else None
        workflow_rule_name = workflow_rule.name if workflow_rule is not None else None
        tool = None
        if label != "agent" and key:
            ran = self._runner_target(*key[-1])
            if ran is not None:
                inner = self.classify([ran])
                if inner.label != "agent" and inner.workflow not in (None, "execute"):
                    # `npx jest`, `uvx ruff`, `node …/tsc`: the work is the tool's, so is the name.
                    label, workflow = "tool", inner.workflow
                    workflow_rule_name = inner.workflow_rule
                    tool = inner.tool or basename(ran[1][0])
        result = Classification(
            label=label,
            workflow=workflow,
            agent=label_rule.agent if label_rule is not None else None,
            label_rule=label_rule.name if label_rule is not None else None,
            workflow_rule=workflow_rule_name,
            answers=exit_rule.codes if exit_rule is not None else frozenset(),
            exit_rule=exit_rule.name if exit_rule is not None else None,
            tool=tool,
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = result
        return result

    def _runner_target(self, exe: str, argv: tuple[str, ...]) -> ExecImage | None:
        """What a runner runs: (name, argv) of `npx [opts] jest …`, `pipx run black`, `node …/tsc`."""
        for rule in self.runner_rules:
            if rule.matches(exe, argv):
                return _unwrap(rule, argv)
        return None

    def answer_rule(self, exe: str, argv: tuple[str, ...]) -> Rule | None:
        """The first exit rule matching one exec image: its `codes` are answers, not failures."""
        for rule in self.exit_rules:
            if rule.matches(exe, argv):
                return rule
        return None

    def classify_argv(self, argv: Sequence[str], exe: str | None = None) -> Classification:
        """Classify one exec: a convenience for tests and for `capsule` commands that show rules."""
        args = tuple(argv)
        return self.classify([(exe if exe is not None else (args[0] if args else ""), args)])
