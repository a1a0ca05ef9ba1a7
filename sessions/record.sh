#!/bin/bash
# Re-record every golden session in sessions/ with the real `capsule run` under real strace (and, as root,
# the ebpf-* ones with `--tracer ebpf`), then bless
# their expected/ reports. Needs gcc, strace (6.1 recorded these), make, python3 and the project's .venv.
#   ./sessions/record.sh            # every session
#   ./sessions/record.sh parallel   # just the named ones
# pids, timestamps, ids and paths change on every run: review the diff, then commit. Never edit by hand.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
capsule="$root/.venv/bin/capsule"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CAPSULE_HOME="$work/home"
# A plain PATH, so what a session shows a shell searching does not depend on the recording machine.
export PATH=/usr/local/bin:/usr/bin:/bin
cd "$work"
ulimit -c 0  # crashing children must not leave core files behind (and strace then says no "core dumped")
gcc -O1 -pthread -o procs "$here/../tests/data/traces/procs.c"  # the parser fixtures' program, shared
gcc -O1 -pthread -o threads "$here/programs/threads.c"
printf '#!/bin/sh\n# a shim, like a version manager'"'"'s: find the real program and exec it\nexec /bin/ls "$@"\n' >shim-ls
chmod +x shim-ls

wanted=("$@")
# record SLUG [capsule run options] -- CMD...: record one session into sessions/SLUG/.
record() {
    local slug=$1
    shift
    if ((${#wanted[@]})) && [[ " ${wanted[*]} " != *" $slug "* ]]; then
        return
    fi
    rm -rf "$CAPSULE_HOME"
    "$capsule" run --name "$slug" "$@" >/dev/null 2>&1 </dev/null || true
    local run
    run=$(ls -d "$CAPSULE_HOME"/runs/*/)
    rm -rf "${here:?}/$slug"
    mkdir -p "$here/$slug"
    local trace=trace.strace
    [ -f "$run/trace.ebpf" ] && trace=trace.ebpf
    install -m 644 "$run/events.jsonl" "$run/$trace" "$here/$slug/"
    echo "recorded $slug ($(wc -c <"$here/$slug/events.jsonl") + $(wc -c <"$here/$slug/$trace") bytes)"
}
# both SLUG [options] -- CMD...: record SLUG under strace and ebpf-SLUG with `--tracer ebpf` (root only;
# the eBPF recorder is built at its first use: clang and libbpf-dev).
both() {
    local slug=$1
    shift
    record "$slug" "$@"
    if [ "$(id -u)" = 0 ]; then
        record "ebpf-$slug" --tracer ebpf "$@"
    fi
}

# fork, vfork and clone3 children; two threads; SIGSEGV, SIGABRT, SIGKILL and SIGUSR1; an orphan; exit 5.
both forks -- ./procs
# four threads, one of which forks a child; then a non-leader thread execs (superseded leader, pid change).
both threads -- ./threads
# the root process is killed by a signal after `timeout` SIGKILLs its child and a SIGTERMed background job.
both killed -- sh -c 'timeout -s KILL 0.1 sleep 5; sleep 5 & kill -TERM $!; wait; kill -KILL $$'
# env (execvp) searching PATH: failed execve attempts before the one that works, and one that never does.
both path-search -- env PATH=/nonexistent:/usr/local/bin:/usr/bin:/bin \
    sh -c 'env true one; env no-such-tool-capsule; /no/such/path; exit 0'
# the command itself does not exist: capsule exits 127 and the session records the attempt.
record not-found -- no-such-command-capsule
# the parent exits at once; its children (a background subshell and a double-forked grandchild) outlive it.
both orphans -- sh -c '(sleep 0.1; /bin/true late) & ( (sleep 0.15; /bin/true later) & ); exit 3'
# exec chains: sh -> shim script -> the real ls; bash exec'ing its only command; sh -> exec env -> ls.
both exec-chain -- sh -c './shim-ls -d /; bash -c "ls -d /tmp"; exec env LC_ALL=C ls -d /usr'
# parallel children: interleaved <unfinished ...> / <... resumed> lines (xargs -P4 and make -j4).
printf 'all: a b c d\na b c d:\n\t@sleep 0.02; echo $@ >/dev/null\n' >Makefile
record parallel -- sh -c 'seq 1 8 | xargs -P4 -n1 sh -c "sleep 0.0\$1" _; make -s -j4'
# argv escapes: tab, newline, quotes, backslash, a control byte, non-ASCII, an empty argument.
both argv-quoting -- /bin/echo "$(printf 'tab\there')" "$(printf 'new\nline')" 'q"uote' "it's" \
    'back\slash' "$(printf '\001ctl')" 'héllo wörld' '日本語' ''
# an argv far beyond strace's -s 4096: one 6000-byte argument (truncated by strace) and 300 more.
record huge-argv -- sh -c '/bin/echo "$(head -c 6000 /dev/zero | tr "\0" a)" $(seq 1 300) >/dev/null'
# planted secrets: redacted in argv, events and the raw trace alike (tests check none survives).
both redaction -- env GITHUB_TOKEN=ghp_0123456789abcdefghijABCDEFGHIJ /bin/echo --password hunter2 \
    --token=s3cr3t-value 'Authorization: Bearer abc.def.ghi' sk-ant-0123456789abcdefXYZ
# --level all: files (opened, created, missing, renamed, deleted, chmod, a cd) and sockets (a loopback
# listen/connect/accept that works, one refused connect, a UDP send).
both level-all --level all -- /usr/bin/python3 -I -S -c '
import os, socket, subprocess
open("note.txt", "w").write("hi\n")
try:
    open("missing.txt")
except OSError:
    pass
os.mkdir("sub"); os.chdir("sub")
open("draft.txt", "w").write("draft\n"); os.rename("draft.txt", "final.txt"); os.chmod("final.txt", 0o600)
os.remove("final.txt"); os.chdir(".."); os.rmdir("sub")
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname())
peer, _ = server.accept(); peer.close()
client.close(); server.close()
refused = socket.socket(); refused.connect_ex(("127.0.0.1", 9)); refused.close()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.sendto(b"x", ("127.0.0.1", 9)); udp.close()
subprocess.run(["cat", "note.txt"], stdout=subprocess.DEVNULL, check=True)
'
# --level net: non-blocking connects (a socket with a timeout, as urllib, Node and curl connect), each
# `= -1 EINPROGRESS` settled by getsockopt(SO_ERROR): one a server accepts, one refused.
record nonblocking-connect --level net -- /usr/bin/python3 -I -S -c '
import socket
server = socket.create_server(("127.0.0.1", 0))
for port in (server.getsockname()[1], 9):
    s = socket.socket(); s.settimeout(5); s.connect_ex(("127.0.0.1", port)); s.close()
server.close()
'

cd "$root"
"$root/.venv/bin/python" -m tests.golden bless
