"""The guard's cost: `capsule run --policy` against `capsule run` without one, interleaved, on
fork-heavy work (5,000 `/bin/true`) and a real build (`make -j2` of a small C project): aim <= 1.25x;
and shell-script-heavy work (a chain of bash scripts, as pyenv's shim runs), whose every script the guard
parses, measured against the same aim. Also the per-exec decision latency the guard itself measured (policy.checked: median and p99).

The policy is a realistic one (deny rules, a protected file, a read-only path), so every mechanism is in
the measurement: seccomp notification per exec, bubblewrap, and strace without --seccomp-bpf.
Where eBPF recording works (root), the same pairs again with `--tracer ebpf`: the guard's own cost
(seccomp notification, bubblewrap), without strace's loss of --seccomp-bpf under it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import orjson

from tests.bench._common import CAPSULE, env_for, interleave, median, ratio_row, row, temp_home
from tests.bench.fork import shell

COUNT = 5000
QUICK_COUNT = 200
FILES = 24  # C files in the build
QUICK_FILES = 4

POLICY = """[policy]
deny_commands = ["rm -rf /*", "sudo *", "curl * | sh", "git push --force*"]
protect_paths = [".env", "*.key"]
read_only_paths = ["/etc"]
"""


def make_project(root: Path, files: int) -> list[str]:
    """A small C project with a Makefile; returns the command that cleans and builds it."""
    src = root / "src"
    src.mkdir(parents=True)
    for i in range(files):
        (src / f"m{i}.c").write_text(
            f"#include <stdio.h>\n#include <string.h>\nint f{i}(int x) {{ char b[64]; "
            f'snprintf(b, sizeof b, "%d", x * {i}); return (int)strlen(b); }}\n'
        )
    calls = " + ".join(f"f{i}(1)" for i in range(files))
    decls = "".join(f"int f{i}(int);\n" for i in range(files))
    (src / "main.c").write_text(f"{decls}int main(void) {{ return ({calls}) == 0; }}\n")
    (root / ".env").write_text("TOKEN=not-for-the-build\n")
    objs = " ".join(f"src/m{i}.o" for i in range(files))
    (root / "Makefile").write_text(
        f"OBJS = {objs} src/main.o\nprog: $(OBJS)\n\tcc -o $@ $(OBJS)\n"
        "%.o: %.c\n\tcc -O1 -c -o $@ $<\n"
        "clean:\n\trm -f prog src/*.o\n.PHONY: clean\n"
    )
    return ["sh", "-c", f"cd {root} && make -s clean && make -s -j2"]


SCRIPTS = 10  # bash scripts in the chain, each ~3 KB, as pyenv's shim runs its libexec/ scripts
RUNS = 10  # times the chain is run
QUICK_RUNS = 2


def script_chain(root: Path, runs: int) -> list[str]:
    """Shell-script-heavy work, as a `python3` through pyenv's shim is: a chain of bash scripts, each
    parsed by the guard (its commands are judged like a -c string) and running a few programs, run
    `runs` times (the same texts each time); returns the command."""
    root.mkdir(parents=True)
    body = "".join(
        f"""
opt_{i}() {{
  case "$1" in
    --version | -v ) echo "v{i}" ;;
    --help ) printf '%s\\n' "usage: step{i} [--version]" ;;
    * ) [ -n "$1" ] && shift || true ;;
  esac
  for word in alpha beta gamma; do
    if [ "$word" = "$STEP_{i}" ]; then echo "$word" >/dev/null; fi
  done
}}
"""
        for i in range(12)
    )
    for i in range(SCRIPTS):
        tail = f'bash "{root}/step{i + 1}.sh" "$@"\n' if i + 1 < SCRIPTS else "true\n"
        (root / f"step{i}.sh").write_text(
            f'#!/usr/bin/env bash\nset -e\n[ -n "$TRACE" ] && set -x\n{body}'
            f'opt_0 "$@"\nbasename "$0" >/dev/null\ncat /dev/null\n{tail}'
        )
    return ["bash", "-c", f'for i in $(seq {runs}); do bash "{root}/step0.sh" --x; done']


def _latencies(home: Path) -> tuple[list[float], list[float], int]:
    """Median and p99 decision latency of every guarded session under home (policy.checked)."""
    medians, p99s, execs = [], [], 0
    for events in (home / "runs").glob("*/events.jsonl"):
        for line in events.read_bytes().splitlines():
            if line.startswith(b'{"kind":"policy.checked"'):
                checked = orjson.loads(line)
                if checked["median_us"] is not None:
                    medians.append(checked["median_us"])
                    p99s.append(checked["p99_us"])
                    execs += checked["execs"]
    return medians, p99s, execs


def _ebpf_works() -> bool:
    from capsule.stages.ebpf_recorder import EbpfUnavailable, find_ebpf

    try:
        find_ebpf()
    except EbpfUnavailable:
        return False
    return True


def run(quick: bool = False) -> dict[str, Any]:
    count = QUICK_COUNT if quick else COUNT
    files = QUICK_FILES if quick else FILES
    runs = QUICK_RUNS if quick else RUNS
    reps = 1 if quick else 3
    rows: list[dict[str, Any]] = []
    samples: dict[str, Any] = {}
    with temp_home() as home:
        env = env_for(home)
        work = Path(tempfile.mkdtemp(prefix="capsule-bench-guard-"))
        try:
            policy = work / "policy.toml"
            policy.write_text(POLICY)
            build = make_project(work / "proj", files)
            subprocess.run(build, check=True, capture_output=True)  # warm the compiler's caches
            chain = script_chain(work / "scripts", runs)
            subprocess.run(chain, check=True, capture_output=True)
            tracers = [[]] + ([["--tracer", "ebpf"]] if _ebpf_works() else [])
            for tracer in tracers:
                for name, cmd in (("fork", shell(count)), ("make", build), ("scripts", chain)):
                    # run from the project, as its user would: the policy's `*.key` walks the working
                    # directory, which here would be wherever the bench was started (Capsule's own
                    # checkout: 53,000 entries, ~70 ms a start even with the kept walk, README)
                    with contextlib.chdir(work / "proj"):
                        timed = interleave(
                            {
                                "plain": [CAPSULE, "run", *tracer, "--", *cmd],
                                "policy": [CAPSULE, "run", *tracer, "--policy", str(policy), "--", *cmd],
                            },
                            reps if name == "fork" else reps + 2,  # a build is short: 5 of each
                            env,
                        )
                    samples[" ".join([name, *tracer])] = timed
                    plain, guarded = median(timed["plain"]), median(timed["policy"])
                    label = {
                        "fork": f"{count:,} /bin/true",
                        "make": f"make -j2 ({files + 1} C files)",
                        "scripts": f"{SCRIPTS} chained bash scripts x {runs}",
                    }[name]
                    label += " --tracer ebpf" if tracer else ""
                    rows += [
                        row(f"{label}: capsule run (median)", plain, "s"),
                        row(f"{label}: capsule run --policy (median)", guarded, "s"),
                        ratio_row(f"{label}: --policy / no policy", guarded, plain, 1.25),
                    ]
            medians, p99s, execs = _latencies(home)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if medians:
        rows += [
            row("exec decision latency, median (median of runs)", median(medians), "us"),
            row("exec decision latency, p99 (median of runs)", median(p99s), "us"),
            row("execs decided", float(execs), "execs"),
        ]
    params = {"count": count, "files": files, "scripts": SCRIPTS, "runs": runs, "reps": reps}
    return {"params": params, "samples_s": samples, "rows": rows}
