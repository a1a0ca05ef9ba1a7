"""The MCP server: recording, environments and agent runs as tools for AI assistants.

Each tool calls the function its CLI command calls (capsule/cli/*), so both give the same answers; a
`CliError` (the CLI's one-line error) becomes a `ToolError`, which the SDK returns as `isError: true` with
that line, and the server keeps serving. Blocking tools are plain functions: the SDK runs them in a worker
thread. `run_command` is async because `record_run` runs on the server's own trio loop (its signal
receiver needs the main thread). Outputs are pydantic models, so every tool has an output schema.

Transports: stdio (`trio.run(server.run_stdio_async)`) and streamable HTTP on 127.0.0.1, the SDK's ASGI
app served by hypercorn's trio worker (`serve_http`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import trio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from capsule import __version__
from capsule.cli.base import CliError

OUTPUT_TAIL = 64 * 1024  # bytes of a recorded command's stdout+stderr returned by run_command


@contextlib.contextmanager
def _tool_errors() -> Iterator[None]:
    """The CLI's expected failures, as tool errors carrying the same one line."""
    try:
        yield
    except CliError as exc:
        raise ToolError(str(exc)) from exc
    except OSError as exc:
        raise ToolError(f"{exc.filename or 'capsule'}: {exc.strerror or exc}") from exc


def _reap() -> None:
    from capsule.cli import agents, env

    agents.reap()
    env.reap()


# --- outputs -------------------------------------------------------------------------------------


class RunResult(BaseModel):
    """A command recorded under strace."""

    session: str = Field(description="The new session's id (for get_report, get_process_tree).")
    exit_code: int = Field(description="The command's exit code; 128+N if signal N killed it.")
    signal: str | None = Field(description="The signal that killed the command, e.g. SIGKILL.")
    timed_out: bool = Field(description="True if the command was killed for running past timeout_s.")
    duration_s: float
    processes: int = Field(description="Processes the command spawned, itself included.")
    failed: int = Field(description="Processes that exited non-zero or were killed.")
    error: str | None = Field(description="Why recording failed, or the command could not start.")
    output: str = Field(description="The last 64 KiB of the command's stdout and stderr, interleaved.")


class SessionRow(BaseModel):
    id: str
    kind: str = Field(description="run, env, agents or import.")
    name: str | None
    parent: str | None = Field(description="The env or agents session a traced run belongs to.")
    started: float = Field(description="Seconds since the epoch.")
    duration_s: float | None
    argv: list[str]
    processes: int | None
    failed: int | None
    exit_code: int | None
    signal: str | None
    status: str = Field(description="complete, recovered, running or incomplete.")


class SessionList(BaseModel):
    sessions: list[SessionRow] = Field(description="Newest first (the shape of `capsule ls --json`).")


class Report(BaseModel):
    session: str
    format: Literal["json", "text"]
    report: dict[str, Any] | None = Field(
        description="With format json: the shape of `capsule report --json` (agents sessions: their DAG)."
    )
    text: str | None = Field(description="With format text: the human report, without colour.")
    warnings: list[str]


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


class ProcessStatus(BaseModel):
    name: str
    state: str = Field(
        description="starting running ready unhealthy backoff exited stopped gave_up lost (or queued)."
    )
    pid: int | None
    restarts: int
    health: str | None
    exit_code: int | None
    signal: str | None
    uptime_s: float | None
    last_exit: float | None
    cpu_percent: float | None
    rss: int | None
    error: str | None
    trace_session: str | None


class Supervisor(BaseModel):
    pid: int | None
    alive: bool


class EnvironmentStatus(BaseModel):
    """The shape of `capsule env status --json`."""

    project: str | None
    config: str | None
    session: str
    active: bool
    deactivated: str | None
    supervisor: Supervisor
    processes: list[ProcessStatus]


class EnvironmentRow(BaseModel):
    session: str
    project: str | None
    config: str | None
    state: str = Field(description="up, down or 'supervisor dead'.")
    supervisor: Supervisor
    processes: int
    started: float


class EnvironmentList(BaseModel):
    environments: list[EnvironmentRow] = Field(description="Newest first.")


class ManagedProcess(ProcessStatus):
    project: str | None
    session: str
    supervisor_alive: bool


class ProcessList(BaseModel):
    processes: list[ManagedProcess]


class Done(BaseModel):
    messages: list[str] = Field(description="What was done, one line each.")


class ProcessLogs(BaseModel):
    name: str
    log: str = Field(description="The log file: `<time> <stdout|stderr|capsule> <line>` per line.")
    lines: list[str]


class AgentRunStarted(BaseModel):
    session: str = Field(description="The agents session: poll it with get_run_status.")


class TaskRow(BaseModel):
    id: str
    state: str = Field(
        description="queued running succeeded failed timed_out killed limit_exceeded skipped denied spawn_failed."
    )
    attempts: int
    exit_code: int | None
    duration_s: float | None
    reason: str | None
    pid: int | None
    blocked: int = Field(0, description="Execs, opens or writes the guard refused in the task's tree.")


class RunStatus(BaseModel):
    """The shape of `capsule agents status --json`."""

    run: str
    name: str | None
    state: str = Field(description="running, succeeded, failed, aborted or interrupted.")
    counts: dict[str, int]
    tasks: list[TaskRow]


class TaskResult(BaseModel):
    """The shape of `capsule agents result --json`."""

    id: str
    state: str
    reason: str | None
    exit_code: int | None
    duration_s: float | None
    attempts: list[dict[str, Any]]
    verified: list[dict[str, Any]]
    hooks: list[dict[str, Any]]
    violations: list[dict[str, Any]]
    limits: list[dict[str, Any]]
    blocked: list[dict[str, Any]] = []  # what the guard refused in the task's tree (policy.blocked)


class KilledTask(BaseModel):
    session: str
    task: str
    attempt: int
    pid: int


class Killed(BaseModel):
    killed: list[KilledTask]


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


async def run_command(
    command: Annotated[list[str], Field(description="The command and its arguments, e.g. ['make', 'test'].")],
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
    from capsule.cli.base import _home
    from capsule.stages.run import record_run
    from capsule.stages.tracer import TracerMissing, find_tracer

    if not command or not command[0]:
        raise ToolError("command is empty: give the program and its arguments, e.g. ['ls', '-l']")
    try:
        tracer = find_tracer()
    except TracerMissing as exc:
        raise ToolError(str(exc)) from exc
    home = _home()
    with tempfile.TemporaryFile(prefix="capsule-mcp-") as out:
        stdin = os.open(os.devnull, os.O_RDONLY)
        try:
            with _tool_errors():
                outcome = await record_run(
                    list(command),
                    home=home,
                    tracer=tracer,
                    level=level,
                    name=name,
                    stdio=(stdin, out.fileno(), out.fileno()),
                    time_limit=timeout_s,
                )
        finally:
            os.close(stdin)
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - OUTPUT_TAIL))
        output = out.read().decode("utf-8", errors="replace")
    t = outcome.tally
    return RunResult(
        session=outcome.session_id,
        exit_code=outcome.exit_code,
        signal=outcome.signal,
        timed_out=outcome.signal is not None and outcome.duration_s >= timeout_s,
        duration_s=round(outcome.duration_s, 6),
        processes=t.processes,
        failed=t.failed,
        error=outcome.error,
        output=output,
    )


def list_sessions(
    limit: Annotated[int, Field(description="At most this many sessions.", ge=0)] = 20,
    include_children: Annotated[
        bool, Field(description="Also the run sessions of traced services and tasks.")
    ] = False,
) -> SessionList:
    """Recorded sessions, newest first: id, kind, command, duration, processes, exit, status."""
    from capsule.cli.record import session_rows

    with _tool_errors():
        rows = session_rows(limit, include_children)
    return SessionList(sessions=[SessionRow.model_validate(r) for r in rows])


def get_report(
    session: SessionRef = "latest",
    format: Annotated[
        Literal["json", "text"], Field(description="json: the stable report object; text: the human report.")
    ] = "json",
    full: Annotated[bool, Field(description="Text only: show every process, do not collapse.")] = False,
) -> Report:
    """Analyse a session: process tree, failures, tools used, agent phases (as `capsule report`)."""
    from capsule.cli.base import _resolve, _rules
    from capsule.cli.record import _is_agents, _load_state

    with _tool_errors():
        session_dir = _resolve(session)
        if _is_agents(session_dir):
            return _agents_report(session_dir, format)
        state, warnings = _load_state(session_dir, _rules())
    if format == "text":
        from capsule.report import render

        return Report(
            session=session_dir.name, format="text", report=None, text=_plain(render(state, full=full)),
            warnings=warnings,
        )  # fmt: skip
    from capsule.report import report_dict

    data = report_dict(state)
    return Report(session=session_dir.name, format="json", report=data, text=None, warnings=warnings)


def _agents_report(session_dir: Path, format: str) -> Report:
    from capsule.cli.agents import _fold, _live_state
    from capsule.report.agents import render_agents, report_dict

    run = _fold(session_dir)
    state = _live_state(run)
    if format == "text":
        text = render_agents(run, state, {})
        return Report(session=session_dir.name, format="text", report=None, text=text, warnings=[])
    return Report(
        session=session_dir.name, format="json", report=report_dict(run, state, {}), text=None, warnings=[]
    )


def _plain(renderable: Any) -> str:
    from rich.console import Console

    console = Console(width=160, no_color=True, color_system=None, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    try:
        console.print(renderable)
        return console.export_text()
    finally:
        console.file.close()


def get_process_tree(
    session: SessionRef = "latest",
    max_nodes: Annotated[int, Field(description="Return at most this many processes.", ge=1)] = 2000,
) -> ProcessTree:
    """A recorded session's process tree: who spawned whom, argv, label, duration, exit status."""
    from capsule.cli.base import _resolve, _rules
    from capsule.cli.record import _is_agents, _load_state
    from capsule.report.html import tree_order

    with _tool_errors():
        session_dir = _resolve(session)
        if _is_agents(session_dir):
            raise ToolError(
                f"session {session_dir.name} is an agents session: its tasks' run sessions have trees "
                "(list_sessions with include_children)"
            )
        state, _warnings = _load_state(session_dir, _rules())
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
    from capsule.cli.env import activate, status_dict

    _reap()
    with _tool_errors():
        env = activate(Path(path), timeout_s)
    data = status_dict(env)
    bad = [p["name"] for p in data["processes"] if p["state"] not in ("ready", "running", "exited")]
    if bad:
        raise ToolError(f"not up: {', '.join(bad)} (see get_process_logs)")
    return EnvironmentStatus.model_validate(data)


def deactivate_environment(path: EnvPath) -> Done:
    """Stop every process of an environment in reverse dependency order (as `capsule env down`)."""
    from capsule.cli.env import deactivate

    with _tool_errors():
        messages = deactivate(Path(path))
    _reap()
    return Done(messages=messages)


def list_environments() -> EnvironmentList:
    """Every environment on this machine: project, config, up or down, process count."""
    from capsule.cli.env import env_rows

    with _tool_errors():
        return EnvironmentList.model_validate({"environments": env_rows()})


def get_environment_status(path: EnvPath) -> EnvironmentStatus:
    """Per process: state, pid, uptime, restarts, last exit, health, CPU %, RSS (as `env status`)."""
    from capsule.cli.env import environment_status

    with _tool_errors():
        return EnvironmentStatus.model_validate(environment_status(Path(path)))


def _control(op: str, name: str, env: str | None) -> Done:
    from capsule.cli.env import control_process

    with _tool_errors():
        return Done(messages=[control_process(op, name, None if env is None else Path(env))])


def start_process(name: ProcessName, env: EnvOption = None) -> Done:
    """Start a stopped process of a running environment; fails if it does not come up."""
    return _control("start", name, env)


def stop_process(name: ProcessName, env: EnvOption = None) -> Done:
    """Stop one process of a running environment (it stays stopped until started)."""
    return _control("stop", name, env)


def restart_process(name: ProcessName, env: EnvOption = None) -> Done:
    """Stop and start one process of a running environment; fails if it does not come up."""
    return _control("restart", name, env)


def list_processes() -> ProcessList:
    """Every managed process of every open environment, with its state, pid, CPU and RSS."""
    from capsule.cli.env import ps_rows

    with _tool_errors():
        return ProcessList.model_validate({"processes": ps_rows()})


def get_process_logs(
    name: ProcessName,
    env: EnvOption = None,
    lines: Annotated[int, Field(description="How many last lines.", ge=0)] = 50,
) -> ProcessLogs:
    """The last lines of a managed process's stdout and stderr, with time and stream."""
    from capsule.cli.env import read_logs

    with _tool_errors():
        log, tail = read_logs(name, None if env is None else Path(env), lines)
    return ProcessLogs(
        name=name, log=str(log), lines=[line.decode("utf-8", errors="replace").rstrip("\n") for line in tail]
    )


def start_agent_run(
    plan_path: Annotated[str, Field(description="The plan file (TOML) with [run], [defaults] and [[task]].")],
    parallel: Annotated[int | None, Field(description="Tasks at once (overrides [run]).", ge=1)] = None,
) -> AgentRunStarted:
    """Start a plan of agent tasks in the background (as `capsule agents run`); its session id."""
    from capsule.cli.agents import spawn_run

    _reap()
    with _tool_errors():
        return AgentRunStarted(session=spawn_run(Path(plan_path), parallel))


def get_run_status(session: AgentsRef = "latest") -> RunStatus:
    """An agent run's state and each task's state, attempts, exit code and duration."""
    from capsule.cli.agents import _agents_session, _fold, _live_state
    from capsule.fold.tasks import status_dict

    _reap()
    with _tool_errors():
        run = _fold(_agents_session(session))
    return RunStatus.model_validate(status_dict(run, _live_state(run)))


def get_task_result(
    task: Annotated[str, Field(description="The task id from the plan.")],
    session: AgentsRef = "latest",
) -> TaskResult:
    """One task's result: state, reason, every attempt, verify checks, hooks, policy, limits."""
    from capsule.cli.agents import _agents_session, _fold, task_result

    with _tool_errors():
        return TaskResult.model_validate(task_result(_fold(_agents_session(session)), task))


def kill_task(
    task: Annotated[str, Field(description="The id of a running task.")],
    grace_s: Annotated[float, Field(description="Seconds between SIGTERM and SIGKILL.", ge=0)] = 2.0,
) -> Killed:
    """Kill a running task's whole process group (TERM, then KILL after grace_s)."""
    from capsule.cli.agents import kill_tasks

    with _tool_errors():
        rows = kill_tasks(task, grace_s)
    if not rows:
        raise ToolError(f"no running task {task!r}")
    return Killed.model_validate({"killed": rows})


TOOLS = (
    run_command, list_sessions, get_report, get_process_tree,
    activate_environment, deactivate_environment, list_environments, get_environment_status,
    start_process, stop_process, restart_process, list_processes, get_process_logs,
    start_agent_run, get_run_status, get_task_result, kill_task,
)  # fmt: skip


def build_server() -> MCPServer:
    server: MCPServer = MCPServer(
        "capsule",
        version=__version__,
        instructions=(
            "Capsule records commands under strace and reports what they executed; it also supervises "
            "project environments (capsule.toml) and runs plans of agent tasks."
        ),
        log_level="WARNING",
    )
    for fn in TOOLS:
        server.add_tool(fn, structured_output=True)
    return server


async def serve_http(
    server: MCPServer,
    port: int,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Streamable HTTP at http://127.0.0.1:PORT/mcp until `shutdown` is set (or cancelled)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]  # loopback only: the tools run commands
    config.accesslog = None
    app = server.streamable_http_app(host="127.0.0.1")
    trigger = shutdown.wait if shutdown is not None else trio.sleep_forever
    await serve(app, config, shutdown_trigger=trigger, task_status=task_status)  # type: ignore[arg-type]  # Starlette is an ASGI app; the protocols differ only in typing
