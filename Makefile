# Thin wrapper over CMake: the README's commands. Every target installs missing packages first.
BUILD      ?= build
SAN_BUILD  ?= build-sanitize
TSAN_BUILD ?= build-tsan
JOBS       ?= $(shell nproc)
CONFIG     ?= config/sluice.ini
PREFIX     ?= /usr/local
DEB_BUILD  ?= build-deb
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
ANA_BUILD  ?= build-analyze

.PHONY: all deps build install deb run test test-sanitize test-tsan fuzz analyze bench format clean

all: build

deps:
	@./scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory

# The unit names the daemon and config by their installed paths: configure for PREFIX first.
install: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory
	@cmake --install $(BUILD)

# A tree of its own laid out as Debian wants it (what debhelper passes to CMake), only the
# installed targets built, then CPack's DEB generator over the same install rules.
deb: deps
	@cmake -S . -B $(DEB_BUILD) -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
	    -DCMAKE_INSTALL_SYSCONFDIR=/etc -DSLUICE_SYSTEMD_UNITDIR=/lib/systemd/system >/dev/null
	@cmake --build $(DEB_BUILD) -j $(JOBS) --target sluice sluice_shared sluice_static sluice_man \
	    -- --no-print-directory
	@cd $(DEB_BUILD) && cpack -G DEB >/dev/null
	@ls $(DEB_BUILD)/sluice_*.deb

run: build
	@./scripts/demo $(BUILD) $(CONFIG)

test: build
	@cd $(BUILD) && ctest --output-on-failure --timeout 900 -j 2

test-sanitize: deps
	@cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSLUICE_SANITIZE=ON >/dev/null
	@cmake --build $(SAN_BUILD) -j $(JOBS) -- --no-print-directory
	@cd $(SAN_BUILD) && SLUICE_SANITIZED=1 ctest --output-on-failure --timeout 1800 -j 2

# libFuzzer targets (fuzz/fuzz_*.c) in a clang build of their own, each run FUZZ_SECONDS.
fuzz: deps
	@./scripts/install-deps --fuzz
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DSLUICE_FUZZ=ON \
	    -DSLUICE_TESTS=OFF >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzzers -- --no-print-directory
	@FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz $(FUZZ_BUILD)

# ThreadSanitizer (cannot share a build with ASan): its own tree; the ctest environment of
# that tree passes tests/tsan.supp and makes any report fail its test.
test-tsan: deps
	@cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSLUICE_TSAN=ON >/dev/null
	@cmake --build $(TSAN_BUILD) -j $(JOBS) -- --no-print-directory
	@cd $(TSAN_BUILD) && SLUICE_SANITIZED=1 ctest --output-on-failure --timeout 1800 -j 2

# clang-tidy and cppcheck over every file of src/, each with its layer's flags; any finding fails.
analyze: deps
	@JOBS=$(JOBS) ./scripts/analyze $(ANA_BUILD)

bench: build
	@./scripts/install-deps --bench
	@./bench/run $(BENCH_ARGS)

format:
	@clang-format -i src/*/*.c src/*/*.h tests/*/*.c bench/*.c bench/*.h fuzz/*.c fuzz/*.h

clean:
	@rm -rf $(BUILD) $(SAN_BUILD) $(TSAN_BUILD) $(DEB_BUILD) $(FUZZ_BUILD) $(ANA_BUILD)
