"""The strace output grammar as named regex fragments, each commented with the text it matches.

strace 6.1 writes one event per line: an optional pid prefix, an optional timestamp, then a body.
The fragments are composed into a few compiled patterns used by `parser.py`.
"""

from __future__ import annotations

import re

# `<sh>` -- `-Y` (`--decode-pids=comm`): the process's name after its pid (strace escapes a `>` in it).
COMM = r"(?:<[^>\n]*>)?"
# `1234  ` -- `strace -f -o FILE` prefixes every line with the pid, padded with spaces.
PID_PLAIN = rf"(?P<pid>\d+){COMM} +"
# `[pid  1234] ` -- `strace -f` writing to stderr, once more than one process is traced.
PID_BRACKET = rf"\[pid +(?P<bpid>\d+){COMM}\] "
# `1795239818.277003 ` -- `-ttt`: seconds since the epoch.
TS_EPOCH = r"(?P<epoch>\d+\.\d+) "
# `05:43:44.614042 ` (`-tt`) or `05:43:55 ` (`-t`): time of day, the caller supplies the date.
TS_CLOCK = r"(?P<hh>\d\d):(?P<mm>\d\d):(?P<ss>\d\d(?:\.\d+)?) "

# Everything before the body: `1234  1795239818.277003 `, `[pid  1234] 05:43:44.614042 `, or nothing.
# `-r` pads its relative stamps to six digits before the point (`     0.000123 `), hence ` *`.
PREFIX = re.compile(rf"(?:{PID_PLAIN}|{PID_BRACKET})? *(?:{TS_EPOCH}|{TS_CLOCK})?")
# The first stamp of a trace, anywhere in a chunk, telling `-ttt` (`1795239818.277003 `, at least nine
# digits: any date after 2001) from `-r` (`     0.000123 `: seconds since the previous line).
FIRST_STAMP = re.compile(
    rf"^(?:\d+{COMM} +|\[pid +\d+{COMM}\] )? *(?:(?P<epoch>\d+)\.\d+|\d\d:\d\d:\d\d(?:\.\d+)?) ",
    re.MULTILINE,
)
# A stamp with fewer digits before the point is relative (`-r`): an epoch one has 9 or more since 2001.
EPOCH_MIN_DIGITS = 9
# `-r` stamps add up to at most this (31 years): beyond, a stamp is out of range, not a time.
MAX_ELAPSED = 1e9
# Epoch seconds beyond this (the year 5138) are no `-ttt` stamp (and 1e400 would not even be finite).
MAX_STAMP = 1e11
# `[pid  1234] ` or `1234  ` inside a line: where strace's own text resumes after the traced program's
# output (stderr style) was written in front of it without a newline.
EMBEDDED_PID = re.compile(rf"\[pid +\d+{COMM}\] ")
# `[  59] ` (`-n`: the syscall's number) then `[00007f4fec27ead7] ` or `[????????????????] ` (`-i`: the
# instruction pointer), between the stamp and the body: what they say is not recorded.
DECORATIONS = re.compile(r"(?:\[ *\d+\] )?(?:\[(?:[0-9a-f]+|\?+)\] )?")
# ` > /usr/lib/x86_64-linux-gnu/libc.so.6(__execve+0xb) [0xe3ad7]` -- `-k`: a frame of the stack the
# call above it was made from, on a line of its own.
STACK_FRAME = re.compile(r" > .* \[0x[0-9a-f]+\]$")
# `% time     seconds  usecs/call     calls    errors syscall` -- `-C`: the summary table strace writes
# after the trace; every line from here on is the table's.
SUMMARY_HEADER = "% time "

# `execve`, `clone3`, `syscall_0x3e7`, `???` -- a syscall name as strace prints it.
NAME = r"(?P<name>\w+|\?\?\?)"
# `-1 ENOENT (No such file or directory) <0.000012>`, `3</etc/x>`, `? <unavailable>`, `0x4485` (`-e raw=all`,
# hex first: `\d+` would take its `0`): after ` = `.
RESULT_TAIL = (
    r"(?P<result>0x[0-9a-fA-F]+|-?\d+|\?)(?:<.*?>)?(?: (?P<errno>E[A-Z0-9_]+|E\?\?\?))?"
    r"(?P<extra>.*?)(?: <(?P<duration>\d+\.\d+)>)?$"
)
# `1234  1795239818.278215 clone(child_stack=NULL, ...) = 3366` or
# `1234  1795239818.280709 <... wait4 resumed>NULL, 0, NULL) = 3366` -- the common lines of
# `strace -f -ttt -o FILE`, matched in one go on the hot path (pid, ts, resumed, name, args, tail).
# A pid of at most 7 digits (PID_MAX has 7) and an epoch stamp of 9 to 11 digits (2001 to 5138): other
# numbers (a `-r` stamp, a pid out of range) are left to the slow path, which checks them.
FAST_CALL = re.compile(r"(\d{1,7}) +(\d{9,11}\.\d+) (<\.\.\. )?(\w+)(?(3) resumed>|\()(.*)\) *= ([-\d?].*)")
# `<pid changed to 3485 ...>`
PID_CHANGED_MARK = r"<pid changed to (\d{1,7}) \.\.\.>$"
# `1234  1795239818.277003 ` -- the common `strace -f -ttt -o FILE` prefix, tried first for speed.
PREFIX_FAST = re.compile(r"(\d{1,7}) +(\d{9,11}\.\d+) ")
# `) = 0`, `)   = ?`, `) = -1 ENOENT (...)` -- the end of the arguments, then the tail after ` = `;
# strace pads the `=` to a column.
TAIL = r"\) *= (?P<tail>(?:-?\d+|0x[0-9a-fA-F]+|\?).*)$"
# `<unfinished ...>`, `<detached ...>`, `<pid changed to 3485 ...>` -- why a call line has no result.
OPEN_MARK = r" ?(?P<tail><unfinished \.\.\.>|<detached \.\.\.>|<pid changed to \d+ \.\.\.>)$"

# `wait4(-1, [{WIFEXITED(s) && WEXITSTATUS(s) == 0}], 0, NULL) = 3498` -- a whole call. The greedy args
# match makes the last `) = ` win, so ` = ` inside a quoted argument cannot end the arguments early.
# (The parser finds the common case with str methods first; this is the fallback.)
SYSCALL = re.compile(rf"{NAME}\((?P<args>.*){TAIL}")
# `wait4(3366,  <unfinished ...>`, `execve(..., 0x7ffe /* 35 vars */ <pid changed to 3485 ...>`
OPEN_CALL = re.compile(rf"{NAME}\((?P<args>.*?){OPEN_MARK}")
# `<... wait4 resumed>NULL, 0, NULL) = 3366` -- the rest of an interrupted call.
RESUMED = re.compile(rf"<\.\.\. {NAME} resumed>(?P<args>.*){TAIL}")
# `<... clone3 resumed>` with nothing usable after it (a trace cut mid-line).
RESUMED_OPEN = re.compile(rf"<\.\.\. {NAME} resumed>(?P<args>.*)$")

# `+++ exited with 5 +++`
EXITED = re.compile(r"\+\+\+ exited with (?P<code>-?\d+) \+\+\+$")
# `+++ killed by SIGSEGV (core dumped) +++`, `+++ killed by SIGKILL +++`
KILLED = re.compile(r"\+\+\+ killed by (?P<signal>SIG\w+|\d+)(?P<core> \(core dumped\))? \+\+\+$")
# `+++ superseded by execve in pid 3486 +++` (6.x) or `+++ superseded by execve +++` (older).
SUPERSEDED = re.compile(r"\+\+\+ superseded by execve(?: in pid (?P<bypid>\d+))? \+\+\+$")
# `--- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=3366, ...} ---`
SIGNAL = re.compile(r"--- (?P<signal>SIG\w+|\d+) (?P<info>\{.*\}) ---$")
# `--- stopped by SIGSTOP ---`
STOPPED = re.compile(r"--- stopped by (?P<signal>SIG\w+|\d+) ---$")
# The other frequent lines of `strace -f -ttt -o FILE` (a fork-heavy trace is mostly these), matched in
# one go on the hot path by the very patterns the slow path applies after PREFIX_FAST:
# `1234  1795239818.277003 vfork( <unfinished ...>` (OPEN_CALL: name, args, tail),
# `1234  1795239818.277003 +++ exited with 0 +++` (EXITED: code),
# `1234  1795239818.277003 --- SIGCHLD {si_signo=SIGCHLD, ...} ---` (SIGNAL: signal, info).
# The three bodies start with a word character (or `?`), `+` and `-`: at most one alternative matches.
FAST_OTHER = re.compile(
    rf"(\d{{1,7}}) +(\d{{9,11}}\.\d+) (?:{OPEN_CALL.pattern}|{EXITED.pattern}|{SIGNAL.pattern})"
)
# `strace: Process 3819 attached`, `strace: Process 3819 detached` -- may also end another line in
# stderr style: `clone3({...}strace: Process 3819 attached` followed by ` <unfinished ...>`.
ATTACH = re.compile(r"strace: Process (?P<apid>\d{1,7}) (?P<what>attached|detached)$")
# ` <unfinished ...>`, `, child_tidptr=0x7f90) = 3366`, ` => {parent_tid=[3367]}, 88) = 3367` -- the
# continuation of a call line cut by an attach message: strace 6.1 writes the rest of the call on the next
# line, at the column where it was cut, with no pid prefix.
CONTINUATION = re.compile(r"(?: <unfinished \.\.\.>$|[,)]| =>)")
# `clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD` -- a call cut by an attach message: a name
# and its opening parenthesis at the start of the body.
CUT_CALL = re.compile(rf"(?:{PID_BRACKET}|{PID_PLAIN})? *(?:{TS_EPOCH}|{TS_CLOCK})?{NAME}\(")

# The largest pid or tid Linux hands out (PID_MAX_LIMIT, 2^22): a bigger number is no pid.
PID_MAX = 1 << 22


# `\n1234 ` -- the pid that starts an `strace -f -o FILE` line. These patterns run over a whole chunk
# framed as "\n" + text: a leading literal lets the engine jump from newline to newline (memchr)
# where `^` with MULTILINE tries every character -- 0.09 s instead of 0.4 s over a 42 MB log.
LINE_PID = re.compile(r"\n(\d+) ")


def _skippable(keep: frozenset[str], drop_signals: frozenset[str]) -> str:
    """`PID TS name(` or `PID TS <... name resumed>` for a name outside `keep`, or `PID TS --- SIG ` for a
    signal in `drop_signals`, as a pattern (its pid, then the rest: `wanted_runs` repeats the rest)."""
    names = "|".join(sorted(re.escape(n) for n in keep if n.isidentifier()))
    unwanted = rf"(?!(?:{names})\b)[A-Za-z_]\w*"
    signals = "|".join(sorted(re.escape(n) for n in drop_signals)) or "(?!)"
    return rf" +\d[\d.:]* +(?:{unwanted}\(|<\.\.\. {unwanted} resumed>|--- (?:{signals}) )"


def wanted_lines(keep: frozenset[str], drop_signals: frozenset[str] = frozenset()) -> re.Pattern[str]:
    """Lines (each found at its leading newline) that are NOT `PID TS name(` or `PID TS <... name
    resumed>` for a name outside `keep`.

    `1234  1795239818.277003 read(3, ...` is skippable when `read` is unwanted, and `--- SIGCHLD {…}`
    when SIGCHLD is in `drop_signals`; `+++ exited`, other signals, `[pid N]` lines, lines without a
    stamp and wanted calls all match.
    """
    return re.compile(rf"\n(?!\d+{_skippable(keep, drop_signals)})[^\n]+")


def wanted_runs(keep: frozenset[str], drop_signals: frozenset[str] = frozenset()) -> re.Pattern[bytes]:
    """`wanted_lines` for ASCII bytes, in one pass with the pids: each match (at its leading newline) is
    either a run of skippable lines of one pid (group 1: that pid) or one line `wanted_lines` finds
    (group 2: the line; group 3: the pid it starts with, `1234 `, if any). Over ASCII bytes and str
    patterns match alike (digits, word characters and word boundaries are ASCII ones in both).

    A run costs one match however long it is (a process's calls mostly follow each other), so the pids
    come without a match per line. No possessive repeats (`*+`) or atomic groups: Python 3.11.2, Debian
    12's python3, matches this pattern wrongly with them (a third of a trace's lines lost; right from a
    later 3.11 release), and here they change nothing, each repeat being followed by a newline or the
    end (tests/parse/test_grammar_portable.py)."""
    skip = _skippable(keep, drop_signals)
    line = r"(?=[^\n])(?:(\d+) )?[^\n]*"  # a non-empty line, with its leading pid
    return re.compile(rf"\n(?:(\d+){skip}[^\n]*(?:\n\1{skip}[^\n]*)*|({line}))".encode())
