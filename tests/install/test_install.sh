#!/bin/bash
# libsluice as a user gets it: `cmake --install` into a fresh prefix, the example built against
# that copy with `pkg-config --cflags --libs sluice` (nothing from the source tree), then run
# against the Consul emulator and a hello backend: it must register, pick the backend, get its
# hello, and deregister.  Usage: test_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
mkdir -p "${SLUICE_TEST_TMP:-/tmp}"
work=$(mktemp -d "${SLUICE_TEST_TMP:-/tmp}/install.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cmake --install "$build" --prefix "$work/prefix" >/dev/null
pc=$(find "$work/prefix" -name sluice.pc)
export PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --cflags --libs sluice)
libdir=$(pkg-config --variable=libdir sluice)
echo "pkg-config: $flags"
test -f "$work/prefix/include/sluice.h"
# a sanitizer build's library needs its runtime in the program too (make test-sanitize)
san=()
[ "${SLUICE_SANITIZED:-0}" = 1 ] && san=(-fsanitize=address,undefined)
cc -std=c11 -Wall -Wextra -Werror "${san[@]}" -o "$work/hello_mesh" "$src/examples/hello_mesh.c" \
    $flags -Wl,-rpath,"$libdir"
# the example must use the installed library, not the build tree's (grep reads all of ldd's
# output: with -q it could exit first, and pipefail would fail on ldd's SIGPIPE)
ldd "$work/hello_mesh" | grep "$libdir/libsluice.so" >/dev/null || { ldd "$work/hello_mesh"; exit 1; }

"$SLUICE_CONSUL_EMULATOR" --port 0 --fast-checks >"$work/emu.out" 2>"$work/emu.err" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/emu.out" && break; sleep 0.05; done
emu=$(awk '/listening/ {print $2}' "$work/emu.out")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$SLUICE_BACKEND_BIN" --listen "127.0.0.1:$port" --mode echo --hello installed >"$work/backend.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

CONSUL_HTTP_ADDR=$emu "$work/hello_mesh" web 127.0.0.1 "$port" | tee "$work/out"
grep -q "^registered web-127.0.0.1-$port" "$work/out"
grep -q "answered: installed" "$work/out"
grep -q "^deregistered web-127.0.0.1-$port" "$work/out"
echo "installed libsluice: example built with pkg-config, registered, picked, deregistered"
