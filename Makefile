# Thin wrapper over CMake: the README's commands. Every target installs missing packages first.
BUILD      ?= build
SAN_BUILD  ?= build-sanitize
JOBS       ?= $(shell nproc)
CONFIG     ?= config/sluice.ini

.PHONY: all deps build run test test-sanitize bench format clean

all: build

deps:
	@./scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory

run: build
	@./scripts/demo $(BUILD) $(CONFIG)

test: build
	@cd $(BUILD) && ctest --output-on-failure --timeout 900 -j 2

test-sanitize: deps
	@cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSLUICE_SANITIZE=ON >/dev/null
	@cmake --build $(SAN_BUILD) -j $(JOBS) -- --no-print-directory
	@cd $(SAN_BUILD) && SLUICE_SANITIZED=1 ctest --output-on-failure --timeout 1800 -j 2

bench: build
	@./scripts/install-deps --bench
	@./bench/run $(BENCH_ARGS)

format:
	@clang-format -i src/*/*.c src/*/*.h tests/*/*.c bench/*.c bench/*.h

clean:
	@rm -rf $(BUILD) $(SAN_BUILD)
