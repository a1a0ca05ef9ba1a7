"""A plan: the `[run]`, `[defaults]`, `[resources]`, `[policy]`, `[[template]]`, `[[task]]` and `[[hook]]`
tables of a TOML plan (or one task object per line of a `--batch` JSONL file), parsed and validated into
frozen records.

Every error names the task and the field (`task 'fix-lint': timeout: bad duration '15x'`); an unknown key in
any table is an error naming the table and the key, with a "did you mean" when one is close. Templates and
matrices are expanded first (`capsule.plan.template`). Validation of the graph (cycles, missing
dependencies) lives in `capsule.plan.dag`; `parse_plan` runs it too.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import orjson

from capsule import duration
from capsule.plan.template import TemplateError, did_you_mean, expand
from capsule.policy.rules import Policy, PolicyError, parse_policy, policy_from_dict
from capsule.redact import MASK, redact_argv, redact_text

HALTS = ("never", "soon", "now")
ON_FAILURE = ("stop", "compensate")
HOOK_EVENTS = ("pre", "post", "error")
TRACE_LEVELS = ("process", "file", "net", "all")
ISOLATE = ("worktree", "copy")
EXECUTORS = ("local", "ray")
# a name, or a matrix task's name with its values in brackets (`fix[a.py,3.12]`, capsule.plan.template)
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._=+,-]*\])?$")
INPUT_REF = re.compile(r"\{inputs\.([^{}\s]+)\.(stdout|path)\}")  # filled by the scheduler at spawn

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


class PlanError(ValueError):
    """The plan is malformed; the message names the task and field."""


def parse_duration(value: object, where: str) -> float:
    """`"15m"`, `"2s"`, `"250ms"`, `"1h30m"` or a number of seconds (capsule/duration.py)."""
    try:
        return duration.parse_duration(value)
    except ValueError as exc:
        raise PlanError(f"{where}: {exc}") from None


def parse_size(value: object, where: str) -> int:
    """`"4GiB"`, `"512M"`, `"100KB"` or a number of bytes; K/M/G/T are powers of 1024 either way."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (m := _SIZE_RE.match(value)):
        unit = (m[2] or "B").upper()[0]
        power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit]
        return int(float(m[1]) * 1024**power)
    raise PlanError(f"{where}: bad size {value!r} (use e.g. 512MiB, 4GiB)")


@attrs.frozen(kw_only=True)
class TaskSpec:
    id: str
    command: tuple[str, ...]  # argv; a string command in the plan becomes ("sh", "-c", string)
    cwd: str = "."
    env: tuple[tuple[str, str], ...] = ()
    # Names the plan set whose values were not kept: a plan restored from a session (`Plan.to_json`
    # stores env names only). Such a task takes them from the environment of whoever resumes it.
    env_names: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    timeout_s: float | None = None
    retries: int = 0
    backoff_s: float = 1.0
    backoff_cap_s: float = 60.0
    grace_s: float = 5.0
    memory: int | None = None  # bytes, summed RSS of the task's tree
    cpu_time_s: float | None = None
    no_retry_exit_codes: tuple[int, ...] = ()
    verify: tuple[str, ...] = ()
    compensate: str | None = None
    # Fields added after the first plans were recorded: left out of the stored plan and of the spec hash
    # while they hold their default, so earlier sessions replay and resume as they were (`_ADDED`).
    priority: int = 0  # higher first among ready tasks
    isolate: str | None = None  # worktree | copy: the task runs in a workspace of its own
    keep_worktree: bool = False
    outputs: tuple[str, ...] = ()  # globs in the task's workspace kept after success, for dependents
    inputs: tuple[str, ...] = ()  # globs whose contents the cache key covers
    cache: bool = False
    params: tuple[tuple[str, str], ...] = ()  # the template params (or matrix values) it was made with

    @property
    def spec_hash(self) -> str:
        """The identity of what the task does: resume re-runs a succeeded task whose spec changed.

        Env values are not part of it (they are never stored, so a restored plan could not match)."""
        # a shallow dict: orjson writes tuples as lists, so this is attrs.asdict's JSON at a tenth the cost
        spec = _without_defaults({f: getattr(self, f) for f in _TASK_FIELDS}, TaskSpec)
        spec["env"], spec["env_names"] = sorted({*(k for k, _v in self.env), *self.env_names}), ()
        data = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(data).hexdigest()[:16]

    @property
    def cache_hash(self) -> str:
        """What the cache matches besides the inputs: the spec hash with the env values (never stored)."""
        data = orjson.dumps([self.spec_hash, sorted(self.env)])
        return hashlib.sha256(data).hexdigest()[:16]

    @property
    def collects(self) -> bool:
        """Does a success leave something to keep before it counts (outputs, a workspace, a cache entry)?"""
        return bool(self.outputs or self.isolate or self.cache)

    def input_refs(self) -> set[str]:
        """The dependencies its command names as `{inputs.<dep>.stdout}` or `{inputs.<dep>.path}`."""
        return {m[1] for c in (*self.command, *self.verify) for m in INPUT_REF.finditer(c)}

    def stored(self) -> TaskSpec:
        """The task as a session keeps it: env names, never their values; its commands redacted."""
        names = tuple(sorted({*(k for k, _v in self.env), *self.env_names}))
        return attrs.evolve(
            self,
            command=redact_argv(self.command),
            verify=tuple(map(redact_text, self.verify)),
            compensate=None if self.compensate is None else redact_text(self.compensate),
            env=(),
            env_names=names,
        )


@attrs.frozen(kw_only=True)
class Hook:
    on: str
    command: str
    timeout_s: float = 10.0


@attrs.frozen(kw_only=True)
class Plan:
    name: str
    parallel: int = 4
    halt: str = "never"
    on_failure: str = "stop"
    trace: bool = False
    trace_level: str = "process"
    resources: tuple[tuple[str, int], ...] = ()
    policy: Policy = Policy()  # noqa: RUF009 - frozen: one shared default is safe
    tasks: tuple[TaskSpec, ...] = ()
    hooks: tuple[Hook, ...] = ()
    # added later: stored only when not the default (see TaskSpec)
    timeout_s: float | None = None  # the whole run
    base: str = "HEAD"  # the commit `isolate = "worktree"` tasks start from
    author: str | None = None  # "Name <email>" of the commits of isolated tasks
    use_cache: bool = True  # False: `--no-cache`, every task runs (and refreshes its cache entry)
    executor: str = "local"  # local | ray (stages/schedule.py's executor seam)
    address: str | None = None  # the Ray cluster's, for executor = "ray"
    # `agents rerun RUN --from TASK`: the run whose results the tasks not in `rerun` reuse
    reuse_from: str | None = None
    rerun: tuple[str, ...] = ()
    tracer: str = "strace"  # `[run] trace = "ebpf"`: the tasks recorded by the eBPF tracer

    def task(self, task_id: str) -> TaskSpec:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)

    def to_json(self) -> str:
        """The plan as `run.planned` stores it: tasks keep their env names only (architecture §3, Secrets)."""
        stored = attrs.evolve(
            self,
            tasks=tuple(t.stored() for t in self.tasks),
            hooks=tuple(attrs.evolve(h, command=redact_text(h.command)) for h in self.hooks),
        )
        data = _without_defaults(attrs.asdict(stored, recurse=False), Plan)
        data["policy"] = attrs.asdict(stored.policy, filter=_stored_field)
        data["tasks"] = [_without_defaults(attrs.asdict(t), TaskSpec) for t in stored.tasks]
        data["hooks"] = [attrs.asdict(h) for h in stored.hooks]
        return orjson.dumps(data).decode()


_TASK_FIELDS = tuple(attrs.fields_dict(TaskSpec))
_ADDED = {
    "TaskSpec": ("priority", "isolate", "keep_worktree", "outputs", "inputs", "cache", "params"),
    "Plan": (
        "timeout_s",
        "base",
        "author",
        "use_cache",
        "executor",
        "address",
        "reuse_from",
        "rerun",
        "tracer",
    ),
}


def fill_inputs(task: TaskSpec, outputs_dir: str) -> TaskSpec:
    """The task with `{inputs.<dep>.stdout}` and `{inputs.<dep>.path}` made paths under `outputs_dir`
    (`<run>/outputs`, where each dependency's stdout and outputs are kept)."""

    def one(text: str) -> str:
        return INPUT_REF.sub(
            lambda m: f"{outputs_dir}/{m[1]}/stdout" if m[2] == "stdout" else f"{outputs_dir}/{m[1]}", text
        )

    if not task.input_refs():
        return task
    return attrs.evolve(task, command=tuple(map(one, task.command)), verify=tuple(map(one, task.verify)))


def _without_defaults(data: dict[str, Any], cls: type) -> dict[str, Any]:
    """`data` without the later-added fields of `cls` that hold their default."""
    defaults = _DEFAULTS[cls.__name__]
    return {k: v for k, v in data.items() if k not in defaults or _plain(v) != defaults[k]}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


_DEFAULTS = {
    name: {k: _plain(attrs.fields_dict(cls)[k].default) for k in _ADDED[name]}
    for name, cls in (("TaskSpec", TaskSpec), ("Plan", Plan))
}


def check_keys(table: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """An unknown key is an error naming the table and the key, with the closest known one."""
    known = tuple(known)
    for key in table:
        if key not in known:
            raise PlanError(f"{where}: unknown key {key!r}{did_you_mean(key, known)}")


def _stored_field(field: attrs.Attribute[Any], value: Any) -> bool:
    """What `to_json` keeps: a policy's default `fallback` is left out, so plans recorded before the key
    existed re-derive the same `run.planned` on replay."""
    return not (field.name == "fallback" and value == "refuse")


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise PlanError(f"[{key}] must be a table")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PlanError(f"{where}: expected a string or a list of strings, got {value!r}")


def _int(value: object, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PlanError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


_TASK_KEYS = (
    "id", "command", "cwd", "env", "depends_on", "uses", "timeout", "retries", "backoff", "backoff_cap",
    "grace", "limits", "no_retry_exit_codes", "verify", "compensate", "priority", "isolate",
    "keep_worktree", "outputs", "inputs", "cache", "params",
)  # fmt: skip
_RUN_KEYS = (
    "name", "parallel", "halt", "on_failure", "trace", "trace_level", "timeout", "base", "author",
    "executor", "address",
)  # fmt: skip
_TABLES = ("run", "defaults", "resources", "policy", "template", "task", "hook")
_HOOK_KEYS = ("on", "command", "timeout")
_LIMIT_KEYS = ("memory", "cpu_time")


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise PlanError(f"{where}: expected true or false, got {value!r}")
    return value


def _task(raw: object, defaults: dict[str, Any], index: int) -> TaskSpec:
    if not isinstance(raw, dict):
        raise PlanError(f"task #{index + 1}: expected a table, got {raw!r}")
    task_id = raw.get("id")
    if not isinstance(task_id, str) or not ID_RE.match(task_id):
        raise PlanError(
            f"task #{index + 1}: id: expected a name of letters, digits, '.', '_', '-', got {task_id!r}"
        )
    where = f"task {task_id!r}"
    check_keys(raw, _TASK_KEYS, where)
    merged = {**defaults, **raw}
    if "limits" in defaults and "limits" in raw:
        merged["limits"] = {**defaults["limits"], **raw["limits"]}
    command = merged.get("command")
    if isinstance(command, str) and command.strip():
        argv: tuple[str, ...] = ("sh", "-c", command)
    elif isinstance(command, list) and command and all(isinstance(c, str) for c in command):
        argv = tuple(command)
    else:
        raise PlanError(f"{where}: command: expected a non-empty string or list of strings, got {command!r}")
    env = merged.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise PlanError(f"{where}: env: expected a table of strings")
    limits = merged.get("limits", {})
    if not isinstance(limits, dict):
        raise PlanError(f"{where}: limits: expected a table with memory and/or cpu_time")
    check_keys(limits, _LIMIT_KEYS, f"{where}: limits")
    codes = merged.get("no_retry_exit_codes", [])
    if not isinstance(codes, list):
        raise PlanError(f"{where}: no_retry_exit_codes: expected a list of integers")
    compensate = merged.get("compensate")
    if compensate is not None and not isinstance(compensate, str):
        raise PlanError(f"{where}: compensate: expected a string")
    cwd = merged.get("cwd", ".")
    if not isinstance(cwd, str):
        raise PlanError(f"{where}: cwd: expected a string")
    timeout = merged.get("timeout")
    isolate = merged.get("isolate")
    if isolate is not None and isolate not in ISOLATE:
        raise PlanError(f"{where}: isolate: expected one of {', '.join(ISOLATE)}, got {isolate!r}")
    params = merged.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise PlanError(f"{where}: params: expected a table of strings (use template = ... or matrix)")
    priority = merged.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise PlanError(f"{where}: priority: expected an integer, got {priority!r}")
    return TaskSpec(
        id=task_id,
        command=argv,
        cwd=cwd,
        env=tuple(sorted(env.items())),
        depends_on=_strings(merged.get("depends_on", []), f"{where}: depends_on"),
        uses=_strings(merged.get("uses", []), f"{where}: uses"),
        timeout_s=None if timeout is None else parse_duration(timeout, f"{where}: timeout"),
        retries=_int(merged.get("retries", 0), f"{where}: retries"),
        backoff_s=parse_duration(merged.get("backoff", 1.0), f"{where}: backoff"),
        backoff_cap_s=parse_duration(merged.get("backoff_cap", 60.0), f"{where}: backoff_cap"),
        grace_s=parse_duration(merged.get("grace", 5.0), f"{where}: grace"),
        memory=None if "memory" not in limits else parse_size(limits["memory"], f"{where}: limits.memory"),
        cpu_time_s=None
        if "cpu_time" not in limits
        else parse_duration(limits["cpu_time"], f"{where}: limits.cpu_time"),
        no_retry_exit_codes=tuple(_int(c, f"{where}: no_retry_exit_codes") for c in codes),
        verify=_strings(merged.get("verify", []), f"{where}: verify"),
        compensate=compensate,
        priority=priority,
        isolate=isolate,
        keep_worktree=_bool(merged.get("keep_worktree", False), f"{where}: keep_worktree"),
        outputs=_strings(merged.get("outputs", []), f"{where}: outputs"),
        inputs=_strings(merged.get("inputs", []), f"{where}: inputs"),
        cache=_bool(merged.get("cache", False), f"{where}: cache"),
        params=tuple(sorted(params.items())),
    )


def build_plan(data: dict[str, Any], *, name: str, tasks_key: str = "task") -> Plan:
    """A plan from its decoded tables; validates fields, then the graph."""
    from capsule.plan.dag import validate_graph

    check_keys(data, _TABLES if tasks_key == "task" else (*_TABLES, tasks_key), "the plan")
    run = _table(data, "run")
    check_keys(run, _RUN_KEYS, "[run]")
    defaults = _table(data, "defaults")
    check_keys(defaults, tuple(k for k in _TASK_KEYS if k not in ("id", "params")), "[defaults]")
    if "limits" in defaults:
        if not isinstance(defaults["limits"], dict):
            raise PlanError("[defaults] limits: expected a table")
        check_keys(defaults["limits"], _LIMIT_KEYS, "[defaults] limits")
    resources_raw = _table(data, "resources")
    try:
        policy = parse_policy(data.get("policy", {}))
    except PolicyError as exc:
        raise PlanError(str(exc)) from None
    halt = run.get("halt", "never")
    if halt not in HALTS:
        raise PlanError(f"[run] halt: expected one of {', '.join(HALTS)}, got {halt!r}")
    on_failure = run.get("on_failure", "stop")
    if on_failure not in ON_FAILURE:
        raise PlanError(f"[run] on_failure: expected one of {', '.join(ON_FAILURE)}, got {on_failure!r}")
    raw_trace = run.get("trace", False)
    tracer = "strace"
    if raw_trace == "ebpf":  # traced by the eBPF tracer, at trace_level
        raw_trace, tracer = True, "ebpf"
    if raw_trace is True:
        trace, level = True, str(run.get("trace_level", "process"))
    elif raw_trace is False:
        trace, level = False, "process"
    elif isinstance(raw_trace, str) and raw_trace in TRACE_LEVELS:
        trace, level = True, raw_trace
    else:
        raise PlanError(
            f'[run] trace: expected true, false, "ebpf" or one of {", ".join(TRACE_LEVELS)}, got {raw_trace!r}'
        )
    if level not in TRACE_LEVELS:
        raise PlanError(f"[run] trace_level: expected one of {', '.join(TRACE_LEVELS)}, got {level!r}")
    resources = tuple(
        (key, _int(value, f"[resources] {key}", minimum=1)) for key, value in sorted(resources_raw.items())
    )
    raw_tasks = data.get(tasks_key, [])
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise PlanError("the plan has no [[task]]")
    try:
        raw_tasks = expand(raw_tasks, data.get("template"))
    except TemplateError as exc:
        raise PlanError(str(exc)) from None
    tasks = tuple(_task(raw, defaults, i) for i, raw in enumerate(raw_tasks))
    hooks = []
    for i, raw in enumerate(data.get("hook", [])):
        if (
            not isinstance(raw, dict)
            or raw.get("on") not in HOOK_EVENTS
            or not isinstance(raw.get("command"), str)
        ):
            raise PlanError(f"hook #{i + 1}: expected on = pre|post|error and a command string")
        check_keys(raw, _HOOK_KEYS, f"hook #{i + 1}")
        hooks.append(
            Hook(
                on=raw["on"],
                command=raw["command"],
                timeout_s=parse_duration(raw.get("timeout", 10.0), f"hook #{i + 1}: timeout"),
            )
        )
    timeout = run.get("timeout")
    executor = run.get("executor", "local")
    if executor not in EXECUTORS:
        raise PlanError(f"[run] executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    for key in ("base", "author", "address"):
        if key in run and not isinstance(run[key], str):
            raise PlanError(f"[run] {key}: expected a string, got {run[key]!r}")
    plan = Plan(
        name=str(run.get("name", name)),
        parallel=_int(run.get("parallel", 4), "[run] parallel", minimum=1),
        halt=halt,
        on_failure=on_failure,
        trace=trace,
        trace_level=level,
        resources=resources,
        policy=policy,
        tasks=tasks,
        hooks=tuple(hooks),
        timeout_s=None if timeout is None else parse_duration(timeout, "[run] timeout"),
        base=run.get("base", "HEAD"),
        author=run.get("author"),
        executor=executor,
        address=run.get("address"),
        tracer=tracer,
    )
    validate_graph(plan)
    return plan


def parse_plan(text: str, *, name: str = "plan") -> Plan:
    """A TOML plan."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"not valid TOML: {exc}") from None
    return build_plan(data, name=name)


def parse_batch(text: str, *, name: str = "batch", base: str | None = None) -> Plan:
    """One task object per line (JSONL); `base` is an optional TOML plan giving run/defaults/policy."""
    tasks = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            tasks.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise PlanError(f"line {number}: not valid JSON: {exc}") from None
    data: dict[str, Any] = tomllib.loads(base) if base else {}
    data["task"] = [*data.get("task", []), *tasks]
    return build_plan(data, name=name)


def _tuples(value: Any) -> Any:
    """JSON arrays back to the tuples the records hold (env pairs are tuples of tuples)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def plan_from_json(text: str) -> Plan:
    """The plan a session carries in its `run.planned` event (see `Plan.to_json`)."""
    data = orjson.loads(text)
    tasks = tuple(TaskSpec(**{k: _tuples(v) for k, v in t.items()}) for t in data["tasks"])
    for task in tasks:
        commands = (*task.command, *task.verify, task.compensate or "")
        if any(MASK in c for c in commands):
            raise PlanError(
                f"task {task.id}: the plan stored in the session has secrets masked in its commands; "
                "resume with --plan FILE"
            )
    return Plan(
        name=data["name"],
        parallel=data["parallel"],
        halt=data["halt"],
        on_failure=data["on_failure"],
        trace=data["trace"],
        trace_level=data["trace_level"],
        resources=_tuples(data["resources"]),
        policy=policy_from_dict(data["policy"]),
        tasks=tasks,
        hooks=tuple(Hook(**h) for h in data["hooks"]),
        **{k: _tuples(data[k]) for k in _ADDED["Plan"] if k in data},
    )
