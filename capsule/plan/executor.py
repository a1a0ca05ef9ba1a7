"""Who performs a plan's attempts: `[run] executor = "local" | "ray"` and `[run] address` (a Ray address:
`"auto"`, the head's `"host:port"`, or a Ray Client server's `"ray://host:port"`), overridden by `--executor` and `--address`.

Kept beside the plan rather than in it: where a run happens is not part of what it does (a plan's
`run.planned` record, and so its replay, stay the same on either executor).
"""

from __future__ import annotations

import tomllib
from typing import Any

import attrs

from capsule.plan.spec import PlanError

EXECUTORS = ("local", "ray")


@attrs.frozen(kw_only=True)
class ExecutorSpec:
    kind: str = "local"
    address: str | None = None  # ray: None means "auto" (a cluster this machine is a node of)


def executor_from_table(run: dict[str, Any]) -> ExecutorSpec:
    kind = run.get("executor", "local")
    if kind not in EXECUTORS:
        raise PlanError(f"[run] executor: expected one of {', '.join(EXECUTORS)}, got {kind!r}")
    address = run.get("address")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise PlanError(
            f"[run] address: expected a Ray address (auto, host:port or ray://host:port), got {address!r}"
        )
    return ExecutorSpec(kind=kind, address=address)


def executor_of(text: str) -> ExecutorSpec:
    """The executor a TOML plan asks for (its `[run]` table); the plan itself is parsed elsewhere."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"not valid TOML: {exc}") from None
    run = data.get("run", {})
    return executor_from_table(run if isinstance(run, dict) else {})


def choose(base: ExecutorSpec, kind: str | None, address: str | None) -> ExecutorSpec:
    """The plan's (or the session's) executor with the command line's `--executor`/`--address` over it."""
    if kind is not None and kind not in EXECUTORS:
        raise PlanError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {kind!r}")
    chosen = ExecutorSpec(kind=kind or base.kind, address=address if address is not None else base.address)
    if chosen.kind == "local":
        return ExecutorSpec()
    return chosen
