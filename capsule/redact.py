"""Redaction of secret-looking values: in raw strace bytes, argv lists, command strings and events.

The rules are data (`capsule/rules/secrets/shapes.toml`; a folder of its own, apart from the label rules); this module compiles them and applies them. Every
rule is written against strace-quoted text, and an argv is redacted by rendering it the way strace prints
one, so a raw trace line and the argv an event carries are masked alike: a replay of a redacted trace
re-derives the same events. Only a rule's secret group becomes `***` (which needs no escaping in a
strace string); the rest of the line, shell operators included, is kept as it was.

Speed: one Aho-Corasick pass (ahocorasick-rs) over a lowered copy of a chunk finds every rule's hints at
once; only the lines holding a hint, and only the rules whose hints they hold, run a regex.
"""

from __future__ import annotations

import ahocorasick_rs

# typing.TYPE_CHECKING without importing typing: the relay imports this module at every `capsule run`.
# So do `re` and `tomllib` (~13 ms of the relay's start): the relay's trace rarely holds a hint, and it
# takes the parsed rules from its cache (`use_shapes`), so they load on first need.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Iterable
    from typing import Any, TypeVar

    from capsule.events import Event

    _S = TypeVar("_S", str, bytes)

MASK = "***"
_MASK_B = MASK.encode()

# The placeholders of shapes.toml, the same in both forms (the text form of a trace line is its bytes
# decoded as Latin-1, which changes no ASCII character the patterns look at).
_VALUE = r"(?:[^\s\"'\\,;&|<>()`]|\\\\|\\x[0-9a-fA-F]{2}|\\[0-7]{1,3})+"
_QUOTE = r"(?:\\?[\"'])?"
_SEP = r"(?:\", \"|[ \t]+)"


def _compile(pattern: str | bytes) -> Any:
    import re

    return re.compile(pattern)


class Rule:
    """One rule of shapes.toml, compiled for bytes (the trace) and for text each on first use.

    The spool relay starts with every `capsule run`, on its critical path (strace waits for it), and
    most traces hold no hint of most rules: compiling them all up front cost ~7 ms of each run.
    `need` (optional) is a regex that every match of the rule contains: a line without it is left as it
    is, unread by the rule itself (whose leading `[\\w.\\-]*` makes it slow to fail on a long line)."""

    __slots__ = (
        "_folds",
        "_need_lowered",
        "_need_raw",
        "_need_text",
        "_raw",
        "_text",
        "hints",
        "name",
        "need",
        "pattern",
    )

    def __init__(self, name: str, hints: tuple[str, ...], pattern: str, need: str | None = None) -> None:
        self.name, self.hints, self.pattern, self.need = name, hints, pattern, need
        self._raw: re.Pattern[bytes] | None = None
        self._text: re.Pattern[str] | None = None
        self._need_raw: re.Pattern[bytes] | None = None
        self._need_text: re.Pattern[str] | None = None
        self._need_lowered: re.Pattern[bytes] | None = None
        # `need` ignores case and names no upper-case letter (nor an upper-case class such as \S): over
        # a lowered line the case-sensitive search finds what it finds over the line (bytes patterns
        # fold ASCII case only, as bytes.lower lowers ASCII only), ~7x faster on a trace's long lines.
        self._folds = (
            need is not None and need.startswith("(?i)") and not any("A" <= c <= "Z" for c in need[4:])
        )

    @property
    def raw(self) -> re.Pattern[bytes]:
        if self._raw is None:
            self._raw = _compile(self.pattern.encode())
        return self._raw

    @property
    def text(self) -> re.Pattern[str]:
        if self._text is None:
            self._text = _compile(self.pattern)
        return self._text

    def mask_raw(self, line: bytes, lowered: bytes | None = None) -> bytes:
        """`line` with this rule's secrets masked; `lowered`: `line.lower()`, if the caller has it."""
        if self.need is not None:
            if lowered is not None and self._folds:
                if self._need_lowered is None:
                    self._need_lowered = _compile(self.need[4:].encode())
                if self._need_lowered.search(lowered) is None:
                    return line
            else:
                if self._need_raw is None:
                    self._need_raw = _compile(self.need.encode())
                if self._need_raw.search(line) is None:
                    return line
        return _mask(line, self.raw, _MASK_B)

    def mask_text(self, line: str) -> str:
        if self.need is not None:
            if self._need_text is None:
                self._need_text = _compile(self.need)
            if self._need_text.search(line) is None:
                return line
        return _mask(line, self.text, MASK)


def _fill(pattern: str, names: dict[str, Any]) -> str:
    return (
        pattern.replace("{name}", names["pattern"])
        .replace("{v}", _VALUE)
        .replace("{q}", _QUOTE)
        .replace("{sep}", _SEP)
    )


def shapes_source() -> bytes:
    """The bytes of shapes.toml. Package data, read like a compiled-in table (the core opens no user
    files), through the package's loader as pkgutil.get_data does: the relay imports this module on
    every run, and importlib.resources cost ~40 ms of it, pkgutil (and the typing it imports) ~7 ms.
    (This module's own loader reads the file beside it, in a directory or a zip alike.)"""
    loader: Any = __spec__.loader
    data: bytes = loader.get_data(__file__.rpartition("/")[0] + "/rules/secrets/shapes.toml")
    return data


def parse_shapes(source: bytes) -> dict[str, Any]:
    """shapes.toml's bytes as TOML data (what `use_shapes` takes; plain dicts, lists and strings)."""
    import tomllib

    return tomllib.loads(source.decode("utf-8"))


class _Shapes:
    """The rules of one parse of shapes.toml, with the automaton of their hints."""

    def __init__(self, data: dict[str, Any]) -> None:
        names = data["names"]
        rules = []
        for raw in data["rule"]:
            hints = tuple(names["hints"]) if raw.get("names") else tuple(raw["hints"])
            need = _fill(raw["need"], names) if "need" in raw else None
            rules.append(Rule(raw["name"], hints, _fill(raw["pattern"], names), need))
        self.rules = tuple(rules)
        self.hints = tuple(dict.fromkeys(h for rule in rules for h in rule.hints))
        self.check_sources = {h["literal"]: h["check"] for h in data.get("hint", [])}
        self.checks: dict[str, re.Pattern[bytes]] = {}  # compiled on first use
        self.automaton = ahocorasick_rs.BytesAhoCorasick([h.encode() for h in self.hints])
        self.rules_by_hint: dict[int, tuple[int, ...]] = {
            i: tuple(r for r, rule in enumerate(rules) if hint in rule.hints)
            for i, hint in enumerate(self.hints)
        }

    def check(self, hint: str) -> re.Pattern[bytes] | None:
        found = self.checks.get(hint)
        if found is None and hint in self.check_sources:
            found = self.checks[hint] = _compile(self.check_sources[hint].encode())
        return found


_shapes: _Shapes | None = None


def use_shapes(data: dict[str, Any]) -> None:
    """Redact with these rules: `parse_shapes` of `shapes_source()`, kept by a caller that can keep it
    (the spool relay's cache); otherwise this module parses shapes.toml itself, on first use."""
    global _shapes
    _shapes = _Shapes(data)


def _loaded() -> _Shapes:
    if _shapes is None:
        use_shapes(parse_shapes(shapes_source()))
    assert _shapes is not None
    return _shapes


def __getattr__(name: str) -> Any:
    if name == "RULES":  # every rule, in shapes.toml's order
        return _loaded().rules
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _hits(shapes: _Shapes, lowered: bytes) -> Iterable[tuple[int, int]]:
    """(position, hint index) of every hint that counts (its check, if any, matches there)."""
    for index, start, _end in shapes.automaton.find_matches_as_indexes(lowered, overlapping=True):
        check = shapes.check(shapes.hints[index])
        if check is None or check.match(lowered, start):
            yield start, index


def _mask(line: _S, pattern: re.Pattern[_S], mask: _S) -> _S:
    """`line` with the secret group (or the whole match) of every match of `pattern` masked."""
    if "s" not in pattern.groupindex:
        return pattern.sub(lambda m: mask, line)

    def repl(m: re.Match[_S]) -> _S:
        base = m.start()
        start, end = m.span("s")
        whole = m.group(0)
        return whole[: start - base] + mask + whole[end - base :]

    return pattern.sub(repl, line)


def redact_bytes(data: bytes) -> bytes:
    """Redact a chunk of raw trace (whole lines; no pattern spans a newline)."""
    shapes = _loaded()
    lowered = data.lower()
    flagged: dict[int, set[int]] = {}  # line start -> rules to run on it
    for at, index in _hits(shapes, lowered):
        start = lowered.rfind(b"\n", 0, at) + 1
        flagged.setdefault(start, set()).update(shapes.rules_by_hint[index])
    if not flagged:
        return data
    pieces: list[bytes] = []
    done = 0
    for start in sorted(flagged):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        line = data[start:end]
        low: bytes | None = lowered[start:end]
        for r in sorted(flagged[start]):
            masked = shapes.rules[r].mask_raw(line, low)
            if masked != line:
                line, low = masked, None  # a mask changed the line: what follows reads it as it is now
        pieces += (data[done:start], line)
        done = end
    pieces.append(data[done:])
    return b"".join(pieces)


# -- argv and strings, through their strace-quoted rendering ---------------------------------------------

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
# A string's escapes, its quoted elements, and their unescapes: compiled on first use (never by the relay).
_PATTERNS: list[re.Pattern[str]] = []


def _patterns() -> list[re.Pattern[str]]:
    if not _PATTERNS:
        _PATTERNS.extend(
            _compile(p) for p in (r'[\\"\x00-\x1f\x7f]', r'"((?:[^"\\]|\\.)*)"', r"\\(x[0-9a-fA-F]{2}|.)")
        )
    return _PATTERNS


_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def _quote(arg: str) -> str:
    escaped = _patterns()[0].sub(lambda m: _ESCAPES.get(m[0]) or f"\\x{ord(m[0]):02x}", arg)
    return f'"{escaped}"'


def _unquote(body: str) -> str:
    return _patterns()[2].sub(lambda m: _UNESCAPES.get(m[1]) or chr(int(m[1][1:], 16)), body)


def _redact_rendered(line: str) -> str:
    shapes = _loaded()
    lowered = line.lower().encode("utf-8", "surrogatepass")
    wanted: set[int] = set()
    for _at, index in _hits(shapes, lowered):
        wanted.update(shapes.rules_by_hint[index])
    for r in sorted(wanted):
        line = shapes.rules[r].mask_text(line)
    return line


def redact_argv(argv: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Redact an argv as strace would show it redacted: each element, and pairs like `--password x`."""
    if not argv:
        return ()
    rendered = "[" + ", ".join(map(_quote, argv)) + "]"
    redacted = _redact_rendered(rendered)
    if redacted == rendered:
        return tuple(argv)
    out = tuple(_unquote(m[1]) for m in _patterns()[1].finditer(redacted))
    # Masks never span a quote, so the elements are the same in number; if not, keep nothing.
    return out if len(out) == len(argv) else tuple(MASK for _ in argv)


def redact_text(text: str) -> str:
    """Redact one string (an argv element, a command line, an `sh -c` script)."""
    return redact_argv((text,))[0] if text else text


# -- events ----------------------------------------------------------------------------------------------

# Kinds derived from the raw trace, which is redacted before it is parsed: nothing more to do for them.
FROM_TRACE = frozenset(
    {
        "proc.spawned",
        "proc.exec",
        "proc.exited",
        "proc.signaled",
        "file.opened",
        "net.connected",
        "trace.unparsed",
        "proc.sampled",
    }
)
_TEXT_FIELDS: dict[type[Event], tuple[tuple[str, bool], ...]] = {}


def _text_fields(cls: type[Event]) -> tuple[tuple[str, bool], ...]:
    """(field, is a tuple of strings) for every string-bearing field of `cls`."""
    import attrs

    found = _TEXT_FIELDS.get(cls)
    if found is None:
        found = tuple(
            (f.name, str(f.type).startswith("tuple[str"))
            for f in attrs.fields(cls)
            if str(f.type).startswith(("str", "tuple[str"))
        )
        _TEXT_FIELDS[cls] = found
    return found


def redact_event(event: Event) -> Event:
    """The event with every string it carries redacted (argv-like tuples as an argv)."""
    cls = type(event)
    if cls.KIND in FROM_TRACE:
        return event
    changes: dict[str, Any] = {}
    for name, is_tuple in _text_fields(cls):
        value = getattr(event, name)
        if value is None:
            continue
        new = redact_argv(value) if is_tuple else redact_text(value)
        if new != value:
            changes[name] = new
    if not changes:
        return event
    import attrs

    return attrs.evolve(event, **changes)
