#!/bin/bash
# make run's Ctrl-C without a terminal: scripts/demo runs as the leader of its own process group
# (as the terminal's foreground job), a connection is held open through it, and SIGINT goes to
# the whole group as a Ctrl-C does. sluice must get one signal, not two: it drains, so the held
# connection still echoes after the Ctrl-C; then sluice exits 0, the backends stop after it and
# the script exits 0.  Usage: test_demo.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
mkdir -p "${SLUICE_TEST_TMP:-/tmp}"
work=$(mktemp -d "${SLUICE_TEST_TMP:-/tmp}/demo.XXXXXX")
demo=
cleanup() { # after a failure: the demo's children (own sessions) by pid, then the demo
    if [ -n "$demo" ]; then
        for pid in $(ps -o pid= --ppid "$demo" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        kill -KILL "$demo" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- demo output:"; cat "$work/out"; exit 1; }

# Waits up to 20 s for a line matching pattern in the demo's output.
wait_for_line() {
    for _ in $(seq 400); do grep -q -- "$1" "$work/out" && return 0; sleep 0.05; done
    fail "no '$1' in the output"
}

read -r listen b1 b2 <<<"$(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
cat >"$work/demo.ini" <<INI
[sluice]
workers = 1
shutdown_timeout = 20s
[listener:web]
bind = 127.0.0.1:$listen
service = api
[service:api]
backends = 127.0.0.1:$b1 weight=2, 127.0.0.1:$b2
INI

# The demo as a shell's foreground job: leader of its own process group (setsid), SIGINT at its
# default (a background job of a script starts with SIGINT ignored, and bash cannot trap a
# signal ignored at entry).
python3 -c '
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setsid()
os.execvp("bash", ["bash"] + sys.argv[1:])' "$src/scripts/demo" "$build" "$work/demo.ini" \
    >"$work/out" 2>&1 </dev/null &
demo=$!
wait_for_line '"event":"started"'
wait_for_line 'sluice is proxying'

exec 3<>"/dev/tcp/127.0.0.1/$listen"
read -r -t 20 hello <&3 || fail "no hello through sluice"
case $hello in backend-1 | backend-2) ;; *) fail "hello '$hello'" ;; esac
printf 'before\n' >&3 || fail "cannot write through sluice"
read -r -t 20 back <&3 && [ "$back" = before ] || fail "no echo before Ctrl-C"

kill -INT -- "-$demo" # Ctrl-C: the terminal signals the whole foreground process group
wait_for_line '"event":"listeners_closed"'
printf 'after\n' >&3 || fail "the held connection was reset by Ctrl-C"
read -r -t 20 back <&3 && [ "$back" = after ] || fail "the held connection was cut by Ctrl-C"
exec 3>&- # sluice's drain ends with the last connection

status=0
for _ in $(seq 400); do kill -0 "$demo" 2>/dev/null || break; sleep 0.05; done
wait "$demo" || status=$?
demo=
[ "$status" = 0 ] || fail "the demo exited $status"
[ "$(grep -c '"event":"shutdown_started"' "$work/out")" = 1 ] || fail "not exactly one shutdown"
! grep -q '"event":"shutdown_timeout"' "$work/out" || fail "connections were cut"
grep -q '"event":"stopped"' "$work/out" || fail "sluice did not stop cleanly"
grep -q '^demo stopped' "$work/out" || fail "no 'demo stopped'"
for port in "$b1" "$b2"; do
    if (exec 4<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "backend $port still up"; fi
done
echo "make run: Ctrl-C drained the held connection, one shutdown, sluice and the demo exited 0"
