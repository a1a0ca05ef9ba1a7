"""Labels and workflows from the packaged rules, user overrides, and errors in rules TOML."""

from __future__ import annotations

import pytest

from capsule.fold import RuleError, RuleSet
from tests.fold.builders import packaged_rules

CASES = [
    # (exe, argv, label, workflow, agent)
    (
        "/usr/bin/node",
        ("node", "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js", "-p", "hi"),
        "agent",
        None,
        "claude-code",
    ),
    ("/home/u/.local/bin/claude", ("claude", "--version"), "agent", None, "claude-code"),
    ("/home/u/.local/share/claude/versions/2.0.1", ("claude",), "agent", None, "claude-code"),
    ("/usr/bin/node", ("node", "/usr/lib/node_modules/@openai/codex/bin/codex.js"), "agent", None, "codex"),
    (
        "/usr/lib/node_modules/@openai/codex/vendor/x86_64-unknown-linux-musl/codex/codex",
        ("codex", "exec", "hi"),
        "agent",
        None,
        "codex",
    ),
    (
        "/usr/bin/node",
        ("node", "/usr/lib/node_modules/@google/gemini-cli/dist/index.js"),
        "agent",
        None,
        "gemini-cli",
    ),
    ("/usr/bin/python3", ("python3", "-m", "aider", "--model", "x"), "agent", None, "aider"),
    ("/home/u/.local/bin/aider", ("aider",), "agent", None, "aider"),
    ("/usr/bin/python3", ("python3", "/home/u/.local/bin/aider"), "agent", None, "aider"),
    ("/usr/local/bin/cursor-agent", ("cursor-agent", "-p", "x"), "agent", None, "cursor-agent"),
    ("/usr/local/bin/opencode", ("opencode", "run"), "agent", None, "opencode"),
    ("/usr/local/bin/goose", ("goose", "session"), "agent", None, "goose"),
    ("/usr/bin/git", ("git", "status"), "tool", "vcs", None),
    ("/usr/bin/git", ("git", "-C", "/repo", "diff", "--stat"), "tool", "vcs", None),
    ("/usr/bin/gh", ("gh", "pr", "view"), "tool", "vcs", None),
    ("/usr/bin/python3.12", ("python", "-m", "pytest", "-q"), "tool", "test", None),
    ("/usr/bin/python3", ("python3", "-u", "-m", "unittest", "discover"), "tool", "test", None),
    ("/home/u/.venv/bin/pytest", ("pytest", "-x", "tests/"), "tool", "test", None),
    ("/usr/bin/cargo", ("cargo", "test", "--all"), "tool", "test", None),
    ("/usr/bin/cargo", ("cargo", "build", "--release"), "tool", "build", None),
    ("/usr/bin/cargo", ("cargo", "install", "ripgrep"), "tool", "install", None),
    ("/usr/local/go/bin/go", ("go", "test", "./..."), "tool", "test", None),
    ("/usr/local/go/bin/go", ("go", "build", "./cmd/x"), "tool", "build", None),
    ("/usr/bin/npm", ("npm", "install"), "tool", "install", None),
    ("/usr/bin/npm", ("npm", "ci"), "tool", "install", None),
    ("/usr/bin/npm", ("npm", "test"), "tool", "test", None),
    ("/usr/bin/npm", ("npm", "run", "build"), "tool", "build", None),
    ("/usr/bin/npx", ("npx", "vitest", "run"), "tool", "test", None),
    ("/usr/bin/pip", ("pip", "install", "-r", "requirements.txt"), "tool", "install", None),
    ("/usr/bin/python3", ("python3", "-m", "pip", "install", "x"), "tool", "install", None),
    ("/usr/bin/uv", ("uv", "pip", "install", "x"), "tool", "install", None),
    ("/usr/bin/apt-get", ("apt-get", "install", "-y", "strace"), "tool", "install", None),
    ("/usr/bin/make", ("make", "-j4"), "tool", "build", None),
    ("/usr/bin/make", ("make", "test"), "tool", "test", None),
    ("/usr/bin/gcc", ("gcc", "-O2", "-c", "x.c"), "tool", "build", None),
    ("/usr/bin/tsc", ("tsc", "--noEmit"), "tool", "build", None),
    ("/usr/bin/rg", ("rg", "-n", "TODO"), "tool", "explore", None),
    ("/usr/bin/ls", ("ls", "-la"), "tool", "explore", None),
    ("/usr/bin/find", ("find", ".", "-name", "*.py"), "tool", "explore", None),
    ("/usr/bin/cat", ("cat", "README.md"), "tool", "explore", None),
    ("/bin/sed", ("sed", "-n", "1,20p", "x.py"), "tool", "explore", None),
    ("/bin/sed", ("sed", "-i", "s/a/b/", "x.py"), "tool", "edit", None),
    ("/usr/bin/patch", ("patch", "-p1"), "tool", "edit", None),
    ("/usr/bin/tee", ("tee", "out.txt"), "tool", "edit", None),
    ("/usr/bin/python3", ("python3", "script.py"), "tool", "execute", None),
    ("/usr/bin/node", ("node", "server.js"), "tool", "execute", None),
    ("/bin/sh", ("sh", "-c", "echo hi"), "tool", "execute", None),
    ("/usr/bin/ps", ("ps", "aux"), "system", None, None),
    ("/usr/bin/true", ("true",), "system", None, None),
    ("/opt/thing/frobnicate", ("frobnicate", "--x"), "unknown", "execute", None),
]


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return packaged_rules()


@pytest.mark.parametrize(("exe", "argv", "label", "workflow", "agent"), CASES)
def test_packaged_rules(
    rules: RuleSet, exe: str, argv: tuple[str, ...], label: str, workflow: str | None, agent: str | None
) -> None:
    """Each realistic argv gets the expected label, workflow and agent name."""
    got = rules.classify([(exe, argv)])
    assert (got.label, got.workflow, got.agent) == (label, workflow, agent)


def test_agent_found_anywhere_in_the_exec_chain(rules: RuleSet) -> None:
    """`claude` is a node script: the kernel re-execs through env to node; it is still the agent."""
    chain = [
        ("/usr/local/bin/claude", ("claude", "-p", "hi")),
        ("/usr/bin/node", ("node", "/usr/local/bin/claude", "-p", "hi")),
    ]
    got = rules.classify(chain)
    assert (got.label, got.agent) == ("agent", "claude-code")


def test_last_exec_wins_for_tools(rules: RuleSet) -> None:
    """`env FOO=1 pytest` is classified by pytest, the last exec, not env."""
    chain = [("/usr/bin/env", ("env", "FOO=1", "pytest")), ("/usr/bin/pytest", ("pytest",))]
    assert rules.classify(chain).workflow == "test"


def test_all_seven_workflows_exist(rules: RuleSet) -> None:
    """The packaged rules cover explore, edit, build, test, vcs, install and execute."""
    assert {r.value for r in rules.workflow_rules} >= {
        "explore",
        "edit",
        "build",
        "test",
        "vcs",
        "install",
        "execute",
    }


def test_user_rules_take_precedence() -> None:
    """A user rule wins over the packaged ones, by name (replace) or simply by coming first."""
    user = """
[[label]]
name = "my-agent"
label = "agent"
agent = "house-bot"
exe = ["python3"]
args = ["*/housebot/main.py"]

[[label]]
name = "system"            # replaces the packaged system rule entirely
label = "system"
exe = ["frobnicate"]

[[workflow]]
name = "git-is-build-here"
workflow = "build"
exe = ["git"]
subcommand = ["submodule"]
"""
    rules = packaged_rules(user)
    bot = rules.classify_argv(["python3", "/opt/housebot/main.py"], "/usr/bin/python3")
    assert (bot.label, bot.agent) == ("agent", "house-bot")
    assert rules.classify_argv(["frobnicate"]).label == "system"
    assert rules.classify_argv(["ps", "aux"]).label == "unknown"  # the packaged rule was replaced
    assert rules.classify_argv(["git", "submodule", "update"]).workflow == "build"
    assert rules.classify_argv(["git", "status"]).workflow == "vcs"


def test_empty_rules_label_everything_unknown() -> None:
    """With no rules, every exec'd process is unknown and its workflow execute."""
    got = RuleSet.empty().classify_argv(["git", "status"])
    assert (got.label, got.workflow) == ("unknown", "execute")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[label]\nname='x'", "invalid TOML"),
        ("[[label]]\nname = 'bad-label'\nlabel = 'robot'\nexe = ['x']", "'bad-label'"),
        ("[[label]]\nname = 'no-cond'\nlabel = 'tool'", "'no-cond'"),
        ("[[workflow]]\nname = 'typo'\nworkflow = 'test'\nexes = ['x']", "unknown key(s) exes"),
        ("[[workflow]]\nname = 'w'\nworkflow = 'test'\nexe = 3", "'w'"),
        ("[[workflow]]\nworkflow = 'test'\nexe = ['x']", "has no `name`"),
        ("[[workflow]]\nname = 'a'\nworkflow = 'test'\nexe = ['x']\n" * 2, "'a' is defined twice"),
        ("[[rule]]\nname = 'a'", "unknown table(s) rule"),
        ("[[workflow]]\nname = 'ag'\nworkflow = 'test'\nagent = 'x'\nexe = ['x']", "'ag'"),
    ],
)
def test_bad_rules_raise_rule_error(text: str, message: str) -> None:
    """Malformed rules fail with RuleError, naming the rule (or saying why the TOML is invalid)."""
    with pytest.raises(RuleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RuleSet.from_sources(("rules.toml", text))


def test_rule_error_names_the_file() -> None:
    """from_sources puts the origin in the message, so a user sees which file to fix."""
    with pytest.raises(RuleError, match=r"^/home/u/\.capsule/rules\.toml: "):
        RuleSet.from_sources(
            ("/home/u/.capsule/rules.toml", "[[label]]\nname = 'x'\nlabel = 'nope'\nexe=['a']")
        )


@pytest.mark.parametrize(
    ("argv", "workflow", "tool"),
    [
        (["npm", "install"], "install", None),
        (["pnpm", "ci"], "install", None),
        (["yarn", "add", "left-pad"], "install", None),
        (["bun", "add", "zod"], "install", None),
        (["npm", "test"], "test", None),
        (["pnpm", "test"], "test", None),
        (["npm", "run", "build"], "build", None),
        (["yarn", "run", "build"], "build", None),
        (["bun", "run", "build"], "build", None),
        (["npx", "-y", "jest", "--ci"], "test", None),
        (["npx", "--package", "typescript", "tsc", "-p", "."], "build", None),
        (["uvx", "ruff", "check", "."], "build", "ruff"),
        (["uvx", "--from", "pytest==8", "pytest", "-q"], "test", "pytest"),
        (["pipx", "run", "black", "."], "build", "black"),
        (["npm", "exec", "vitest"], "test", "vitest"),
        (["node", "/usr/lib/node_modules/npm/bin/npm-cli.js", "ci"], "install", "npm"),
        (["node", "/p/node_modules/typescript/bin/tsc", "--noEmit"], "build", "tsc"),
        (["node", "/p/node_modules/.bin/jest"], "test", "jest"),
        (["node", "/p/node_modules/eslint/bin/eslint.js", "src"], "build", "eslint"),
    ],
)
def test_package_managers_and_runners(argv: list[str], workflow: str, tool: str | None) -> None:
    """npm/pnpm/yarn/bun install|ci|add, test and run build get their workflow; npx/uvx/pipx run and node
    running a known CLI's script are classified and named by the tool they run."""
    got = packaged_rules().classify_argv(argv)
    assert (got.label, got.workflow) == ("tool", workflow)
    if tool is not None:
        assert got.tool == tool


def test_node_running_a_users_script_stays_node() -> None:
    """node running a script outside a package's bin/ is just node executing it."""
    got = packaged_rules().classify_argv(["node", "server.js"])
    assert (got.workflow, got.tool) == ("execute", None)


def test_exit_rules_mark_answers() -> None:
    """An exit rule's codes are answers for matching processes; a user rule adds its own."""
    rules = packaged_rules('[[exit]]\nname = "my-probe"\nexe = ["probe"]\ncodes = [3]\n')
    assert 1 in rules.classify_argv(["grep", "-q", "x", "f"]).answers
    assert 1 in rules.classify_argv(["git", "diff", "--quiet"]).answers
    assert 1 not in rules.classify_argv(["git", "push"]).answers
    assert rules.classify_argv(["probe"]).answers == frozenset({3})
    assert rules.classify_argv(["pytest"]).answers == frozenset()


@pytest.mark.parametrize(
    "text",
    [
        '[[exit]]\nname = "x"\nexe = ["a"]',
        '[[exit]]\nname = "x"\nexe = ["a"]\ncodes = [0]',
        '[[exit]]\nname = "x"\nexe = ["a"]\ncodes = ["1"]',
        '[[runner]]\nname = "x"\nexe = ["a"]\nscript = "yes"',
    ],
)
def test_bad_exit_and_runner_rules(text: str) -> None:
    """Malformed exit and runner rules are RuleErrors naming the rule."""
    with pytest.raises(RuleError, match="'x'"):
        RuleSet.from_sources(("rules.toml", text))
