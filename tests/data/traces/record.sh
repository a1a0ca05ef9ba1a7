#!/bin/sh
# Regenerate the real strace recordings used by tests/parse and tests/track.
# Needs gcc and strace (6.1 recorded these). Run from anywhere: ./tests/data/traces/record.sh
# The recordings are committed; pids and timestamps change on every run, so regenerating means
# updating the expectations in tests/track/test_tracker.py too.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
gcc -O1 -pthread -o procs "$here/procs.c"
gcc -O1 -pthread -o thread_exec "$here/thread_exec.c"
gcc -O1 -pthread -o thread_exit "$here/thread_exit.c"
gcc -O1 -o unknown_syscall "$here/unknown_syscall.c"
S="strace -f -q --seccomp-bpf"
P="-e trace=%process"

# fork/vfork/clone3/threads/SIGSEGV+SIGABRT core dumps/SIGKILL/SIGUSR1/orphan, the Capsule flags.
(ulimit -c unlimited; $S -ttt -s 4096 $P -o "$here/procs.strace" -- ./procs) || true
# A non-leader thread calls execve: superseded leader and `<pid changed to N ...>`.
$S -ttt -s 4096 $P -o "$here/thread_exec.strace" -- ./thread_exec || true
# The same with -tt, stderr style ([pid N] prefixes), every syscall.
strace -f -tt -s 4096 -- ./thread_exec 2>"$here/thread_exec_stderr.strace" >/dev/null || true
# The leader exits while a thread is blocked in pause(): the thread's call never returns.
strace -f -q -ttt -s 4096 -o "$here/thread_exit.strace" -- ./thread_exit || true
# env (execvp) searching PATH: failed execve attempts; parallel children: interleaved unfinished/resumed.
PATH=/nonexistent:/usr/local/bin:/usr/bin:/bin $S -ttt -s 4096 $P -o "$here/sh_path.strace" -- \
    /bin/sh -c 'env true one; sleep 0.05 & sleep 0.05 & wait; ls -d / >/dev/null'
# argv escapes: tab, newline, quotes, backslash, control byte, non-ASCII; -tt and -T.
$S -tt -T -s 4096 $P -o "$here/argv_escapes.strace" -- /bin/echo "$(printf 'tab\there')" \
    "$(printf 'new\nline')" 'q"uote' 'back\slash' "$(printf '\001ctl')" 'héllo wörld' '' >/dev/null
# -s 8: truncated strings and arrays; a huge argv.
$S -ttt -s 8 $P -o "$here/truncated.strace" -- /bin/echo abcdefghijkl 2 3 4 5 6 7 8 9 10 >/dev/null
$S -ttt -s 4096 $P -o "$here/huge_argv.strace" -- /bin/sh -c '/bin/true $(seq 1 3000)'
# -yy decorations decorations, sockets (TCP refused, unix), no pid prefix (no -f), -t.
strace -q -t -yy -s 64 -e trace=socket,connect,openat,close -o "$here/net_yy.strace" -- python3 -c '
import socket
s = socket.socket(); s.connect_ex(("127.0.0.1", 9)); s.close()
u = socket.socket(socket.AF_UNIX); u.connect_ex("/nonexistent.sock"); u.close()
open("/etc/hostname").close()
' || true
# An unknown syscall number; no timestamps at all.
strace -f -o "$here/unknown_syscall.strace" -- ./unknown_syscall
# Every syscall: a whole -f trace with -T and -y, for the throughput benchmark and the property tests.
strace -f -ttt -T -y -s 256 -o "$here/full.strace" -- /bin/sh -c 'ls -la /usr/lib >/dev/null; cat /etc/passwd | wc -l >/dev/null'
rm -f core core.*
