"""A network namespace holding a Ray cluster for the tests: only loopback exists in it, so Ray binds and
connects through 127.0.0.1 and no traffic leaves the machine.

Run as `unshare -n -- python -m tests.ray.netns`: it brings `lo` up, becomes a child subreaper (every
process of the cluster, and every orphan of a task, stays below it), and obeys one command per stdin line:

    start NAME JSON   `ray start --block` with JSON {"args": [...], "env": {...}}; answers "started NAME PID"
    kill NAME         SIGKILL every process of that node (its tree as it is now); answers "killed NAME"
    stop              (or end of input) SIGKILL every process below this one, then exit

It never runs `ray stop`, which would end every Ray process of the machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading

import psutil

PR_SET_CHILD_SUBREAPER = 36


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGKILL)


def _reaper(stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            stop.wait(0.05)


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    nodes: dict[str, int] = {}
    done = threading.Event()
    threading.Thread(target=_reaper, args=(done,), daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        word, _, rest = line.strip().partition(" ")
        if word == "start":
            name, _, raw = rest.partition(" ")
            spec = json.loads(raw)
            with open(spec["log"], "ab") as log:
                proc = subprocess.Popen(
                    spec["args"], env={**os.environ, **spec["env"]}, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            nodes[name] = proc.pid
            print(f"started {name} {proc.pid}", flush=True)
        elif word == "kill":
            _kill(_tree(nodes.get(rest, -1)))
            print(f"killed {rest}", flush=True)
        elif word == "stop":
            break
    _kill(_tree(os.getpid())[1:])
    done.set()


if __name__ == "__main__":
    main()
