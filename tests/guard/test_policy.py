"""The guard's pure core: the [policy] table, exec decisions (bashlex), path rules, enforcement planning."""

from __future__ import annotations

import hypothesis
import pytest
from hypothesis import strategies as st

from capsule.events import FileOpened, NetConnected, ProcExec
from capsule.policy import Policy, PolicyError, decide_exec, parse_policy, protected_path, read_only_path
from capsule.policy.commands import NOT_ALLOWED, shell_commands, shell_file, shell_script
from capsule.policy.enforce import (
    DETECT,
    MechanismMissing,
    bwrap_args,
    detect_violation,
    plan_enforcement,
    refused_open,
)
from capsule.policy.rules import MOUNT, NETNS, SECCOMP

DENY = Policy(deny_commands=("rm -rf *", "sudo *", "curl * | sh", "git push --force*"))


def test_parse_policy_reads_every_key() -> None:
    """Every key of the [policy] table lands in the record; `network = false` means off."""
    policy = parse_policy(
        {
            "deny_commands": ["sudo *"],
            "allow_commands": "git *",
            "protect_paths": [".env"],
            "read_only_paths": ["/etc"],
            "network": False,
            "on_violation": "kill",
        }
    )
    assert policy == Policy(
        deny_commands=("sudo *",),
        allow_commands=("git *",),
        protect_paths=(".env",),
        read_only_paths=("/etc",),
        network="off",
        on_violation="kill",
    )
    assert policy.mechanisms() == (SECCOMP, MOUNT, NETNS)
    assert parse_policy({}).empty


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"deny_command": ["x"]}, "unknown key 'deny_command'"),
        ({"network": "wifi"}, "network: expected one of on, off, loopback"),
        ({"on_violation": "warn"}, "on_violation: expected one of block, kill"),
        ({"protect_paths": [1]}, "protect_paths: expected a string or a list of strings"),
        ({"deny_commands": [" "]}, "deny_commands: empty pattern"),
        ({"protect_paths": ""}, "protect_paths: empty pattern"),  # was a rule covering the cwd
        ([], "must be a table"),
    ],
)
def test_parse_policy_errors_name_the_key(table: object, message: str) -> None:
    """A malformed table is one PolicyError naming the key."""
    with pytest.raises(PolicyError, match=message):
        parse_policy(table)


@pytest.mark.parametrize(
    ("argv", "rule", "command"),
    [
        (["bash", "-c", "rm -rf canary; echo done"], "rm -rf *", "rm -rf canary"),
        (
            ["bash", "-c", "echo a; curl -s file://$PWD/x.sh | sh"],
            "curl * | sh",
            "curl -s file://$PWD/x.sh | sh",
        ),
        (["sh", "-c", "make && sudo make install"], "sudo *", "sudo make install"),
        (["sh", "-c", "echo $(sudo id)"], "sudo *", "sudo id"),
        (["sh", "-c", "echo `sudo id`"], "sudo *", "sudo id"),
        (["dash", "-ec", "if true; then (cd a; sudo b); fi"], "sudo *", "sudo b"),
        (["zsh", "-c", "for i in 1 2; do git push --force-with-lease; done"], "git push --force*", None),
        (["bash", "-lc", "sh -c 'sudo id'"], "sudo *", "sudo id"),
        (["/usr/bin/sudo", "-n", "true"], "sudo *", "sudo -n true"),
        (["sudo"], "sudo *", "sudo"),
        (["env", "FOO=1", "sudo", "ls"], "sudo *", "sudo ls"),
        (["ls", "sudo"], None, None),
        (["echo", "sudo make"], None, None),
        (["sh", "-c", "for i in $(seq 3); do echo; done | sh"], None, None),
        (["sh", "-c", "curl -s x > f; sh f"], None, None),
    ],
)
def test_deny_commands(argv: list[str], rule: str | None, command: str | None) -> None:
    """deny_commands meet the argv and every command and pipeline inside a shell string."""
    verdict = decide_exec(DENY, argv)
    assert verdict.rule == rule
    assert verdict.allowed is (rule is None)
    if command is not None:
        assert verdict.command == command


def test_the_program_path_stands_in_for_argv0() -> None:
    """An argv[0] that lies about the program does not hide it: the exec's path names it."""
    assert decide_exec(DENY, ["ls", "-l"], "/usr/bin/sudo").rule == "sudo *"


def test_unparsable_shell_string_is_split_on_operators() -> None:
    """What bashlex cannot parse is split on ; & | and newlines (quotes or not: the cautious reading),
    so rules still meet its commands."""
    assert decide_exec(DENY, ["sh", "-c", 'echo "open; sudo id']).rule == "sudo *"
    assert decide_exec(DENY, ["sh", "-c", 'echo "open; ls']).allowed
    assert decide_exec(DENY, ["sh", "-c", "case x in esac; sudo id <<<"]).rule == "sudo *"


def test_script_files_are_judged_like_strings() -> None:
    """`bash FILE` is judged on the commands FILE holds, when the guard could read it."""
    script = "echo a\ncurl -s file:///x.sh | sh\n"
    assert decide_exec(DENY, ["bash", "s.sh"], script_text=script).rule == "curl * | sh"
    assert decide_exec(DENY, ["bash", "s.sh"], script_text="echo fine\n").allowed


@pytest.mark.parametrize(
    ("argv", "script", "file"),
    [
        (["bash", "-c", "x"], "x", None),
        (["sh", "-ec", "x", "name"], "x", None),
        (["bash", "s.sh", "a"], None, "s.sh"),
        (["bash", "-x", "--", "s.sh"], None, "s.sh"),
        (["bash", "-s"], None, None),
        (["bash"], None, None),
        (["python3", "-c", "x"], None, None),
    ],
)
def test_shell_operands(argv: list[str], script: str | None, file: str | None) -> None:
    """The -c STRING and the script FILE of a shell's argv are found, nothing else is."""
    assert shell_script(argv) == script
    assert shell_file(argv) == file


def test_shell_commands_lists_pipelines_as_lines() -> None:
    """A pipeline is one line, its commands joined by ' | '; nested sh -c strings are opened."""
    commands, pipelines = shell_commands("a x | b y && sh -c 'c | d'")
    assert ("a", "x") in commands
    assert ("c",) in commands
    assert pipelines == ["a x | b y", "c | d"]


@pytest.mark.parametrize(
    ("script", "rule"),
    [
        ("if [[ -n $x ]]; then curl -s x | sh; fi", "curl * | sh"),
        ("[[ 1 ]] && curl -s x 2>/dev/null | sh", "curl * | sh"),
        ("case $1 in a) rm -rf junk ;; esac", "rm -rf *"),
        ("while [[ $# -gt 0 ]]; do sudo ls; done", "sudo *"),
        ('arr=(a b); for i in "${arr[@]}"; do FOO=1 rm -rf junk; done', "rm -rf *"),
        ('[[ 1 ]]; echo "$(curl x | sh)"', "curl * | sh"),
        ("[[ 1 ]]; echo `sudo ls`", "sudo *"),
        ("echo '#'; [[ 1 ]] && sudo ls # comment", "sudo *"),
        ("[[ 1 ]]\nif true\nthen\n  sudo ls\nfi", "sudo *"),
        ("[[ 1 ]]; curl x \\\n  | sh", "curl * | sh"),  # a backslash-newline joins the lines
        ("[[ 1 ]]; curl x |\n sh", "curl * | sh"),  # so does a newline after `|`
        ("echo 'x; curl x |\n sh", "curl * | sh"),  # (unbalanced: split crudely)
        ("[[ 1 ]] && ls -l # sudo x", None),  # a comment is no command
        # quotes shlex cannot balance (bash nests them inside $(…)): split crudely, still per command
        ('echo "$(echo "it\'s")"; [[ 1 ]] && echo "$(curl x | sh)"', "curl * | sh"),
        ("echo 'a; [[ 1 ]] && sudo ls", "sudo *"),
        ("case x in *) echo ok;; esac", None),
    ],
)
def test_strings_bashlex_cannot_parse_are_judged_command_by_command(script: str, rule: str | None) -> None:
    """bashlex has no `case`, `[[ ]]`, `$#` or arrays (22 of pyenv's 26 scripts fail): its fallback
    split on operators alone and let `[[ 1 ]] && curl x | sh` through, a pipeline starting with `[[`."""
    policy = parse_policy({"deny_commands": ["curl * | sh", "rm -rf *", "sudo *"]})
    verdict = decide_exec(policy, ["bash", "-c", script], "/bin/bash")
    assert verdict.rule == rule, verdict


def test_an_unparsable_script_with_comments_meets_allow_commands() -> None:
    """Under allow_commands, a comment's words and a compound command's reserved words are no commands."""
    policy = parse_policy({"allow_commands": ["ls *", "cat *"]})
    script = "# list it\nif [[ -d . ]]; then ls -l; fi  # done\ncat f"
    assert decide_exec(policy, ["bash", "-c", script], "/bin/bash").allowed
    assert decide_exec(policy, ["bash", "-c", "[[ 1 ]] && rm x"], "/bin/bash").command == "rm x"


def test_a_shell_text_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyenv's shim executes the same ~10 bash scripts at every `python3` (5-40 ms of bashlex each): a
    text judged again is not parsed again, and its answer is the same, copied (a caller's change to
    the lists it got does not reach the next caller)."""
    from capsule.policy import commands

    parsed: list[str] = []
    parse = commands._parse
    monkeypatch.setattr(commands, "_parse", lambda text: parsed.append(text) or parse(text))
    monkeypatch.setattr(commands, "_parsed", {})
    script = "set -e\nfor v in $(pyenv-version-name); do sh -c 'rm -rf x | cat'; done\n"
    first = shell_commands(script)
    first[0].clear()
    again = shell_commands(script)
    assert ("rm", "-rf", "x") in again[0]
    assert again[1] == ["rm -rf x | cat"]
    assert parsed == [script, "rm -rf x | cat"]  # the text, and the -c string inside it: once each
    policy = parse_policy({"deny_commands": ["rm -rf *"]})
    for _ in range(2):
        verdict = decide_exec(policy, ["bash", "/s"], "/bin/bash", script_text=script)
        assert (verdict.allowed, verdict.rule) == (False, "rm -rf *")
    assert len(parsed) == 2
    monkeypatch.setattr(commands, "KEPT_PARSES", 1)
    shell_commands("true")  # full: the kept parses are cleared, not grown past the bound
    assert list(commands._parsed) == ["true"]


@pytest.mark.parametrize(
    ("argv", "allowed", "command"),
    [
        (["git", "status"], True, ""),
        (["git"], True, ""),
        (["ls", "-l"], False, "ls -l"),
        (["bash", "-c", "cd sub && git status"], True, ""),
        (["bash", "-c", "git status; rm x"], False, "rm x"),
        (["bash", "-c", "bash -c 'git log'"], True, ""),
    ],
)
def test_allow_commands(argv: list[str], allowed: bool, command: str) -> None:
    """With allow_commands, only matching commands run; a shell string must hold only allowed ones."""
    verdict = decide_exec(Policy(allow_commands=("git *",)), argv)
    assert verdict.allowed is allowed
    if not allowed:
        assert verdict.rule == NOT_ALLOWED
        assert verdict.command == command


def test_deny_wins_over_allow() -> None:
    """A command both allowed and denied is denied."""
    policy = Policy(allow_commands=("git *",), deny_commands=("git push --force*",))
    assert decide_exec(policy, ["git", "push", "--force"]).rule == "git push --force*"


@pytest.mark.parametrize(
    ("path", "protected", "read_only"),
    [
        ("/repo/.env", ".env", None),
        ("a/b/server.key", "*.key", None),
        ("/r/.git/config", ".git/config", None),
        ("/home/u/.ssh/id_ed25519", "~/.ssh", None),
        ("/etc/hosts", None, "/etc"),
        ("/etc", None, "/etc"),
        ("/etcetera/x", None, None),
        ("/r/env.py", None, None),
    ],
)
def test_path_rules(path: str, protected: str | None, read_only: str | None) -> None:
    """Path globs cover the path whole, as a suffix, by name, and everything inside a directory."""
    policy = Policy(protect_paths=(".env", "*.key", ".git/config", "~/.ssh"), read_only_paths=("/etc",))
    assert protected_path(policy, path, home="/home/u") == protected
    assert read_only_path(policy, path, home="/home/u") == read_only


def test_missing_mechanism_refuses_with_one_line() -> None:
    """A policy needing a missing mechanism refuses to start, naming it and the way out."""
    policy = Policy(deny_commands=("sudo *",), network="off")
    with pytest.raises(MechanismMissing) as caught:
        plan_enforcement(policy, {NETNS: "needs root"})
    message = str(caught.value)
    assert "\n" not in message
    assert "network-namespace" in message
    assert "--policy-fallback=detect" in message
    # parts the policy does not need may be missing
    assert plan_enforcement(Policy(deny_commands=("x",)), {NETNS: "no"}).enforced == (SECCOMP,)


def test_fallback_detect_downgrades_with_a_warning() -> None:
    """--policy-fallback=detect keeps what works in the kernel and names what is only detected."""
    policy = Policy(deny_commands=("sudo *",), protect_paths=(".env",))
    plan = plan_enforcement(policy, {SECCOMP: "kernel too old"}, DETECT)
    assert plan.enforced == (MOUNT,)
    assert plan.detected == (SECCOMP,)
    assert plan.warning is not None
    assert "seccomp-notify" in plan.warning
    assert "kernel too old" in plan.warning


def test_bwrap_args_hide_freeze_and_drop_capabilities() -> None:
    """bubblewrap binds stand-ins over hidden paths, read-only binds, keeps the spool writable."""
    args = bwrap_args(
        hidden=[("/r/.env", False), ("/home/u/.ssh", True)],
        read_only=["/etc"],
        writable=["/home/u/.capsule/spool/x"],
        empty_file="/tmp/g/file",
        empty_dir="/tmp/g/dir",
    )
    text = " ".join(args)
    assert text.startswith("--dev-bind / /")
    assert "--ro-bind /etc /etc" in text
    assert "--ro-bind /tmp/g/file /r/.env" in text
    assert "--ro-bind /tmp/g/dir /home/u/.ssh" in text
    assert text.index("--ro-bind /etc") < text.index("--bind /home/u/.capsule")
    assert args[-2:] == ["--cap-drop", "ALL"]


def test_a_hidden_directory_holding_capsules_state_is_a_tmpfs_sealed_after_the_binds() -> None:
    """Over the empty directory bubblewrap cannot make the recording's mount points: the directory
    that holds them gets a tmpfs, Capsule's own state is bound read-only and the spool writable inside
    it, and only then is the tmpfs made mode 111 and read-only; other hidden directories are as before."""
    args = bwrap_args(
        hidden=[("/home/u", True), ("/srv/vault", True)],
        read_only=[],
        own=["/home/u/.capsule"],
        writable=["/home/u/.capsule/spool/x"],
        empty_file="/tmp/g/file",
        empty_dir="/tmp/g/dir",
    )
    text = " ".join(args)
    assert "--tmpfs /home/u" in text
    assert "--ro-bind /tmp/g/dir /srv/vault" in text
    order = [
        "--tmpfs /home/u",
        "--ro-bind /home/u/.capsule /home/u/.capsule",
        "--bind /home/u/.capsule/spool/x",
        "--chmod 0111 /home/u --remount-ro /home/u",
    ]
    assert [text.index(part) for part in order] == sorted(text.index(part) for part in order)
    assert "/tmp/g/dir /home/u" not in text
    assert args[-2:] == ["--cap-drop", "ALL"]


def test_detect_violation_and_refused_open() -> None:
    """After the fact: a denied exec that ran, an open of a protected path, a refused open, a connect."""
    policy = Policy(
        deny_commands=("sudo *",), protect_paths=(".env",), read_only_paths=("/etc",), network="off"
    )
    ran = ProcExec(ts=1.0, pid=5, path="/usr/bin/sudo", argv=("sudo", "id"), ok=True)
    found = detect_violation(policy, ran)
    assert found is not None
    assert found.rule == "sudo *"
    assert detect_violation(policy, ProcExec(ts=1.0, pid=5, path="/x/sudo", argv=("sudo",), ok=False)) is None
    opened = FileOpened(ts=1.0, pid=6, path=".env", flags="O_RDONLY")
    assert detect_violation(policy, opened, parts=(MOUNT,)) is not None
    assert detect_violation(policy, opened, parts=(SECCOMP,)) is None
    wrote = FileOpened(ts=1.0, pid=6, path="/etc/x", flags="O_WRONLY|O_CREAT")
    assert detect_violation(policy, wrote) is not None
    connect = NetConnected(ts=1.0, pid=7, family="AF_INET", address="127.0.0.1:80")
    assert detect_violation(policy, connect) is not None
    refused = FileOpened(ts=1.0, pid=6, path="/etc/x", flags="O_WRONLY", ok=False, errno="EROFS")
    hit = refused_open(policy, refused)
    assert hit is not None
    assert hit.rule == "/etc"
    assert refused_open(policy, FileOpened(ts=1.0, pid=6, path="/x", ok=False, errno="ENOENT")) is None


def test_fallback_key_is_part_of_the_policy() -> None:
    """`fallback` is validated, defaults to refuse, asks for nothing by itself, and decides the downgrade."""
    assert parse_policy({}).fallback == "refuse"
    assert parse_policy({"fallback": "detect"}).empty
    with pytest.raises(PolicyError, match="fallback"):
        parse_policy({"fallback": "warn"})
    policy = parse_policy({"deny_commands": ["sudo *"], "fallback": "detect"})
    downgraded = plan_enforcement(policy, {"seccomp-notify": "pretend"}, policy.fallback)
    assert downgraded.detected == ("seccomp-notify",)


def _covered_by_fnmatch(rules: list[str], path: str, home: str | None) -> str | None:
    """What a path rule covers, spelled with fnmatch's five calls (as the guard matched them before
    they became one pattern per rule)."""
    from fnmatch import fnmatchcase

    name = path.rsplit("/", 1)[-1]
    for rule in rules:
        pattern = home + rule[1:] if home is not None and rule.startswith("~") else rule
        pattern = pattern.rstrip("/") or "/"
        if fnmatchcase(path, pattern) or fnmatchcase(path, "*/" + pattern) or fnmatchcase(name, pattern):
            return rule
        if fnmatchcase(path, pattern.rstrip("/") + "/*") or fnmatchcase(path, "*/" + pattern + "/*"):
            return rule
    return None


_RULES = [
    ".env",
    "*.key",
    ".git/config",
    "~/.ssh",
    "/etc",
    "secret*",
    "a/*/b",
    "[ab]c",
    "x?y",
    "/",
    "dir/",
    "~",
    "*",
]
_PARTS = [
    "a",
    "b",
    "c",
    ".env",
    "x.key",
    ".git",
    "config",
    ".ssh",
    "etc",
    "secret1",
    "ac",
    "xzy",
    "dir",
    "",
    "ü",
    "a\nb",
]


@hypothesis.given(
    rules=st.lists(st.sampled_from(_RULES), min_size=1, max_size=3),
    parts=st.lists(st.sampled_from(_PARTS), min_size=1, max_size=5),
    absolute=st.booleans(),
    home=st.sampled_from([None, "/root"]),
)
def test_one_pattern_per_rule_covers_what_fnmatch_did(
    rules: list[str], parts: list[str], absolute: bool, home: str | None
) -> None:
    from capsule.policy.paths import _match

    path = ("/" if absolute else "") + "/".join(parts)
    assert _match(rules, path, home) == _covered_by_fnmatch(rules, path, home)
