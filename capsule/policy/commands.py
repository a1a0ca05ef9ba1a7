"""Command rules: is this exec allowed, and if not, which rule says so.

An exec is judged on its command line (`argv`, with the program's own name for argv[0], so
`/usr/bin/sudo ls` and an argv[0] that lies about the program both meet `sudo *`) and, for
`sh|bash|zsh|dash [-opts] -c STRING`, on every command and every pipeline inside STRING, parsed by
bashlex (a port of bash's own grammar): `a; b`, `a && b`, `a || b`, `a | b`, `$(a)`, `` `a` ``, `<(a)`,
subshells, `if`/`for`/`while` bodies and nested `sh -c` strings. A pipeline is also matched as one line,
its commands joined by ` | ` (that is what `curl * | sh` means). Words are matched as written, before
the shell expands them; the exec the shell then makes is judged again, expanded, by the guard. A string
bashlex cannot parse is split on `;`, `&`, `|` and newlines instead (documented in the README).

Rules are fnmatch globs; `X *` also covers `X` alone. Wrappers (`env`, `nice`, `timeout`, `xargs`, …)
are looked through, so `env sudo ls` meets `sudo *`, while `ls sudo` does not. With `allow_commands`,
an exec must match one of them; a shell's `-c` exec is allowed when every command inside is (shell
builtins never exec and are not judged), and the commands it then runs are judged at their own exec.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase
from typing import Any

import attrs

from capsule.policy.rules import Policy

SHELLS = frozenset({"sh", "bash", "zsh", "dash"})
WRAPPERS = frozenset(
    {"env", "nice", "nohup", "timeout", "time", "xargs", "exec", "command", "stdbuf", "setsid", "ionice"}
)
BUILTINS = frozenset(
    [
        "cd",
        "echo",
        "printf",
        "test",
        "[",
        "[[",
        "true",
        "false",
        ":",
        "export",
        "set",
        "unset",
        "exit",
        "return",
        "read",
        "local",
        "shift",
        "eval",
        "source",
        ".",
        "alias",
        "unalias",
        "type",
        "hash",
        "wait",
        "trap",
        "umask",
        "ulimit",
        "pwd",
        "declare",
        "typeset",
        "let",
        "break",
        "continue",
    ]
)
MAX_DEPTH = 8  # nested `sh -c "sh -c '…'"` levels looked into
NOT_ALLOWED = "allow_commands"  # the rule a Verdict names when no allow_commands glob matched
_CRUDE_SPLIT = re.compile(r"\|\||&&|[;&\n()`]")
_CONTINUED = re.compile(r"(\|\|?|&&)[ \t]*\n")  # an operator ending a line: the command goes on


@attrs.frozen(kw_only=True)
class Verdict:
    allowed: bool
    rule: str | None = None  # the glob that denied it, or NOT_ALLOWED
    command: str = ""  # the command line (or the command inside a shell string) the rule matched


ALLOW = Verdict(allowed=True)


def _name(word: str) -> str:
    return word.rsplit("/", 1)[-1]


def shell_script(argv: Sequence[str]) -> str | None:
    """The STRING of `sh|bash|zsh|dash [-opts] -c STRING`, or None."""
    if not argv or _name(argv[0]) not in SHELLS:
        return None
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--" or not arg.startswith(("-", "+")):
            return None
        if not arg.startswith("--") and "c" in arg[1:]:
            return argv[i + 1] if i + 1 < len(argv) else None
    return None


def shell_file(argv: Sequence[str]) -> str | None:
    """The script operand of `sh|bash|zsh|dash [-opts] FILE [args]` (no -c, no -s), or None: the guard
    reads it and judges its commands like a -c string."""
    if not argv or _name(argv[0]) not in SHELLS:
        return None
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg in ("-o", "+o", "-O", "+O"):
            return None  # option arguments: not worth a full getopt; judged at each exec instead
        if not arg.startswith(("-", "+")):
            return arg
        if not arg.startswith("--") and ("c" in arg[1:] or "s" in arg[1:]):
            return None
    return None


def _words(node: Any) -> list[str]:
    return [part.word for part in node.parts if part.kind == "word"]


def _walk(node: Any, commands: list[tuple[str, ...]], pipelines: list[tuple[tuple[str, ...], ...]]) -> None:
    kind = node.kind
    if kind == "command":
        words = _words(node)
        if words:
            commands.append(tuple(words))
    elif kind == "pipeline":
        cmds = [part for part in node.parts if part.kind == "command"]
        pipelines.append(tuple(tuple(_words(c)) for c in cmds))
    for attr in ("parts", "list"):
        for child in getattr(node, attr, None) or ():
            _walk(child, commands, pipelines)
    for attr in ("command", "output"):
        child = getattr(node, attr, None)
        if child is not None and hasattr(child, "kind"):
            _walk(child, commands, pipelines)


def _parse(script: str) -> tuple[list[tuple[str, ...]], list[tuple[tuple[str, ...], ...]]]:
    commands: list[tuple[str, ...]] = []
    pipelines: list[tuple[tuple[str, ...], ...]] = []
    # bashlex builds its LALR tables when imported (~0.15 s): only a guarded `sh -c` pays for it.
    import bashlex  # type: ignore[import-untyped]

    try:
        for tree in bashlex.parse(script):
            _walk(tree, commands, pipelines)
    except Exception:  # bashlex has no `case`, `[[ ]]`, `$#`, arrays: most real scripts (pyenv's)
        return _tokenized(script)
    return commands, pipelines


def _split_crudely(script: str) -> tuple[list[tuple[str, ...]], list[tuple[tuple[str, ...], ...]]]:
    """For a text whose quotes shlex cannot balance (`"$(echo "it's")"` is bash, not shlex): commands
    split on the operators, parentheses and backquotes, pipelines on `|`, words without their quotes;
    reserved words are skipped as `_tokenized` skips them."""
    commands: list[tuple[str, ...]] = []
    pipelines: list[tuple[tuple[str, ...], ...]] = []
    script = _CONTINUED.sub(r"\1 ", script.replace("\\\n", ""))  # lines joined, as bash joins them
    for piece in _CRUDE_SPLIT.split(script):
        pipeline = []
        for part in piece.split("|"):
            words = [w for w in (word.strip("\"'$") for word in part.split()) if w]
            while words and (words[0] in _RESERVED or _ASSIGNMENT.match(words[0])):
                words.pop(0)
            if words and words[0] not in _HEADS:
                commands.append(tuple(words))
                pipeline.append(tuple(words))
        if len(pipeline) > 1:
            pipelines.append(tuple(pipeline))
    return commands, pipelines


# What is not a command at the head of one: compound commands' reserved words (`then curl x | sh` is
# `curl x | sh`), and the words that begin a `for`/`case`/`select` head (dropped whole).
_RESERVED = frozenset(
    {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "esac", "{", "}", "!"}
)
_HEADS = frozenset({"for", "case", "select", "function"})
_PUNCTUATION = "();<>|&`\n"
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")


def _uncommented(script: str) -> str:
    """`script` without its comments: a `#` that begins a word outside quotes, to the end of its line
    (`echo '#'; curl x | sh` keeps its second command)."""
    out: list[str] = []
    quote = ""
    i, n = 0, len(script)
    while i < n:
        c = script[i]
        if quote:
            if c == "\\" and quote == '"' and i + 1 < n:
                if script[i + 1] != "\n":
                    out.append(script[i : i + 2])
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c == "\\" and i + 1 < n:
            if script[i + 1] != "\n":  # a backslash-newline joins two lines: gone, as in bash
                out.append(script[i : i + 2])
            i += 2
            continue
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or script[i - 1] in " \t\n;&|()`"):
            end = script.find("\n", i)
            i = n if end < 0 else end
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _lexer(script: str) -> shlex.shlex:
    lexer = shlex.shlex(_uncommented(script), posix=True, punctuation_chars=_PUNCTUATION)
    lexer.whitespace = " \t\r"
    lexer.commenters = ""  # (shlex would take a `#` inside a word, `a#b`, for one)
    lexer.wordchars += "[]{}$!%+,:@^#"
    return lexer


def _tokenized(
    script: str, depth: int = 0
) -> tuple[list[tuple[str, ...]], list[tuple[tuple[str, ...], ...]]]:
    """The commands and pipelines of a script bashlex cannot parse, from shell tokens: operators,
    parentheses and backquotes end a command (`$(…)` and `` `…` `` are commands of their own), `|`
    joins a pipeline, redirections and leading assignments are dropped, reserved words skipped.
    Conservative where it is unsure: `$(…)` inside single quotes is judged too. A text whose quotes do
    not balance is split crudely."""
    try:
        tokens = list(_lexer(script))
    except ValueError:
        return _split_crudely(script)
    commands: list[tuple[str, ...]] = []
    pipelines: list[tuple[tuple[str, ...], ...]] = []
    words: list[str] = []
    pipeline: list[tuple[str, ...]] = []
    redirect = False

    def end(piped: bool) -> None:
        nonlocal words
        while words and (words[0] in _RESERVED or _ASSIGNMENT.match(words[0])):
            words.pop(0)
        if words and words[0] in _HEADS:
            words = []
        if words:
            commands.append(tuple(words))
            pipeline.append(tuple(words))
        words = []
        if not piped:
            if len(pipeline) > 1:
                pipelines.append(tuple(pipeline))
            pipeline.clear()

    for token in tokens:
        if redirect:
            redirect = False  # the redirection's target: a file, not an argument
        elif not token.strip(_PUNCTUATION) and ("<" in token or ">" in token):  # `>`, `2>&1`, `&>`
            redirect = True
            if words and words[-1].isdigit():
                words.pop()  # `2>/dev/null`: the descriptor
        elif not token.strip(_PUNCTUATION):  # operators (shlex runs them together: `)\n`, `|\n`)
            operator = token.replace("\n", "") or "\n"  # a newline after an operator continues it
            if operator == "\n" and not words and pipeline:
                continue  # `a |` then a newline: the pipeline goes on
            end(piped=operator in ("|", "|&"))
        else:
            words.append(token)
            if ("$(" in token or "`" in token) and depth < MAX_DEPTH:  # inside double quotes
                more, more_pipelines = _tokenized(token, depth + 1)
                commands += more
                pipelines += more_pipelines
    end(piped=False)
    return commands, pipelines


# Parsed shell texts, by text: bashlex takes 5-40 ms for one of pyenv's scripts, and a `python3` run
# through pyenv's shim executes ~10 of them (~0.15 s) every time, the same texts each time. Bounded:
# texts up to KEPT_TEXT characters, at most KEPT_PARSES of them (cleared when full).
KEPT_PARSES = 256
KEPT_TEXT = 1 << 16
_parsed: dict[str, tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]] = {}


def shell_commands(script: str, depth: int = 0) -> tuple[list[tuple[str, ...]], list[str]]:
    """The commands inside a shell string (nested `sh -c` strings opened too) and its pipelines, each
    pipeline as one line `a x | b y`."""
    if depth == 0 and len(script) <= KEPT_TEXT:
        kept = _parsed.get(script)
        if kept is None:
            if len(_parsed) >= KEPT_PARSES:
                _parsed.clear()
            found, found_lines = _shell_commands(script, 0)
            kept = _parsed[script] = (tuple(found), tuple(found_lines))
        return list(kept[0]), list(kept[1])
    return _shell_commands(script, depth)


def _shell_commands(script: str, depth: int) -> tuple[list[tuple[str, ...]], list[str]]:
    commands, pipelines = _parse(script)
    lines = [" | ".join(" ".join(c) for c in p) for p in pipelines if len(p) > 1]
    if depth < MAX_DEPTH:
        for words in list(commands):
            inner = shell_script(words)
            if inner is not None:
                more, more_lines = _shell_commands(inner, depth + 1)
                commands += more
                lines += more_lines
    return commands, lines


def _lines(argv: Sequence[str]) -> Iterator[str]:
    """The spellings of one command line that rules are matched against."""
    if not argv:
        return
    yield " ".join(argv)
    head = _name(argv[0])
    yield " ".join([head, *argv[1:]])
    if head in WRAPPERS:
        for i in range(1, len(argv)):
            if "=" not in argv[i] and not argv[i].startswith("-"):
                yield from _lines(argv[i:])
                break


def command_line_matches(rule: str, argv: Sequence[str]) -> bool:
    """The rule matches one of this command line's spellings (not the commands inside a shell string)."""
    return any(_matches(line, rule) for line in _lines(argv))


def _matches(line: str, rule: str) -> bool:
    return fnmatchcase(line, rule) or (rule.endswith(" *") and line == rule[:-2])


def _first(rules: Sequence[str], lines: Sequence[str]) -> tuple[str, str] | None:
    for rule in rules:
        for line in lines:
            if _matches(line, rule):
                return rule, line
    return None


def _deny(policy: Policy, argv: Sequence[str], inner: list[tuple[str, ...]], piped: list[str]) -> Verdict:
    candidates = [*_lines(argv)]
    for words in inner:
        candidates += _lines(words)
    candidates += piped
    hit = _first(policy.deny_commands, candidates)
    if hit is not None:
        return Verdict(allowed=False, rule=hit[0], command=hit[1])
    return ALLOW


def _allowed(policy: Policy, argv: Sequence[str], inner: list[tuple[str, ...]] | None) -> Verdict:
    if _first(policy.allow_commands, [*_lines(argv)]) is not None:
        return ALLOW
    if inner is None or not inner:
        return Verdict(allowed=False, rule=NOT_ALLOWED, command=" ".join(argv))
    for words in inner:
        if _name(words[0]) in BUILTINS or shell_script(words) is not None:
            continue
        if _first(policy.allow_commands, [*_lines(words)]) is None:
            return Verdict(allowed=False, rule=NOT_ALLOWED, command=" ".join(words))
    return ALLOW


def decide_exec(
    policy: Policy, argv: Sequence[str], path: str | None = None, *, script_text: str | None = None
) -> Verdict:
    """Allow this exec, or the rule that denies it. `path` is the program the kernel was asked to run:
    its name stands in for argv[0], which a caller chooses freely. `script_text` is the content of the
    `shell_file` operand, when the caller could read it: judged like a -c string."""
    if not policy.deny_commands and not policy.allow_commands:
        return ALLOW
    argv = list(argv) or [path or ""]
    if path:
        argv = [_name(path), *argv[1:]]
    script = shell_script(argv)
    if script is None and script_text is not None:
        inner, piped = shell_commands(script_text)
        verdict = _deny(policy, argv, inner, piped)
        if not verdict.allowed or not policy.allow_commands:
            return verdict
        return _allowed(policy, argv, inner)
    inner, piped = shell_commands(script) if script is not None else ([], [])
    verdict = _deny(policy, argv, inner, piped)
    if not verdict.allowed or not policy.allow_commands:
        return verdict
    return _allowed(policy, argv, inner if script is not None else None)


def denied_command(policy: Policy, argv: Sequence[str]) -> str | None:
    """The first `deny_commands` glob that this command line (or a command inside it) meets, or None."""
    verdict = decide_exec(attrs.evolve(policy, allow_commands=()), argv)
    return verdict.rule
