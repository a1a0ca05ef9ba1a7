"""The sans-I/O strace parser: feed it bytes, get records back (h11's model, see STYLE.md).

Theory of operation: bytes accumulate until a newline; every complete line is decoded (UTF-8, invalid
bytes replaced by U+FFFD, as `bytes.decode("utf-8", "replace")`) and parsed on its own into one record,
with a little state carried between lines:
- the clock: `-ttt` stamps are epoch seconds; `-tt`/`-t` stamps are a time of day counted from
  `tt_origin` (a midnight) with a day added each time the trace crosses midnight; `-r` stamps are seconds
  since the previous line, accumulated from `tt_origin`. `-ttt` and `-r` look alike (`0.000123`,
  `1795239818.277003`): an epoch stamp has at least nine digits before the point, a relative one fewer;
- a line cut in two by an `strace: Process N attached` message, which strace (stderr style) writes in
  the middle of a syscall line, continuing the call on the next line (` <unfinished ...>`, `, arg...) = N`).
The output therefore does not depend on how the input was chunked. Numbers are checked at this edge: a
pid or exit code no kernel could produce makes the line `Unparsed`, never a record downstream code trusts.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from enum import Enum

from capsule.parse import grammar as g
from capsule.parse.records import (
    Attached,
    Exited,
    Killed,
    Message,
    Record,
    Signal,
    Superseded,
    SyscallState,
    Unparsed,
    make_syscall,
)
from capsule.parse.wanted import Selected, Wanted

_DAY = 86400.0
_HALF_DAY = 43200.0
_RESULT_START = frozenset("-0123456789?")
_EXIT_MAX = 255  # `+++ exited with N +++`: the kernel keeps the low 8 bits of an exit status


class _Sentinel(Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _Sentinel.NEED_DATA
"""Returned by `StraceParser.next_record()` when no complete line is buffered."""


def _other_record(m: re.Match[str], line_no: int, keep: frozenset[str] | None) -> Record | None:
    """The record of a FAST_OTHER match, exactly as `_parse_line` makes it; None where the line must take
    the ordinary way: a pid or exit code out of range (the slow path's verdict), or an unfinished call
    the keep filter may drop (FAST_CALL can match such a line too, and decides on the name)."""
    pid_text, ts_text, name, args, tail, code, signal, info = m.groups()
    pid = int(pid_text)
    if pid > g.PID_MAX:
        return None
    if name is not None:
        if keep is not None and name not in keep:
            return None
        return make_syscall(line_no, pid, float(ts_text), name, args, "unfinished", tail)
    if code is not None:
        if len(code) > 3 or not 0 <= int(code) <= _EXIT_MAX:
            return None
        return Exited(line_no=line_no, pid=pid, ts=float(ts_text), code=int(code))
    return Signal(line_no=line_no, pid=pid, ts=float(ts_text), signal=signal, info=info)


class StraceParser:
    """Parse strace output incrementally: `feed(bytes) -> list[Record]`, then `close()` at the end."""

    def __init__(
        self,
        tt_origin: float = 0.0,
        keep: frozenset[str] | None = None,
        drop_signals: frozenset[str] = frozenset(),
    ) -> None:
        # `keep`: the syscall names the consumer acts on (Tracker.wanted_syscalls). Other calls of a
        # pid already seen are dropped before a record is built: at the process level that is ~95% of a
        # full-syscall log. Each pid's first line is kept whatever it is (the tracker learns the root and
        # unclaimed children from first appearances), and so is every line not on the fast path.
        self._keep = keep
        self._drop_signals = drop_signals  # `--- SIG… ---` lines the consumer ignores (with `keep` only)
        self._seen: set[str] = set()
        self._wanted: Wanted | None = None
        self.lines = 0  # lines seen so far (empty ones included: line numbers match the file)
        self._tt_origin = tt_origin  # epoch seconds of the midnight `-tt`/`-t` stamps count from
        self._buf = bytearray()
        self._day = 0.0  # days added to clock stamps, after the trace crossed midnight
        self._last_clock = -1.0
        self._cut: tuple[int, str] | None = None  # (line_no, text) of a line cut by an attach message
        self._summary = False  # `-C`'s summary table has begun: what does not parse is strace's table
        # Whether the trace's stamps are `-r` ones, from the first stamp seen: only the `keep` filter
        # depends on it (each stamp is read by its own digits, so records never depend on chunking).
        self._relative: bool | None = None
        self._elapsed = 0.0  # `-r`: the sum of the relative stamps so far
        self._ready: deque[Record] = deque()
        self._closed = False
        self.ended_mid_line = False  # set by close(): the input's last line had no newline

    # --- the fast path -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Record]:
        """Parse every complete line in the buffered input plus `data`; keep a partial last line."""
        out: list[Record] = []
        if self._closed or not data:
            return out
        buf = self._buf
        end = data.rfind(b"\n")
        if end < 0:
            buf += data
            return out
        if buf:
            buf += data[: end + 1]
            block = bytes(buf)
            buf.clear()
        else:
            block = data[: end + 1]
        buf += data[end + 1 :]
        if b"\r" in block:  # a log that went through Windows (CRLF); a block always ends at a "\n"
            block = block.replace(b"\r\n", b"\n")
        text = None
        if self._relative is None:
            text = block.decode("utf-8", "replace")
            self._detect_clock(text)
        if self._keep is not None and self._relative is False:
            # `-r` stamps are deltas: every line counts, so none may be skipped unread.
            self._parse_wanted(block, out)
            return out
        if text is None:
            text = block.decode("utf-8", "replace")
        lines = text.split("\n")
        lines.pop()  # the empty string after the last newline
        self._parse_lines(lines, out)
        return out

    def close(self) -> list[Record]:
        """End of input: parse the buffered partial line, if any, and flush a pending cut line."""
        out: list[Record] = []
        if self._closed:
            return out
        self._closed = True
        self.ended_mid_line = bool(self._buf)
        if self._buf:
            text = bytes(self._buf).decode("utf-8", "replace").removesuffix("\r")
            self._buf.clear()
            if self._relative is None:
                self._detect_clock(text)
            # A line cut by the end of the trace (strace killed mid-write) is read whole, never skipped
            # as an unwanted call: it is reported the same with or without `keep`.
            self._parse_numbered([(self.lines + 1, text)], out, filtered=False)
            self.lines += 1
        if self._cut is not None:
            line_no, text = self._cut
            self._cut = None
            out.append(
                Unparsed(line_no=line_no, pid=None, ts=None, text=text, reason="cut by an strace message")
            )
        return out

    def _detect_clock(self, text: str) -> None:
        m = g.FIRST_STAMP.search(text)
        if m is not None:
            epoch = m["epoch"]
            self._relative = epoch is not None and len(epoch) < g.EPOCH_MIN_DIGITS

    # --- the h11-style interface -------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer `data`; an empty `data` means end of input (as in h11)."""
        self._ready.extend(self.feed(data) if data else self.close())

    def next_record(self) -> Record | _Sentinel:
        """The next parsed record, or NEED_DATA when more input is needed."""
        if self._ready:
            return self._ready.popleft()
        return NEED_DATA

    # --- lines ---------------------------------------------------------------------------------------

    def _parse_lines(self, lines: list[str], out: list[Record]) -> None:
        self._parse_numbered(enumerate(lines, self.lines + 1), out)
        self.lines += len(lines)

    def _parse_numbered(
        self, lines: Iterable[tuple[int, str]], out: list[Record], *, filtered: bool = True
    ) -> None:
        # The hot loop: a whole `-f -ttt` call line is matched by one regex right here, and so are its
        # unfinished calls, exits and signals (FAST_OTHER, tried on lines ending as those do); every other
        # shape goes through `_parse_line`.
        # `keep` drops lines unread: only once the trace is known to carry epoch stamps, since every `-r`
        # stamp counts (FAST_CALL itself takes epoch stamps only, so it needs no such check).
        fast = g.FAST_CALL.match
        other = g.FAST_OTHER.match
        parse = self._parse_line
        append = out.append
        keep, seen = (self._keep, self._seen) if filtered and self._relative is False else (None, self._seen)
        for line_no, line in lines:
            if self._cut is not None:
                line = self._rejoin(line, out)
            end = line[-4:]
            if end == "...>" or end == " +++" or end == " ---":
                o = other(line)
                if o is not None and (rec := _other_record(o, line_no, keep)) is not None:
                    append(rec)  # a wanted call, an exit or a signal: the pre-check below keeps them all
                    continue
            m = fast(line)
            if m is not None and int(m[1]) <= g.PID_MAX:
                # The pre-check below is not needed: what it drops, the filter here drops too.
                pid, ts, resumed, name, args, tail = m.groups()
                if keep is not None and name not in keep:
                    if pid in seen:
                        continue
                    seen.add(pid)
                if tail[-5:] != " ...>":  # `f("x) = 1" <unfinished ...>` is not a whole call
                    state: SyscallState = "complete" if resumed is None else "resumed"
                    append(make_syscall(line_no, int(pid), float(ts), name, args, state, tail))
                else:
                    append(parse(line, line_no))
                continue
            if keep is not None:
                # `PID TS name(…`: two string operations read the name of a call the consumer does not
                # want. Only `PID TIMESTAMP name(` qualifies: without a stamp the third field is no name.
                # (The lines come from `select_wanted`: such a call is rare here, a pid's first line.)
                parts = line.split(None, 2)
                if len(parts) == 3 and parts[0] in seen and parts[1][:1].isdigit():
                    rest = parts[2]
                    paren = rest.find("(")
                    if paren > 0 and rest[0].isalpha() and rest[:paren] not in keep:
                        continue
            if line:
                append(parse(line, line_no))

    def _parse_wanted(self, block: bytes, out: list[Record]) -> None:
        """Parse only the lines of `block` (whole lines) the consumer may need, found at C speed.

        Dropped: `PID TIMESTAMP name(…` and `PID TIMESTAMP <... name resumed>` of a pid already seen,
        for names not in `keep`. One regex pass (capsule/parse/wanted.py) finds every other line and each
        new pid's first line. Python then loops over ~5% of a full-syscall log instead of all of it.
        """
        keep = self._keep
        assert keep is not None
        if self._wanted is None:
            self._wanted = Wanted(keep, self._drop_signals)
        self.feed_selected(self._wanted.select(block, self._seen), out)

    def feed_selected(self, chunk: Selected, out: list[Record] | None = None) -> list[Record]:
        """Parse a chunk's lines as `select_wanted` chose them (in this process or another): the same
        records as feeding the chunk itself, once the keep filter is on (`filters_from`).

        A line kept only as its pid's first one in a part read elsewhere is dropped if this parser has
        already seen the pid (the other process could not know it had been seen before its part)."""
        if out is None:
            out = []
        seen = self._seen
        base = self.lines
        numbered = [(base + n, text) for n, text, pid in chunk.lines if pid is None or pid not in seen]
        self._parse_numbered(numbered, out)
        # The pids join `seen` only after parsing, or the loop would drop the very lines kept here.
        seen.update(chunk.new_pids)
        self.lines += chunk.lines_in
        return out

    @staticmethod
    def filters_from(head: bytes) -> bool:
        """Whether a log starting with `head` (whole lines, at least the first stamp's) is read through
        the keep filter from its first line on: its first stamp is an epoch one (`-ttt`)."""
        m = g.FIRST_STAMP.search(head.decode("utf-8", "replace"))
        return m is not None and m["epoch"] is not None and len(m["epoch"]) >= g.EPOCH_MIN_DIGITS

    def _rejoin(self, line: str, out: list[Record]) -> str:
        assert self._cut is not None
        line_no, cut = self._cut
        self._cut = None
        if g.CONTINUATION.match(line):
            return cut + line
        out.append(Unparsed(line_no=line_no, pid=None, ts=None, text=cut, reason="cut by an strace message"))
        return line

    def _parse_line(self, line: str, line_no: int) -> Record:
        if line.startswith(g.SUMMARY_HEADER):
            self._summary = True
        rec = self._parse_body(line, line_no)
        if type(rec) is Unparsed and (self._summary or g.STACK_FRAME.match(line)):
            # strace's own text, not the trace: `-C`'s summary table, a `-k` stack frame
            return Message(line_no=line_no, pid=None, ts=None, text=line)
        if type(rec) is Unparsed and rec.reason == "not a syscall line":
            # stderr style: the traced program's output, written without a newline, can precede strace's
            # own text on a line (`oops[pid  12] execve(...`). What follows a `[pid N] ` is tried alone.
            m = g.EMBEDDED_PID.search(line, 1)
            if m is not None:
                inner = self._parse_body(line[m.start() :], line_no)
                if type(inner) is not Unparsed:
                    return inner
        return rec

    def _parse_body(self, line: str, line_no: int) -> Record:
        if line.startswith("strace: "):
            return self._parse_message(line, line_no)
        ts: float | None
        f = g.PREFIX_FAST.match(line)
        if f is not None:
            pid: int | None = int(f[1])
            ts = float(f[2])
            body = line[f.end() :]
        else:
            m = g.PREFIX.match(line)
            assert m is not None  # every group is optional
            pid_text = m["pid"] or m["bpid"]
            pid = int(pid_text) if pid_text is not None and len(pid_text) <= 7 else None
            if pid_text is not None and (pid is None or pid > g.PID_MAX):
                return Unparsed(line_no=line_no, pid=None, ts=None, text=line, reason="pid out of range")
            epoch = m["epoch"]
            if epoch is not None:
                value = float(epoch)
                if not value < g.MAX_STAMP:
                    return Unparsed(
                        line_no=line_no, pid=pid, ts=None, text=line, reason="timestamp out of range"
                    )
                if epoch.index(".") < g.EPOCH_MIN_DIGITS:  # `-r`: seconds since the previous line
                    if self._elapsed + value > g.MAX_ELAPSED:
                        return Unparsed(
                            line_no=line_no, pid=pid, ts=None, text=line, reason="timestamp out of range"
                        )
                    self._elapsed += value
                    ts = self._tt_origin + self._elapsed
                else:
                    ts = value
            elif m["hh"] is not None:
                ts = self._clock(int(m["hh"]) * 3600 + int(m["mm"]) * 60 + float(m["ss"]))
                if not ts < g.MAX_STAMP:  # a trace "crossing midnight" on every other line
                    return Unparsed(
                        line_no=line_no, pid=pid, ts=None, text=line, reason="timestamp out of range"
                    )
            else:
                ts = None
            body = line[m.end() :]
        if pid is not None and pid > g.PID_MAX:  # the slow path's verdict: no stamp is read past a bad pid
            return Unparsed(line_no=line_no, pid=None, ts=None, text=line, reason="pid out of range")
        if body[:1] == "[":  # `-n`, `-i`: `[  59] [00007f4fec27ead7] execve(...`
            body = body[g.DECORATIONS.match(body).end() :]  # type: ignore[union-attr]  # all optional
        first = body[:1]
        if first == "+":
            return self._parse_exit(body, line, line_no, pid, ts)
        if first == "-":
            s = g.SIGNAL.match(body)
            if s is not None:
                return Signal(line_no=line_no, pid=pid, ts=ts, signal=s["signal"], info=s["info"])
            s = g.STOPPED.match(body)
            if s is not None:
                return Signal(line_no=line_no, pid=pid, ts=ts, signal=s["signal"], info="", stopped=True)
            return Unparsed(line_no=line_no, pid=pid, ts=ts, text=line, reason="unknown --- line")
        if first == "<":
            c = g.RESUMED.match(body)
            if c is not None:
                tail = c["tail"]
            else:
                c = g.RESUMED_OPEN.match(body)
                tail = ""
            if c is not None:
                return make_syscall(line_no, pid, ts, c["name"], c["args"], "resumed", tail)
            return Unparsed(line_no=line_no, pid=pid, ts=ts, text=line, reason="unknown <... line")
        if body.endswith(" ...>"):
            c = g.OPEN_CALL.match(body)
            if c is not None:
                return make_syscall(line_no, pid, ts, c["name"], c["args"], "unfinished", c["tail"])
        # The common case without a regex: `name(args) = tail`, split at the first `(` and last ` = `.
        i = body.find("(")
        j = body.rfind(" = ")
        if 0 < i < j:
            name = body[:i]
            head = body[i + 1 : j].rstrip(" ")
            tail = body[j + 3 :]
            if head[-1:] == ")" and tail[:1] in _RESULT_START and (name.isidentifier() or name == "???"):
                return make_syscall(line_no, pid, ts, name, head[:-1], "complete", tail)
        c = g.SYSCALL.match(body)
        if c is not None:
            return make_syscall(line_no, pid, ts, c["name"], c["args"], "complete", c["tail"])
        a = g.ATTACH.search(line)
        if a is not None:
            # stderr style: strace wrote its attach notice in the middle of this syscall line.
            self._cut = (line_no, line[: a.start()])
            return Attached(line_no=line_no, pid=int(a["apid"]), ts=None, detached=a["what"] == "detached")
        return Unparsed(line_no=line_no, pid=pid, ts=ts, text=line, reason="not a syscall line")

    def _parse_exit(self, body: str, line: str, line_no: int, pid: int | None, ts: float | None) -> Record:
        e = g.EXITED.match(body)
        if e is not None:
            code = e["code"]
            if len(code) > 3 or not 0 <= int(code) <= _EXIT_MAX:
                return Unparsed(line_no=line_no, pid=pid, ts=ts, text=line, reason="exit code out of range")
            return Exited(line_no=line_no, pid=pid, ts=ts, code=int(code))
        e = g.KILLED.match(body)
        if e is not None:
            return Killed(
                line_no=line_no, pid=pid, ts=ts, signal=e["signal"], core_dumped=e["core"] is not None
            )
        e = g.SUPERSEDED.match(body)
        if e is not None:
            bypid = e["bypid"]
            if bypid is not None and (len(bypid) > 7 or int(bypid) > g.PID_MAX):
                return Unparsed(line_no=line_no, pid=pid, ts=ts, text=line, reason="pid out of range")
            return Superseded(line_no=line_no, pid=pid, ts=ts, by_pid=int(bypid) if bypid else None)
        return Unparsed(line_no=line_no, pid=pid, ts=ts, text=line, reason="unknown +++ line")

    @staticmethod
    def _parse_message(line: str, line_no: int) -> Record:
        a = g.ATTACH.match(line)
        if a is not None:
            return Attached(line_no=line_no, pid=int(a["apid"]), ts=None, detached=a["what"] == "detached")
        return Message(line_no=line_no, pid=None, ts=None, text=line)

    def _clock(self, seconds: float) -> float:
        # `-tt`/`-t` give the time of day only: a stamp far earlier than the last one means midnight passed.
        if seconds < self._last_clock - _HALF_DAY:
            self._day += _DAY
        self._last_clock = seconds
        return self._tt_origin + self._day + seconds
