"""Commands answered before typer is imported, when their common form allows it.

`capsule env status [PATH] [--json]` of a running environment is read by scripts and dashboards in a
loop; through typer, rich and the session's fold it took ~40x `python -c pass`. `capsule run`'s start
is every recording's overhead, and typer (import and building the command) was ~20 ms of it. Any other
form (help, another option, a value this parser is not sure of, no running supervisor) returns None
and the ordinary command runs, with its checks and errors, so the two paths never differ in what they
print. `answer` is how every command runs, fast or through typer (capsule/cli/base.py).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
EXIT_TIMED_OUT = 124  # `capsule run --timeout` stopped the command: timeout(1)'s code
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any


def answer(body: Callable[[], int]) -> int:
    """Run a command's body the way every command runs, and return its exit code: first, spools that
    no live recorder owns are recovered into their sessions (or removed), so an unredacted trace never
    outlives the recording that made it; then one clear line and an exit code for every expected
    failure (the codes: capsule/cli/base.py)."""
    from capsule.api.errors import CapsuleError
    from capsule.api.sessions import tidy_spools

    try:
        tidy_spools()
        return body()
    except CapsuleError as exc:
        print(f"capsule: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("capsule: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `capsule report | head`: the reader left; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def env_status(args: list[str]) -> int | None:
    """Print `env status`'s output from the live supervisor and return 0, or None to take the slow path."""
    words = [a for a in args if a != "--json"]
    if len(words) > 1 or any(w.startswith("-") for w in words):
        return None
    from capsule.api.envfast import live_status

    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    out = live_status(words[0] if words else ".", "json" if "--json" in args else "text", color)
    if out is None:
        return None
    sys.stdout.write(out)
    sys.stdout.flush()
    return 0


# `capsule run`'s options as capsule/cli/record.py declares them for typer (with their help): each
# spelling -> (keyword of `record_and_report`, whether it takes a value). tests/e2e/test_cli_lazy.py
# checks the table against the typer command. (`--policy` is a plain path to typer as here: a missing or
# unreadable file is the recording's own one-line error either way.)
RUN_OPTIONS: dict[str, tuple[str, bool]] = {
    "--level": ("level", True),
    "-l": ("level", True),
    "--name": ("name", True),
    "-n": ("name", True),
    "--no-redact": ("no_redact", False),
    "--sample": ("sample", True),
    "--parent": ("parent", True),
    "--tracer": ("tracer_name", True),
    "--timeout": ("timeout", True),
    "--policy-fallback": ("policy_fallback", True),
    "--policy": ("policy_file", True),
}


def parse_run(args: list[str]) -> tuple[list[str], dict[str, Any]] | None:
    """`capsule run ARGS` as typer would parse it, for the forms this parser is sure of: options of
    RUN_OPTIONS (a value after a space, or after `=` for a long one), then `--` or the first word that
    is no option, and the command. None for any other form (typer explains it): help, an unknown or
    clustered option, a missing, empty or dash-led value, `--sample` that is no number, no command."""
    from capsule.api.importfast import option_value

    options: dict[str, Any] = {}
    at = 0

    def following() -> str | None:  # an option's value after a space: the next word, used up
        nonlocal at
        if at == len(args):
            return None
        at += 1
        return args[at - 1]

    while at < len(args) and args[at].startswith("-") and args[at] != "-":
        word = args[at]
        at += 1
        if word == "--":
            break
        read = option_value(word, RUN_OPTIONS, following)
        if read is None:
            return None
        options[read[0]] = read[1]
    command = args[at:]
    if not command:
        return None
    if "sample" in options:
        try:
            options["sample"] = float(options["sample"])  # as click's FLOAT converts
        except ValueError:
            return None
    if "policy_file" in options:
        from pathlib import Path

        options["policy_file"] = Path(options["policy_file"])  # as typer's Path converts
    return command, options


def run(args: list[str]) -> int | None:
    """`capsule run ARGS` without typer: its exit code, or None when typer must parse ARGS."""
    parsed = parse_run(args)
    if parsed is None:
        return None
    command, options = parsed
    return answer(lambda: _as_typer_would(lambda: record_and_report(command, **options)))


def import_(args: list[str]) -> int | None:
    """`capsule import ARGS` without typer: its exit code, or None when typer must parse ARGS."""
    from capsule.api.importfast import parse_import

    parsed = parse_import(args)
    if parsed is None:
        return None
    log, options = parsed
    return answer(lambda: import_and_print(log, **options))  # Ctrl-C: `capsule: interrupted`, 130


def import_and_print(
    log: str, *, name: str | None = None, level: str = "process", no_redact: bool = False
) -> int:
    """`capsule import`'s body (both parsers call it; the defaults are typer's): the new session's id."""
    from pathlib import Path

    from capsule.api.sessions import import_log

    imported = import_log(Path(log), name=name, level=level, redact=not no_redact)
    print(imported.session)
    return 0


def report_json(args: list[str]) -> int | None:
    """`capsule report --json [SESSION]` (the option before or after it) without typer, rich or the text
    renderer: its exit code, or None when typer must parse ARGS (another option or form) or the session
    is an agents or env session (its report is the DAG's or the services', capsule/cli/record.py)."""
    words = [a for a in args if a != "--json"]
    if len(args) - len(words) != 1 or len(words) > 1 or any(w.startswith("-") for w in words):
        return None
    from capsule.api import sessions

    def body() -> int:
        session_dir = sessions.resolve(words[0] if words else "latest")
        if sessions.is_supervised(session_dir):
            return -1
        kept: list[object] = []
        sessions.write_report_json(session_dir, sys.stdout.buffer, keep=kept)
        sys.stdout.flush()
        exiting_with_heap(kept)
        return 0

    code = answer(lambda: _as_typer_would(body))
    return None if code == -1 else code


def exiting_with_heap(kept: list[object] | None = None) -> None:
    """The report is out and the process exits next: leave its heap to the operating system.

    What a big report built can outlive its frames (a caught exception's traceback somewhere holds them
    in a cycle), so the interpreter's last collection would scan and free millions of objects: ~1 s
    after a 1,000,000-event report. Frozen objects are skipped by that collection. `kept` holds the
    fold the report was made from (`write_report_json`'s `keep`): put in a cycle of its own and frozen,
    it is never freed, where dropping it object by object cost ~0.2 s after 1,000,000 events.
    """
    import gc

    if kept is not None:
        kept.append(kept)
    gc.freeze()


def _as_typer_would(body: Callable[[], int]) -> int:
    """What typer does around a command's body: Ctrl-C is exit 130, silently; a closed pipe is exit 1,
    with the broken stream quiet from then on (typer/core.py `_main`)."""
    import errno

    try:
        return body()
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            os.dup2(devnull, stream.fileno())
        return 1


def record_and_report(
    command: list[str],
    *,
    level: str = "process",
    name: str | None = None,
    no_redact: bool = False,
    sample: float = 0.5,
    parent: str | None = None,
    tracer_name: str = "strace",
    timeout: str | None = None,
    policy_file: Path | None = None,
    policy_fallback: str | None = None,
) -> int:
    """`capsule run`'s body (both parsers call it; the defaults are typer's, checked by a test):
    record COMMAND, print the one summary line and the session's path; the exit code to end with."""
    import gc

    from capsule.api import sessions
    from capsule.api.errors import UsageError
    from capsule.duration import parse_duration

    try:
        time_limit = parse_duration(timeout) if timeout is not None else None
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None
    options: dict[str, Any] = {
        "level": level,
        "name": name,
        "redact": not no_redact,
        "parent": parent,
        "tracer": tracer_name,
        "sample": sample,
        "time_limit": time_limit,
        "policy_file": policy_file,
        "policy_fallback": policy_fallback,
    }
    # The recorder's modules load with the collector off, and what they build is frozen: it all lives
    # to the exit, and collections (the exit's too) would only rescan it (~60 ms of each `capsule run`).
    # strace starts first (without a policy): the command runs while trio and the recorder load.
    gc.disable()
    try:
        launched = sessions.launch(command, **options)
        sessions.load_recorder()
    finally:
        gc.freeze()
        gc.enable()
    outcome = sessions.record(command, launched=launched, **options)
    if outcome.warning:
        sys.stderr.write(f"capsule: warning: {outcome.warning}\n")
    style = Ansi(sys.stderr)
    if outcome.error:
        style.line(style.bold_red(f"capsule: error: {outcome.error}"))
    failures = ", " + style.red(f"{outcome.failed} failed") if outcome.failed else ""
    if outcome.blocked:  # the refusals themselves: the policy section of `capsule report`
        failures += " · " + style.bold_red(f"{outcome.blocked} blocked by the policy")
    status = outcome.signal or f"exit {outcome.exit_code}"
    if outcome.timed_out:  # `--timeout`: why the command was stopped, before how it ended
        status = style.bold_red(f"timed out after {time_limit:g}s") + f" · {status}"
    elif outcome.interrupted:  # the person at the terminal stopped it: what the report says too
        status += f" · stopped by the terminal ({outcome.interrupted})"
    plural = "es" if outcome.processes != 1 else ""
    counts = f"{outcome.processes} process{plural}{failures}"
    if outcome.processes == 0 and outcome.failed:  # the command itself could not start (said above)
        counts = style.red("not started")
    style.line(
        f"{style.dim('capsule:')} session {style.bold(outcome.session)} · {counts}"
        f" · {outcome.duration_s:.2f}s · {status}"
    )
    for refusal in outcome.refusals:  # what the command's own "Operation not permitted" was
        style.line(f"{style.dim('capsule:')} {style.red('blocked')} {refusal}")
    if (more := outcome.blocked - len(outcome.refusals)) > 0:
        style.line(f"{style.dim('capsule:')} {style.red('blocked')} {more} more (the report lists them)")
    style.line(f"{style.dim('capsule:')} {outcome.path}  (capsule report {outcome.session})")
    # Stopped by --timeout: 124, as timeout(1) says it, whatever the command made of its SIGTERM (one
    # that traps it and exits 0 must not read as a success); the session keeps the command's own exit.
    return EXIT_TIMED_OUT if outcome.timed_out else outcome.exit_code


class Ansi:
    """Styling for `capsule run`'s one summary line, by the rules rich follows: colour only on a
    terminal and never with NO_COLOR set. Importing rich for one line cost 28 ms of every run."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.enabled = stream.isatty() and not os.environ.get("NO_COLOR")

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def bold_red(self, text: str) -> str:
        return self._wrap("1;31", text)

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
