#!/bin/bash
# docker/ without Docker (it cannot run on the CI machines): the commands the container files
# run, run here. (1) sluice -t on docker/sluice.ini, the image's build check; (2) the build
# stage's COPY set, copied alone, configures with -DSLUICE_TESTS=OFF and without cmocka, every
# COPY source gets through Dockerfile.dockerignore, and the run stage installs the package of
# every library sluice and sluice-backend link; (3) the compose stack on 127.0.0.1:
# docker/demo-backend registers itself in the Consul emulator with `sluice register`, a sluice
# on docker/sluice.ini (only its addresses changed) discovers it and connects to it, the
# HEALTHCHECK's curl gets 200, and a stopped backend deregisters itself.
# Usage: test_docker_files.sh SOURCE_DIR
set -euo pipefail
src=$1
mkdir -p "${SLUICE_TEST_TMP:-/tmp}"
work=$(mktemp -d "${SLUICE_TEST_TMP:-/tmp}/docker.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# (1) the image's build check
"$SLUICE_BIN" -t -c "$src/docker/sluice.ini"

# (2) the build stage's sources: COPY lines between its FROM and the next one
copies=$(awk '/^FROM .* AS build/ {b=1; next} /^FROM/ {b=0} b && /^COPY / {print $2}' \
    "$src/docker/Dockerfile")
[ -n "$copies" ] || fail "no COPY in the build stage of docker/Dockerfile"
for path in $copies; do
    mkdir -p "$work/ctx/$(dirname "$path")"
    cp -r "$src/$path" "$work/ctx/$path"
done
cmake -S "$work/ctx" -B "$work/ctx/build" -DCMAKE_BUILD_TYPE=Release -DSLUICE_TESTS=OFF \
    >"$work/cmake.out" 2>&1 || { cat "$work/cmake.out"; fail "the build stage's COPY set does not configure"; }
! grep -q "^[^/#]*CMOCKA" "$work/ctx/build/CMakeCache.txt" || fail "SLUICE_TESTS=OFF still looks for cmocka"
for path in $copies $(awk '/^COPY docker\// {print $2}' "$src/docker/Dockerfile"); do
    grep -qx "!$path" "$src/docker/Dockerfile.dockerignore" || fail "$path is not in Dockerfile.dockerignore"
done

# (2b) the run stage installs the package of every library the two binaries link (libc6 is in
# every Debian image; a sanitizer build's runtimes are never in it)
run_pkgs=" $(awk '/^FROM debian:12-slim/ {r=1} r && /apt-get install/ {i=1} i {print} i && !/\\$/ {i=0}' \
    "$src/docker/Dockerfile" | tr -s ' \\\n' ' ') "
triplet=$(gcc -dumpmachine)
for bin in "$SLUICE_BIN" "$SLUICE_BACKEND_BIN"; do
    for so in $(readelf -d "$bin" | awk '/NEEDED/ {gsub(/[][]/, "", $5); print $5}'); do
        pkg=$(dpkg -S "*/$triplet/$so" | cut -d: -f1 | head -n 1)
        case "$pkg" in libc6 | libasan* | libubsan* | libtsan*) continue ;; esac
        [[ "$run_pkgs" == *" $pkg "* ]] || fail "$bin needs $so: add $pkg to the run stage's apt-get"
    done
done

# (3) the stack: emulator as the agent, the backend script, sluice on the container's config
"$SLUICE_CONSUL_EMULATOR" --port 0 --fast-checks >"$work/emu.out" 2>"$work/emu.err" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/emu.out" && break; sleep 0.05; done
emu=$(awk '/listening/ {print $2}' "$work/emu.out")
port=$(free_port) admin=$(free_port) backend_port=$(free_port)
sed -e "s/^address = consul:8500$/address = $emu/" -e "s/^bind = 127.0.0.1:9090$/bind = 127.0.0.1:$admin/" \
    -e "s/^bind = 0.0.0.0:8080$/bind = 0.0.0.0:$port/" "$src/docker/sluice.ini" >"$work/sluice.ini"
[ "$(diff "$src/docker/sluice.ini" "$work/sluice.ini" | grep -c '^>')" -eq 3 ] ||
    fail "docker/sluice.ini no longer has the addresses this test rewrites"
mkdir "$work/bin" # the image's /usr/local/bin
ln -s "$SLUICE_BIN" "$work/bin/sluice"
ln -s "$SLUICE_BACKEND_BIN" "$work/bin/sluice-backend"
export PATH="$work/bin:$PATH"

SLUICE_CONFIG="$work/sluice.ini" BACKEND_PORT=$backend_port "$src/docker/demo-backend" \
    >"$work/backend.out" 2>&1 &
backend=$!
pids+=("$backend")
"$SLUICE_BIN" -c "$work/sluice.ini" >"$work/sluice.out" 2>&1 &
pids+=($!)
sluice_pid=$!

id="api-$(hostname)-$backend_port"
hello=""
for _ in $(seq 200); do
    if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
        read -r -t 5 hello <&3 || true
        exec 3<&-
        [ "$hello" = "$(hostname)" ] && break
    fi
    sleep 0.1
done
[ "$hello" = "$(hostname)" ] || { cat "$work/backend.out" "$work/sluice.out"; fail "no hello through sluice"; }
grep -qx "$id" "$work/backend.out" || fail "sluice register did not print the ID $id"
curl -fsS -o /dev/null "http://127.0.0.1:$admin/healthz" || fail "/healthz is not 200"

kill -TERM "$backend"
wait "$backend" || fail "docker/demo-backend did not exit 0 on SIGTERM"
services=$(curl -fsS "http://$emu/v1/agent/services")
[[ "$services" != *"\"$id\""* ]] || fail "$id is still registered: $services"
kill -TERM "$sluice_pid"
wait "$sluice_pid" || fail "sluice did not exit 0"
echo "docker/: sluice -t ok, build stage configures without tests, backend registered as $id," \
    "reached through sluice, /healthz 200, deregistered on SIGTERM"
