"""Lazy registration of the CLI's command groups: the table in capsule/cli/__init__.py is the truth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import capsule.cli as cli_package
from tests.conftest import CapsuleRunner


def _registered() -> dict[str, str]:
    """Every top-level name each capsule.cli module registers, by loading them one by one in a fresh
    interpreter (this one may have loaded them all already)."""
    script = (
        "import importlib, json, capsule.cli.base as b\n"
        "out = {}\n"
        f"for m in {list(cli_package.MODULES)!r}:\n"
        "    c, g = len(b.app.registered_commands), len(b.app.registered_groups)\n"
        "    importlib.import_module('capsule.cli.' + m)\n"
        "    for cmd in b.app.registered_commands[c:]:\n"
        "        out[cmd.name or cmd.callback.__name__.replace('_', '-')] = m\n"
        "    for grp in b.app.registered_groups[g:]:\n"
        "        out[grp.name] = m\n"
        "print(json.dumps(out))\n"
    )
    import json

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    found: dict[str, str] = json.loads(done.stdout)
    return found


def test_table_names_every_command_of_its_module() -> None:
    """COMMANDS maps each top-level command and group to the module that registers it, and no other."""
    assert _registered() == cli_package.COMMANDS


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["run", "--", "true"], "record"),
        (["ls", "--json"], "record"),
        (["env", "status"], "env"),
        (["agents", "run", "plan.toml"], "agents"),
        (["--help"], None),
        (["--version"], None),
        (["no-such-command"], None),
        ([], None),
    ],
)
def test_command_of(argv: list[str], module: str | None) -> None:
    """The first word picks the module; an option first or an unknown word loads everything."""
    assert cli_package.command_of(argv) == module


def test_a_command_loads_only_its_module() -> None:
    """`capsule ls` imports capsule.cli.record and not the agents or env groups."""
    script = (
        "import sys\n"
        "from capsule.cli import command_of, load\n"
        "load(command_of(['ls']))\n"
        "print(sorted(m for m in sys.modules if m.startswith('capsule.cli.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['capsule.cli.base', 'capsule.cli.fast', 'capsule.cli.record']"


def test_app_attribute_has_every_command() -> None:
    """`from capsule.cli import app` (CliRunner in tests) sees the whole CLI."""
    from capsule.cli import app

    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands if c.callback}
    names |= {g.name for g in app.registered_groups if g.name}
    assert names == set(cli_package.COMMANDS)


@pytest.mark.parametrize("argv", [["ls", "--json"], ["env", "--help"], ["--help"], ["nope"]])
def test_entry_point_still_behaves(argv: list[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The console script with lazy loading answers as the whole app does (help, errors, commands)."""
    import os

    env = {**os.environ, "CAPSULE_HOME": str(tmp_path / "home")}
    lazy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from capsule.cli import main; sys.argv[0] = 'capsule'; main()",
            *argv,
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    whole = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; import capsule.cli as c; c.load(); from capsule.cli.base import main; "
            "sys.argv[0] = 'capsule'; main()",
            *argv,
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (lazy.returncode, lazy.stdout, lazy.stderr) == (whole.returncode, whole.stdout, whole.stderr)


# What `capsule run` must not load: the event kinds it never writes, the environments' modules, the folds
# and parsers of the readers (each import is start-up time of every recording; issue 15).
NOT_ON_THE_RUN_PATH = (
    "capsule.events.env",
    "capsule.events.tasks",
    "capsule.events.observed",
    "capsule.events.placement",
    "capsule.stages.envproc",
    "capsule.fold.environment",
    "capsule.fold.session",
    "capsule.report",
    "capsule.cli.env",
    "capsule.cli.agents",
    "capsule.cli.record",  # the common forms of `run` are parsed without typer (capsule/cli/fast.py)
    "typer",
    "capsule.stages.ebpf",  # --tracer ebpf's alone
    "cattrs",  # the writer's records encode through generated code (capsule/codec/lines.py)
)
# What it loads only once strace is started, while the command runs (and strace's relay starts) on the
# other core: strace starts before trio and the recorder load (stages/launch.py).
AFTER_STRACE_STARTS = (
    "trio",
    "capsule.stages.run",
    "capsule.stages.pipeline",
    "capsule.parse",
    "capsule.track",
)


def test_run_loads_only_what_recording_needs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A real `capsule run -- true` (strace and all), through the console entry point, records its
    session without importing any module of NOT_ON_THE_RUN_PATH, and those of AFTER_STRACE_STARTS only
    once strace (not its `-V` probe) has been spawned."""
    import json
    import os

    script = (
        "import atexit, json, subprocess, sys\n"
        "at_spawn = []\n"
        "popen = subprocess.Popen.__init__\n"
        "def spy(self, args, *a, **k):\n"
        "    if args[0].endswith('strace') and '-V' not in args:\n"
        "        at_spawn.extend(sys.modules)\n"
        "    popen(self, args, *a, **k)\n"
        "subprocess.Popen.__init__ = spy\n"
        "atexit.register(lambda: print(json.dumps([sorted(at_spawn), sorted(sys.modules)]), file=sys.__stdout__))\n"
        "from capsule.cli import main\n"
        "sys.argv = ['capsule', 'run', '--', 'true']\n"
        "main()\n"
    )
    env = {**os.environ, "CAPSULE_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "1 process" in done.stderr  # it did record
    at_spawn, loaded = (set(names) for names in json.loads(done.stdout.splitlines()[-1]))
    assert "capsule.stages.launch" in at_spawn
    assert sorted(loaded & set(NOT_ON_THE_RUN_PATH)) == []
    assert sorted(at_spawn & set(AFTER_STRACE_STARTS)) == []
    assert set(AFTER_STRACE_STARTS) <= loaded


def test_fast_run_options_are_the_typer_commands() -> None:
    """capsule/cli/fast.py parses the options of `capsule run` that capsule/cli/record.py declares
    (every one), each taking a value or not as there, and its body's
    defaults are the command's."""
    import inspect

    import typer.main

    from capsule.cli import app as whole
    from capsule.cli import fast

    run = typer.main.get_command(whole).commands["run"]  # type: ignore[attr-defined]
    declared = {
        spelling: (param.name, not param.is_flag)
        for param in run.params
        if param.param_type_name == "option"
        for spelling in param.opts
    }
    assert {k: v for k, v in declared.items() if k not in ("--help", "-h")} == fast.RUN_OPTIONS
    defaults = {p.name: p.default for p in run.params if p.param_type_name == "option"}
    body = inspect.signature(fast.record_and_report).parameters
    assert {name: body[name].default for name in defaults} == defaults


@pytest.mark.parametrize(
    ("args", "parsed"),
    [
        (["--", "true"], (["true"], {})),
        (["make", "-j4"], (["make", "-j4"], {})),
        (
            ["-l", "file", "--name=x", "--no-redact", "--", "-x"],
            (["-x"], {"level": "file", "name": "x", "no_redact": True}),
        ),
        (["--sample", "0.25", "--sample=1", "sh"], (["sh"], {"sample": 1.0})),
        (["--", "--", "a"], (["--", "a"], {})),
        (["-"], (["-"], {})),
        (["--policy", "p.toml", "true"], (["true"], {"policy_file": Path("p.toml")})),
        (["--policy=../p.toml", "--", "true"], (["true"], {"policy_file": Path("../p.toml")})),
    ],
)
def test_fast_run_parses_the_common_forms(args: list[str], parsed: object) -> None:
    from capsule.cli.fast import parse_run

    assert parse_run(args) == parsed


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--"],
        ["--help", "--", "true"],
        ["-h"],
        ["-x", "true"],
        ["-lfile", "true"],
        ["-l=file", "true"],
        ["--no-redact=1", "true"],
        ["--name"],
        ["--name", "", "true"],
        ["--name", "-x", "true"],
        ["--sample", "abc", "true"],
        ["--policy", "", "true"],
        ["--policy=", "true"],
        ["--lev", "file", "true"],
    ],
)
def test_fast_run_leaves_the_rest_to_typer(args: list[str]) -> None:
    """Help, unknown, clustered or abbreviated options, doubtful values, no command: typer's."""
    from capsule.cli.fast import parse_run

    assert parse_run(args) is None


def _masked(text: str) -> str:
    import re

    text = re.sub(r"\d{8}-\d{6}-[0-9a-f]{5}", "ID", text)
    text = re.sub(r" · pid \d+ ", " · pid PID ", text)  # a refusal's line names its process
    return re.sub(r"\d+\.\d\ds ·", "Ts ·", text)


@pytest.mark.parametrize(
    "args",
    [
        ["--", "true"],
        ["-n", "x", "--level=file", "--sample", "0", "sh", "-c", "exit 3"],
        ["--no-redact", "--", "/no/such/program"],
        ["--timeout", "nope", "--", "true"],
        ["--tracer", "nope", "--", "true"],
        ["--sample", "abc", "--", "true"],
        [],
        ["--policy", "/no/such/policy.toml", "--", "true"],
        ["--policy", "{policy}", "--", "sh", "-c", "sudo x; exit 3"],
    ],
)
def test_fast_run_answers_as_typer_does(args: list[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`capsule run ARGS` through the entry point (the typer-free path where it applies) prints and
    exits exactly as the typer command does (session ids and durations aside)."""
    import os

    policy = tmp_path / "policy.toml"
    policy.write_text('[policy]\ndeny_commands = ["sudo *"]\n')
    args = [a.replace("{policy}", str(policy)) for a in args]
    env = {**os.environ, "CAPSULE_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    prelude = "import sys; sys.argv[0] = 'capsule'; "
    entry = prelude + "from capsule.cli import main; main()"
    typer_only = (
        prelude + "import capsule.cli as c; c.load('record'); from capsule.cli.base import main; main()"
    )
    answers = [
        subprocess.run([sys.executable, "-c", script, "run", *args], capture_output=True, text=True, env=env)
        for script in (entry, typer_only)
    ]
    fast, typed = ((a.returncode, a.stdout, _masked(a.stderr)) for a in answers)
    assert fast == typed


def test_fast_import_options_are_the_typer_commands() -> None:
    """capsule/api/importfast.py parses the options `capsule import` declares (capsule/cli/record.py),
    each taking a value or not as there, and the body's defaults are the command's."""
    import inspect

    import typer.main

    from capsule.api.importfast import IMPORT_OPTIONS
    from capsule.cli import app as whole
    from capsule.cli import fast

    command = typer.main.get_command(whole).commands["import"]  # type: ignore[attr-defined]
    declared = {
        spelling: (param.name, not param.is_flag)
        for param in command.params
        if param.param_type_name == "option"
        for spelling in param.opts
    }
    assert {k: v for k, v in declared.items() if k not in ("--help", "-h")} == IMPORT_OPTIONS
    defaults = {p.name: p.default for p in command.params if p.param_type_name == "option"}
    body = inspect.signature(fast.import_and_print).parameters
    assert {name: body[name].default for name in defaults} == defaults


@pytest.mark.parametrize(
    ("args", "parsed"),
    [
        (["x.log"], ("x.log", {})),
        (
            ["-l", "file", "x.log", "--name=n", "--no-redact"],
            ("x.log", {"level": "file", "name": "n", "no_redact": True}),
        ),
        (["--level=all", "-n", "a b", "x.log"], ("x.log", {"level": "all", "name": "a b"})),
        (["-"], ("-", {})),
    ],
)
def test_fast_import_parses_the_common_forms(args: list[str], parsed: object) -> None:
    from capsule.api.importfast import parse_import

    assert parse_import(args) == parsed


@pytest.mark.parametrize(
    "args",
    [
        *(
            [],
            ["a", "b"],
            ["--help"],
            ["-h", "x"],
            ["--", "x"],
            ["-lfile", "x"],
            ["-l=file", "x"],
            ["--name", "x"],
        ),
        *(["--name", "", "x"], ["--name", "-x", "x"], ["--no-redact=1", "x"], ["--lev", "file", "x"], [""]),
    ],
)
def test_fast_import_leaves_the_rest_to_typer(args: list[str]) -> None:
    from capsule.api.importfast import parse_import

    assert parse_import(args) is None


def test_fast_import_answers_as_typer_does(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """The same output and exit code on both paths: a session id, or one error line."""
    import re

    log = tmp_path / "x.log"
    log.write_text(
        '7 1795239818.000000 execve("/bin/true", ["true"], 0x1 /* 1 vars */) = 0\n7 1795239818.1 +++ exited with 0 +++\n'
    )
    for fast_form in (
        ["import", str(log)],
        ["import", str(log), "--level", "bogus"],
        ["import", str(tmp_path / "nope")],
    ):
        from capsule.api.importfast import parse_import

        typer_form = [*fast_form, "--name="]  # an empty name: typer takes it, the fast parser does not
        assert parse_import(fast_form[1:]) is not None
        assert parse_import(typer_form[1:]) is None
        one, other = capsule(*fast_form), capsule(*typer_form)
        assert one.returncode == other.returncode, (one.stderr, other.stderr)
        masked = [re.sub(r"\d{8}-\d{6}-[0-9a-f]{5}", "ID", p.stdout) + p.stderr for p in (one, other)]
        assert masked[0] == masked[1]


# What `capsule report --json` of a run or import session must not load: typer, rich and the text
# renderer, the recovery stages (trio) when the session needs no recovery.
NOT_ON_THE_REPORT_JSON_PATH = ("typer", "rich", "capsule.cli.record", "capsule.report.text", "trio")


@pytest.mark.parametrize(
    "form",
    [["--json", "{s}"], ["{s}", "--json"], ["--json"], ["--json", "nosuch"], ["--json", "{agents}"],
     ["--json", "{s}", "--full"], ["--json", "--json", "{s}"], ["--json", "-x"]],
)  # fmt: skip
def test_fast_report_json_answers_as_typer_does(form: list[str], tmp_path: Path) -> None:
    """`capsule report --json [SESSION]` through the entry point (typer-free where it applies) prints
    and exits exactly as the typer command does; another form, or an agents session, is typer's."""
    import json
    import os
    import shutil

    from capsule.codec import encode_line
    from capsule.events import SessionStarted, kind_versions
    from tests.golden import discover

    runs = tmp_path / "home" / "runs"
    run = next(g for g in discover() if g.name == "parallel")
    shutil.copytree(run, runs / run.name, ignore=shutil.ignore_patterns("expected"))
    (runs / "agents-1").mkdir(mode=0o700)
    header = SessionStarted(
        ts=1.0, capsule_version="0.1.0", session_id="agents-1", session_kind="agents", argv=("x",), cwd="/",
        host="h", tracer="strace", tracer_version="6.1", tracer_flags=(), kinds=kind_versions(),
    )  # fmt: skip
    (runs / "agents-1" / "events.jsonl").write_bytes(encode_line(0, header))
    args = [w.format(s=run.name, agents="agents-1") for w in form]
    env = {**os.environ, "CAPSULE_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    prelude = "import sys; sys.argv[0] = 'capsule'; "
    entry = (
        prelude + "import atexit, json\n"
        "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.__stderr__))\n"
        "from capsule.cli import main; main()"
    )
    typer_only = (
        prelude + "import capsule.cli as c; c.load('record'); from capsule.cli.base import main; main()"
    )
    answers = [
        subprocess.run([sys.executable, "-c", script, "report", *args], capture_output=True, env=env)
        for script in (entry, typer_only)
    ]
    *rest, loaded = answers[0].stderr.decode().rstrip("\n").split("\n")
    fast = (answers[0].returncode, answers[0].stdout, "\n".join(rest))
    typed = (answers[1].returncode, answers[1].stdout, answers[1].stderr.decode().rstrip("\n"))
    assert fast == typed
    if form in (["--json", "{s}"], ["{s}", "--json"]):
        assert json.loads(fast[1])["processes"]
        assert sorted(set(json.loads(loaded)) & set(NOT_ON_THE_REPORT_JSON_PATH)) == []
