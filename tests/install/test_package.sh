#!/bin/bash
# The Debian package as a user gets it: `make deb` builds it (in a tree of its own under
# BUILD_DIR, kept between runs so a re-run only rebuilds what changed); dpkg-deb must list
# exactly the documented files, the runtime dependencies of every ELF file in it, the example
# config as a conffile; extracted into a temp root, its sluice checks its own example config and
# prints its version. Usage: test_package.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
if [ "${SLUICE_SANITIZED:-0}" = 1 ]; then
    # make deb builds its own Release tree, never this build's binaries: under the sanitizer
    # suite the test would build and check the very same package a second time
    echo "skipped under SLUICE_SANITIZED=1: the package does not come from the sanitizer build"
    exit 77
fi
mkdir -p "${SLUICE_TEST_TMP:-/tmp}"
work=$(mktemp -d "${SLUICE_TEST_TMP:-/tmp}/package.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree=$build/deb-tree

rm -f "$tree"/sluice_*.deb
make -C "$src" --no-print-directory deb DEB_BUILD="$tree" JOBS=2 >"$work/make.out" 2>&1 ||
    { cat "$work/make.out"; exit 1; }
debs=("$tree"/sluice_*_"$(dpkg --print-architecture)".deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || { echo "no single .deb: ${debs[*]}"; exit 1; }
deb=${debs[0]}
echo "built $(basename "$deb")"

# --- contents: exactly these files (directories aside) ---
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
sort >"$work/want" <<LIST
./etc/sluice/sluice.ini
./lib/systemd/system/sluice.service
./usr/bin/sluice
./usr/include/sluice.h
./usr/lib/$ma/libsluice.a
./usr/lib/$ma/libsluice.so
./usr/lib/$ma/libsluice.so.0
./usr/lib/$ma/libsluice.so.0.1.0
./usr/lib/$ma/pkgconfig/sluice.pc
./usr/share/man/man8/sluice.8.gz
LIST
# dpkg-deb -c is tar tv: mode, owner, size, date, time, path [-> target]
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sort >"$work/got"
diff -u "$work/want" "$work/got" || { echo "package contents differ from the documented list"; exit 1; }
# (outputs are read whole before grep -q: under pipefail, grep -q quitting early would fail a
# pipeline by the writer's SIGPIPE)
if grep -vqx root/root <<<"$(dpkg-deb -c "$deb" | awk '{print $2}')"; then
    echo "a file not owned by root/root"; exit 1
fi
echo "contents: exactly the $(wc -l <"$work/want") documented files, all root/root"

# --- dependencies: each library the daemon and libsluice link, by its Debian 12 name ---
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
for pkg in libc6 libuv1 liburcu8 libinih1 libcurl4 libcjson1 libmicrohttpd12 libsystemd0 libc-ares2; do
    grep -Eq "(^|, )$pkg( |,|$)" <<<"$depends" || { echo "Depends lacks $pkg"; exit 1; }
done
[ "$(dpkg-deb -f "$deb" Package)" = sluice ]

# --- control: the config is a conffile (an edited one survives upgrades), prerm stops the unit
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/sluice/sluice.ini "$work/control/conffiles"
test -x "$work/control/prerm"
grep -q 'deb-systemd-invoke stop sluice.service' "$work/control/prerm"

# --- extracted: the daemon runs, the unit names the package's paths, the .pc finds its root
root=$work/root
dpkg-deb -x "$deb" "$root"
# the daemon carries its layers statically: nothing of libsluice.so to point it at
deps=$(ldd "$root/usr/bin/sluice")
if grep -q libsluice <<<"$deps"; then echo "$deps"; exit 1; fi
"$root/usr/bin/sluice" -t -c "$root/etc/sluice/sluice.ini" | tee "$work/check"
grep -q "configuration OK" "$work/check"
version=$(dpkg-deb -f "$deb" Version)
[ "$("$root/usr/bin/sluice" --version)" = "sluice $version" ]
unit=$root/lib/systemd/system/sluice.service
grep -qx 'ExecStartPre=/usr/bin/sluice -t -c /etc/sluice/sluice.ini' "$unit"
grep -qx 'ExecStart=/usr/bin/sluice -c /etc/sluice/sluice.ini' "$unit"
pcdir=$root/usr/lib/$ma/pkgconfig
[ "$(realpath "$(PKG_CONFIG_PATH=$pcdir pkg-config --variable=libdir sluice)")" = "$(realpath "$root/usr/lib/$ma")" ]
echo "extracted: sluice -t and --version ($version) pass, unit and sluice.pc point at the package's paths"
