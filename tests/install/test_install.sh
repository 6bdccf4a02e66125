#!/bin/bash
# sluice as a user installs it: `cmake --install` into a fresh prefix must put exactly the
# documented files there (README "Install, systemd and packages"); the installed daemon checks
# the installed example config, the man page renders without a warning, the unit passes
# `systemd-analyze verify`. Then libsluice: the example built against that copy with
# `pkg-config --cflags --libs sluice` (nothing from the source tree), once with libsluice.so and
# once with libsluice.a, each run against the Consul emulator and a hello backend: it must
# register, pick the backend, get its hello, and deregister.
# Usage: test_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
mkdir -p "${SLUICE_TEST_TMP:-/tmp}"
work=$(mktemp -d "${SLUICE_TEST_TMP:-/tmp}/install.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" >/dev/null
prefix=$(realpath "$prefix")
pc=$(find "$prefix" -name sluice.pc)
export PKG_CONFIG_PATH=$(dirname "$pc")
libdir=$(realpath "$(pkg-config --variable=libdir sluice)") # the .pc says prefix/lib/pkgconfig/../..
lib=${libdir#"$prefix"/} # lib, or lib/x86_64-linux-gnu for a /usr tree

# --- exactly the documented files ---
sort >"$work/want" <<LIST
bin/sluice
etc/sluice/sluice.ini
include/sluice.h
$lib/libsluice.a
$lib/libsluice.so
$lib/libsluice.so.0
$lib/libsluice.so.0.1.0
$lib/pkgconfig/sluice.pc
lib/systemd/system/sluice.service
share/man/man8/sluice.8.gz
LIST
(cd "$prefix" && find . -type f -o -type l) | sed 's#^\./##' | sort >"$work/got"
diff -u "$work/want" "$work/got" || { echo "installed files differ from the documented list"; exit 1; }
echo "installed: exactly the $(wc -l <"$work/want") documented files"

# (outputs are read whole before grep -q: under pipefail, grep -q quitting early would fail a
# pipeline by the writer's SIGPIPE)
check=$("$prefix/bin/sluice" -t -c "$prefix/etc/sluice/sluice.ini")
grep -q "configuration OK" <<<"$check"
grep -q "^sluice [0-9]" <<<"$("$prefix/bin/sluice" --version)"
# the man page as lintian checks it: any groff warning is printed and fails the test
warnings=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 \
    man --warnings -E UTF-8 -l -Tutf8 -Z "$prefix/share/man/man8/sluice.8.gz" 2>&1 >/dev/null)
[ -z "$warnings" ] || { echo "man page warnings: $warnings"; exit 1; }
grep -q '^\.SH EXIT STATUS' <<<"$(zcat "$prefix/share/man/man8/sluice.8.gz")"
unit=$prefix/lib/systemd/system/sluice.service
grep -qx 'Type=notify' "$unit"
grep -qx 'ExecReload=/bin/kill -HUP $MAINPID' "$unit"
if command -v systemd-analyze >/dev/null; then
    # the unit names the configured prefix's paths: point them into this one, so that verify
    # finds the binary it checks for
    mkdir -p "$work/unit"
    sed -E -e "s#[^ =]*/bin/sluice#$prefix/bin/sluice#g" \
        -e "s#[^ =]*/sluice/sluice.ini#$prefix/etc/sluice/sluice.ini#g" "$unit" \
        >"$work/unit/sluice.service"
    systemd-analyze verify --man=no "$work/unit/sluice.service"
    echo "unit: systemd-analyze verify passed"
fi

# --- libsluice, shared and static ---
flags=$(pkg-config --cflags --libs sluice)
echo "pkg-config: $flags"
echo "pkg-config --static: $(pkg-config --static --libs sluice)"
# a sanitizer build's library needs its runtime in the program too (make test-sanitize,
# make test-tsan: the build's ctest environment names the sanitizers)
san=()
[ -n "${SLUICE_SANITIZER:-}" ] && san=(-fsanitize="$SLUICE_SANITIZER")
cc -std=c11 -Wall -Wextra -Werror "${san[@]}" -o "$work/hello_mesh" "$src/examples/hello_mesh.c" \
    $flags -Wl,-rpath,"$libdir"
# the example must use the installed library, not the build tree's
deps=$(ldd "$work/hello_mesh")
grep -q "$libdir/libsluice.so" <<<"$deps" || { echo "$deps"; exit 1; }
# libsluice.a: -l:libsluice.a in place of -lsluice (the linker prefers the .so), the rest from
# Libs.private
static_flags=$(pkg-config --static --cflags --libs sluice | sed 's/-lsluice\b/-l:libsluice.a/')
cc -std=c11 -Wall -Wextra -Werror "${san[@]}" -o "$work/hello_mesh_static" \
    "$src/examples/hello_mesh.c" $static_flags
deps=$(ldd "$work/hello_mesh_static")
if grep -q libsluice <<<"$deps"; then
    echo "$deps"
    exit 1
fi

"$SLUICE_CONSUL_EMULATOR" --port 0 --fast-checks >"$work/emu.out" 2>"$work/emu.err" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/emu.out" && break; sleep 0.05; done
emu=$(awk '/listening/ {print $2}' "$work/emu.out")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$SLUICE_BACKEND_BIN" --listen "127.0.0.1:$port" --mode echo --hello installed >"$work/backend.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

for program in hello_mesh hello_mesh_static; do
    CONSUL_HTTP_ADDR=$emu "$work/$program" web 127.0.0.1 "$port" | tee "$work/out"
    grep -q "^registered web-127.0.0.1-$port" "$work/out"
    grep -q "answered: installed" "$work/out"
    grep -q "^deregistered web-127.0.0.1-$port" "$work/out"
    echo "$program: built with pkg-config, registered, picked, deregistered"
done
