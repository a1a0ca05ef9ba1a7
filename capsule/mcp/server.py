"""The MCP server: recording, environments and agent runs as tools and resources for AI assistants.

Every tool calls `capsule.api`, the door the CLI goes through too, so both give the same answers. A
`CapsuleError` (the door's one-line error) becomes a `ToolError`, which the SDK returns as `isError: true`
with that line, and the server keeps serving; arguments that do not fit a tool's schema come back the same
way, as one line naming the argument (never pydantic's multi-line text with its URLs). Blocking tools
are plain functions: the SDK runs them in a worker thread. `run_command` is async because recording runs
on the server's own trio loop (its signal receiver needs the main thread). Outputs are pydantic models,
so every tool has an output schema; every tool carries the MCP annotations (read-only, destructive,
idempotent, open world). Sessions are also resources: `capsule://sessions` and
`capsule://sessions/{id}/report`.

The transports (stdio, streamable HTTP with a bearer token, a Unix socket) are in capsule/mcp/http.py.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field, ValidationError, create_model

from capsule import __version__
from capsule.api import agents, environments, sessions
from capsule.api.errors import CapsuleError
from capsule.api.records import plain
from capsule.mcp.schema import listing, model_of

OUTPUT_TAIL = 64 * 1024  # bytes of a recorded command's stdout+stderr returned by run_command


@contextlib.contextmanager
def _tool_errors() -> Iterator[None]:
    """The door's expected failures, as tool errors carrying the same one line."""
    try:
        yield
    except CapsuleError as exc:
        raise ToolError(str(exc)) from exc
    except OSError as exc:
        raise ToolError(f"{exc.filename or 'capsule'}: {exc.strerror or exc}") from exc


def _reap() -> None:
    from capsule.api import agents, environments

    agents.reap()
    environments.reap()


# --- outputs: the door's records as pydantic models (capsule/mcp/schema.py), plus what only MCP has ---


class TreeNode(BaseModel):
    pid: int
    ppid: int | None
    depth: int = Field(description="0 for a root; children follow their parent, ordered by start.")
    argv: list[str] | None
    exe: str | None
    label: str = Field(description="agent, tool, system or unknown.")
    workflow: str | None
    start: float
    duration_s: float | None
    exit_code: int | None
    signal: str | None


class ProcessTree(BaseModel):
    session: str
    processes: list[TreeNode] = Field(description="Depth-first from the roots.")
    truncated: bool = Field(description="True if there were more than max_nodes processes.")


class Report(BaseModel):
    session: str
    format: Literal["json", "text"]
    report: dict[str, Any] | None = Field(
        description="With format json: the shape of `capsule report --json` (agents sessions: their DAG)."
    )
    text: str | None = Field(description="With format text: the human report, without colour.")
    warnings: list[str]


class Done(BaseModel):
    messages: list[str] = Field(description="What was done, one line each.")


class ProcessLogs(BaseModel):
    name: str
    log: str = Field(description="The log file: `<time> <stdout|stderr|capsule> <line>` per line.")
    lines: list[str]


class AgentRunStarted(BaseModel):
    session: str = Field(description="The agents session: poll it with get_run_status.")


# The SDK reads each tool's return annotation at run time (these generated models); mypy sees BaseModel.
if TYPE_CHECKING:
    RunResult: TypeAlias = BaseModel
    SessionList: TypeAlias = BaseModel
    EnvironmentStatus: TypeAlias = BaseModel
    EnvironmentList: TypeAlias = BaseModel
    ProcessList: TypeAlias = BaseModel
    ManagedProcessStatus: TypeAlias = BaseModel
    RunStatus: TypeAlias = BaseModel
    TaskResult: TypeAlias = BaseModel
    Killed: TypeAlias = BaseModel
    Merged: TypeAlias = BaseModel
else:
    RunResult = create_model(
        "RunResult",
        __base__=model_of(sessions.Recorded),
        output=(str, Field(description="The last 64 KiB of the command's stdout and stderr, interleaved.")),
    )
    SessionList = listing(
        "SessionList", "sessions", sessions.SessionRow, "Newest first (the shape of `capsule ls --json`)."
    )
    EnvironmentStatus = model_of(environments.EnvironmentStatus)
    EnvironmentList = listing("EnvironmentList", "environments", environments.EnvironmentRow, "Newest first.")
    ProcessList = listing(
        "ProcessList", "processes", environments.ManagedProcess, "Every process of every open environment."
    )
    ManagedProcessStatus = model_of(environments.ManagedProcess)
    RunStatus = model_of(agents.RunStatus)
    TaskResult = model_of(agents.TaskResult)
    Killed = listing("Killed", "killed", agents.RunningTask, "The tasks whose process groups were killed.")
    Merged = model_of(agents.Merged)


# --- parameters ----------------------------------------------------------------------------------

SessionRef = Annotated[
    str, Field(description="Session id, unique id prefix, session directory, or `latest`.")
]
EnvPath = Annotated[str, Field(description="The project directory, or its capsule.toml / .runcept.toml.")]
ProcessName = Annotated[str, Field(description="A process name from the environment's config.")]
EnvOption = Annotated[
    str | None,
    Field(description="The environment's project directory or config; needed only if NAME is ambiguous."),
]
AgentsRef = Annotated[str, Field(description="An agents session: id, prefix, directory or `latest`.")]


# --- tools ---------------------------------------------------------------------------------------


def _hints(*, read_only: bool = False, destructive: bool = False, idempotent: bool = False,
           open_world: bool = False) -> ToolAnnotations:  # fmt: skip
    """MCP tool annotations, every hint stated (clients assume the worst for a missing one)."""
    return ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=open_world,
    )


READ = _hints(read_only=True, idempotent=True)


async def run_command(
    command: Annotated[
        str | list[str],
        Field(
            description="A shell command line (run by `sh -c`), e.g. 'make test 2>&1 | tail', or the program "
            "and its arguments as a list, e.g. ['make', 'test']."
        ),
    ],
    cwd: Annotated[
        str | None, Field(description="The directory to run it in (default: the server's).")
    ] = None,
    timeout_s: Annotated[
        float, Field(description="Kill the command's whole tree after this many seconds.", gt=0)
    ] = 300.0,
    level: Annotated[
        Literal["process", "file", "net", "all"], Field(description="What to trace.")
    ] = "process",
    name: Annotated[str | None, Field(description="A name to find the session by.")] = None,
) -> RunResult:
    """Run a command under strace and record every process it spawns as a new session.

    Returns the summary (exit code, processes, failures) and the session id; stdin is empty and the
    command's output is returned, not shown."""
    if isinstance(command, str):
        if not command.strip():
            raise ToolError("command is empty: give a command line, e.g. 'ls -l'")
        argv = ["sh", "-c", command]
    else:
        if not command or not command[0]:
            raise ToolError("command is empty: give the program and its arguments, e.g. ['ls', '-l']")
        argv = list(command)
    with tempfile.TemporaryFile(prefix="capsule-mcp-") as out:
        stdin = os.open(os.devnull, os.O_RDONLY)
        try:
            with _tool_errors():
                recorded = await sessions.record_async(
                    argv,
                    level=level,
                    name=name,
                    stdio=(stdin, out.fileno(), out.fileno()),
                    time_limit=timeout_s,
                    cwd=cwd,
                )
        finally:
            os.close(stdin)
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - OUTPUT_TAIL))
        output = out.read().decode("utf-8", errors="replace")
    return RunResult.model_validate({**plain(recorded), "output": output})


def list_sessions(
    limit: Annotated[int, Field(description="At most this many sessions.", ge=0)] = 20,
    include_children: Annotated[
        bool, Field(description="Also the run sessions of traced services and tasks.")
    ] = False,
) -> SessionList:
    """Recorded sessions, newest first: id, kind, command, duration, processes, exit, status."""
    with _tool_errors():
        rows = sessions.list_sessions(limit, include_children)
    return SessionList.model_validate({"sessions": plain(rows)})


def _report(session: str, format: str, full: bool) -> Report:
    session_dir = sessions.resolve(session)
    if format == "json":
        found = sessions.report(session_dir)
        return Report(
            session=found.session, format="json", report=found.data, text=None, warnings=list(found.warnings)
        )
    if sessions.is_agents(session_dir):
        from capsule.report.agents import render_agents

        run = agents.report(session_dir)
        text = render_agents(run.run, run.state, run.trees)
        return Report(session=session_dir.name, format="text", report=None, text=text, warnings=[])
    if sessions.is_supervised(session_dir):  # an env session: its services
        from capsule.report.services import render_services

        sup = sessions.load_supervised(session_dir)
        text = _plain(render_services(sup.timeline, sup.children))
        return Report(
            session=session_dir.name, format="text", report=None, text=text, warnings=list(sup.warnings)
        )
    from capsule.report import render

    loaded = sessions.load(session_dir)
    text = _plain(render(loaded.state, full=full))
    return Report(session=loaded.id, format="text", report=None, text=text, warnings=list(loaded.warnings))


def get_report(
    session: SessionRef = "latest",
    format: Annotated[
        Literal["json", "text"], Field(description="json: the stable report object; text: the human report.")
    ] = "json",
    full: Annotated[bool, Field(description="Text only: show every process, do not collapse.")] = False,
) -> Report:
    """Analyse a session: process tree, failures, tools used, agent phases (as `capsule report`)."""
    with _tool_errors():
        return _report(session, format, full)


def _plain(renderable: Any) -> str:
    from rich.console import Console

    console = Console(  # markup off: an argv's "[/]" is text
        width=160,
        no_color=True,
        color_system=None,
        record=True,
        markup=False,
        file=open(os.devnull, "w"),  # noqa: SIM115
    )
    try:
        console.print(renderable)
        return "".join(
            line.rstrip(" ") + "\n" for line in console.export_text().splitlines()
        )  # no cell padding
    finally:
        console.file.close()


def get_process_tree(
    session: SessionRef = "latest",
    max_nodes: Annotated[int, Field(description="Return at most this many processes.", ge=1)] = 2000,
) -> ProcessTree:
    """A recorded session's process tree: who spawned whom, argv, label, duration, exit status."""
    from capsule.report.order import tree_order

    with _tool_errors():
        session_dir = sessions.resolve(session)
        if sessions.is_agents(session_dir):
            raise ToolError(
                f"session {session_dir.name} is an agents session: its tasks' run sessions have trees "
                "(list_sessions with include_children)"
            )
        state = sessions.load(session_dir).state
    order = tree_order(state)
    nodes = [
        TreeNode(
            pid=node.pid,
            ppid=node.ppid,
            depth=depth,
            argv=list(node.argv) if node.argv is not None else None,
            exe=node.exe,
            label=node.label,
            workflow=node.workflow,
            start=node.start,
            duration_s=None if node.end is None else round(max(0.0, node.end - node.start), 6),
            exit_code=node.exit_code,
            signal=node.signal,
        )
        for node, depth in order[:max_nodes]
    ]
    return ProcessTree(session=session_dir.name, processes=nodes, truncated=len(order) > max_nodes)


def activate_environment(
    path: EnvPath,
    timeout_s: Annotated[float, Field(description="Seconds to wait for every process.", gt=0)] = 120.0,
) -> EnvironmentStatus:
    """Bring a project environment up under a detached supervisor (as `capsule env up`); its status.

    If it is already up this only reports its status. Fails if not every process came up."""
    _reap()
    with _tool_errors():
        status = environments.up(Path(path), timeout_s)
    if status.not_up:
        raise ToolError(f"not up: {', '.join(status.not_up)} (see get_process_logs)")
    return EnvironmentStatus.model_validate(plain(status))


def deactivate_environment(path: EnvPath) -> Done:
    """Stop every process of an environment in reverse dependency order (as `capsule env down`)."""
    with _tool_errors():
        messages = environments.down(Path(path))
    _reap()
    return Done(messages=list(messages))


def list_environments() -> EnvironmentList:
    """Every environment on this machine: project, config, up or down, process count."""
    with _tool_errors():
        return EnvironmentList.model_validate({"environments": plain(environments.ls())})


def get_environment_status(path: EnvPath) -> EnvironmentStatus:
    """Per process: state, pid, uptime, restarts, last exit, health, CPU %, RSS (as `env status`)."""
    with _tool_errors():
        return EnvironmentStatus.model_validate(plain(environments.status(Path(path))))


def _control(op: Literal["start", "stop", "restart"], name: str, env: str | None) -> Done:
    with _tool_errors():
        return Done(messages=[environments.control(op, name, None if env is None else Path(env))])


def start_process(name: ProcessName, env: EnvOption = None) -> Done:
    """Start a stopped process of a running environment; fails if it does not come up."""
    return _control("start", name, env)


def stop_process(name: ProcessName, env: EnvOption = None) -> Done:
    """Stop one process of a running environment (it stays stopped until started)."""
    return _control("stop", name, env)


def restart_process(name: ProcessName, env: EnvOption = None) -> Done:
    """Stop and start one process of a running environment; fails if it does not come up."""
    return _control("restart", name, env)


def get_process_status(name: ProcessName, env: EnvOption = None) -> ManagedProcessStatus:
    """One managed process: state, pid, uptime, restarts, last exit, health, error, CPU %, RSS."""
    with _tool_errors():
        found = environments.process_status(name, None if env is None else Path(env))
    return ManagedProcessStatus.model_validate(plain(found))


def kill_all_processes() -> Done:
    """Bring down every environment on this machine and stop what dead supervisors left running."""
    with _tool_errors():
        done = environments.kill_all()
    _reap()
    if done.errors:
        raise ToolError("; ".join(done.errors))
    return Done(messages=list(done.done) or ["nothing running"])


def list_processes() -> ProcessList:
    """Every managed process of every open environment, with its state, pid, CPU and RSS."""
    with _tool_errors():
        return ProcessList.model_validate({"processes": plain(environments.ps())})


def get_process_logs(
    name: ProcessName,
    env: EnvOption = None,
    lines: Annotated[int, Field(description="How many last lines.", ge=0)] = 50,
) -> ProcessLogs:
    """The last lines of a managed process's stdout and stderr, with time and stream."""
    with _tool_errors():
        found = environments.logs(name, None if env is None else Path(env), lines)
    return ProcessLogs(
        name=name,
        log=str(found.path),
        lines=[line.decode("utf-8", errors="replace").rstrip("\n") for line in found.lines],
    )


def start_agent_run(
    plan_path: Annotated[str, Field(description="The plan file (TOML) with [run], [defaults] and [[task]].")],
    parallel: Annotated[int | None, Field(description="Tasks at once (overrides [run]).", ge=1)] = None,
    no_cache: Annotated[bool, Field(description="Run `cache = true` tasks even when cached.")] = False,
) -> AgentRunStarted:
    """Start a plan of agent tasks in the background (as `capsule agents run --detach`); its session id."""
    _reap()
    with _tool_errors():
        return AgentRunStarted(session=agents.spawn(Path(plan_path), parallel, no_cache=no_cache))


def get_run_status(session: AgentsRef = "latest") -> RunStatus:
    """An agent run's state and each task's state, attempts, exit code and duration."""
    _reap()
    with _tool_errors():
        return RunStatus.model_validate(plain(agents.status(session)))


def get_task_result(
    task: Annotated[str, Field(description="The task id from the plan.")],
    session: AgentsRef = "latest",
) -> TaskResult:
    """One task's result: state, reason, every attempt, verify checks, hooks, policy, limits."""
    with _tool_errors():
        return TaskResult.model_validate(plain(agents.result(task, session)))


def kill_task(
    task: Annotated[str, Field(description="The id of a running task.")],
    grace_s: Annotated[float, Field(description="Seconds between SIGTERM and SIGKILL.", ge=0)] = 2.0,
) -> Killed:
    """Kill a running task's whole process group (TERM, then KILL after grace_s)."""
    with _tool_errors():
        killed = agents.kill(task, grace_s)
    return Killed.model_validate({"killed": plain(killed)})


def merge_task_branches(
    session: AgentsRef,
    repo: Annotated[str, Field(description="The git checkout to merge into.")],
    tasks: Annotated[
        list[str] | None, Field(description="Only these tasks' branches (default: every succeeded one).")
    ] = None,
) -> Merged:
    """Merge the branches of an agent run's `isolate = "worktree"` tasks into `repo`, in plan order; at the
    first conflict that merge is aborted and `conflict` names the task and files (as `agents merge`)."""
    with _tool_errors():
        return Merged.model_validate(plain(agents.merge(session, tuple(tasks or ()), Path(repo))))


# name -> (tool, annotations). Read-only tools change nothing (reading a status counts as interaction
# for an environment's inactivity timeout, which is no change of state); open-world tools run the
# user's commands, which may reach anything.
TOOLS: dict[str, tuple[Callable[..., Any], ToolAnnotations]] = {
    "run_command": (run_command, _hints(destructive=True, open_world=True)),
    "list_sessions": (list_sessions, READ),
    "get_report": (get_report, READ),
    "get_process_tree": (get_process_tree, READ),
    "activate_environment": (activate_environment, _hints(idempotent=True, open_world=True)),
    "deactivate_environment": (deactivate_environment, _hints(destructive=True, idempotent=True)),
    "list_environments": (list_environments, READ),
    "get_environment_status": (get_environment_status, READ),
    "start_process": (start_process, _hints(idempotent=True, open_world=True)),
    "stop_process": (stop_process, _hints(destructive=True, idempotent=True)),
    "restart_process": (restart_process, _hints(destructive=True, open_world=True)),
    "get_process_status": (get_process_status, READ),
    "kill_all_processes": (kill_all_processes, _hints(destructive=True, idempotent=True)),
    "list_processes": (list_processes, READ),
    "get_process_logs": (get_process_logs, READ),
    "start_agent_run": (start_agent_run, _hints(destructive=True, open_world=True)),
    "get_run_status": (get_run_status, READ),
    "get_task_result": (get_task_result, READ),
    "kill_task": (kill_task, _hints(destructive=True, idempotent=True)),
    "merge_task_branches": (merge_task_branches, _hints(destructive=True)),
}


# --- resources -----------------------------------------------------------------------------------


def sessions_resource() -> str:
    """Recorded sessions, newest first, as JSON (the shape of `capsule ls --json`)."""
    import orjson

    try:
        return orjson.dumps(plain(sessions.list_sessions(50))).decode()
    except CapsuleError as exc:
        raise ResourceError(str(exc)) from exc


def session_report_resource(id: str) -> str:
    """A session's report as JSON (the shape of `capsule report --json`; agents sessions: their DAG)."""
    import orjson

    try:
        return orjson.dumps(sessions.report(id).data).decode()
    except CapsuleError as exc:
        raise ResourceError(str(exc)) from exc


# --- the server ----------------------------------------------------------------------------------


def _one_line(exc: ValidationError) -> str:
    """pydantic's errors as `arg: message; arg: message` (its own text spans lines and links its docs)."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class CapsuleServer(MCPServer):
    """The SDK's server, with arguments that fail a tool's schema reported as one line."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        with contextlib.suppress(CapsuleError):
            environments.touch_all()  # an MCP call is activity for every environment's inactivity_timeout
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError) and not isinstance(exc, UnexpectedToolError):
                raise ToolError(f"{name}: bad arguments: {_one_line(cause)}") from None
            raise


def build_server() -> MCPServer:
    server = CapsuleServer(
        "capsule",
        version=__version__,
        instructions=(
            "Capsule records commands under strace and reports what they executed; it also supervises "
            "project environments (capsule.toml) and runs plans of agent tasks."
        ),
        log_level="WARNING",
    )
    for name, (fn, hints) in TOOLS.items():
        server.add_tool(fn, name=name, annotations=hints, structured_output=True)
    server.resource("capsule://sessions", name="sessions", mime_type="application/json")(sessions_resource)
    server.resource("capsule://sessions/{id}/report", name="session-report", mime_type="application/json")(
        session_report_resource
    )
    return server
