# engram — build, test, sanitizer builds, benchmarks, demo and install.
#
# Every dependency comes from Debian 12 packages found through pkg-config; `make deps` installs what is
# missing, and `make test` / `make demo` run it by themselves when something is missing.

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
# Compile jobs of the builds that test targets start (make test, asan, tsan, stress-test): one per core, unless
# this make already runs in parallel (-j given).
JOBS    ?= $(shell nproc 2>/dev/null || echo 1)
SUBJOBS  = $(if $(findstring -j,$(MAKEFLAGS)),,-j$(JOBS))
CC      ?= cc

# Optional backends: `make WITH_POSTGRES=0 WITH_REDIS=0` builds a library that links neither libpq nor hiredis
# (and skips their tests, benchmarks and conformance entries). Use the same values for every target of a build.
WITH_POSTGRES ?= 1
WITH_REDIS    ?= 1

PKGS     := libuv libcjson sqlite3 libcurl $(if $(filter 1,$(WITH_REDIS)),hiredis) $(if $(filter 1,$(WITH_POSTGRES)),libpq)
DEB_PKGS := build-essential pkg-config libuv1-dev libhiredis-dev libpq-dev libcjson-dev libsqlite3-dev libck-dev \
            libcmocka-dev libhttp-parser-dev libcurl4-openssl-dev redis-server postgresql-15 sqlite3 curl wrk valgrind \
            libhnswlib-dev
DEB_CMDS := pkg-config cc redis-server sqlite3 curl wrk valgrind /usr/lib/postgresql/15/bin/initdb

SAN_FLAGS ?=
OPT       ?= -O2 -g
WARN      := -Werror=implicit-function-declaration -Wall -Wextra -Wno-unused-parameter -Wshadow -Wstrict-prototypes
# Include paths are per part of the tree (docs/architecture.md): the core sees include/ and src/; a backend sees
# include/ and its own folder only; tests and examples see include/ and tests/.
# -MMD -MP: each object's header dependencies are tracked (build/obj/**/*.d).
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -fPIC -fvisibility=hidden -MMD -MP \
             -DENGRAM_WITH_POSTGRES=$(WITH_POSTGRES) -DENGRAM_WITH_REDIS=$(WITH_REDIS) \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(SAN_FLAGS) $(CFLAGS)
CFLAGS_ALL = $(CFLAGS_BASE) -Iinclude -Itests
LIBS       = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
TEST_LIBS  = $(LIBS) $(shell pkg-config --libs cmocka 2>/dev/null)
# The benchmarks' raw in-process baseline is Concurrency Kit's ck_ht (the library itself no longer uses ck).
BENCH_LIBS = $(TEST_LIBS) $(shell pkg-config --libs ck 2>/dev/null)

# What a backend left out takes with it (sources, tests, benchmarks, test servers).
NO_PG    := $(if $(filter 0,$(WITH_POSTGRES)),sources/postgres/% %_postgres.c %/pg_server.c)
NO_REDIS := $(if $(filter 0,$(WITH_REDIS)),sources/redis/% %_redis.c %/redis_server.c)
LIB_SRC  := $(filter-out $(NO_PG) $(NO_REDIS),$(wildcard src/*/*.c) $(wildcard sources/*/*.c))
LIB_OBJ  := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC))
SUPPORT_SRC := $(filter-out $(NO_PG) $(NO_REDIS),$(wildcard tests/support/*.c))
SUPPORT_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(SUPPORT_SRC))
TEST_ALL := $(filter-out $(NO_PG) $(NO_REDIS),$(wildcard tests/test_*.c))
# The longest programs first, so that the runs at once (tests/run-tests.sh) end together.
TEST_FIRST := test_thread test_conformance test_redis test_threads test_export test_alloc test_sqlite test_postgres
TEST_SRC := $(foreach t,$(TEST_FIRST),$(filter tests/$(t).c,$(TEST_ALL))) \
            $(filter-out $(patsubst %,tests/%.c,$(TEST_FIRST)),$(TEST_ALL))
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
# Tests where something runs on a thread of its own — an own-thread actor (sqlite, vector), the manager's own
# thread, completion queues drained elsewhere — the ones `make tsan` runs; the conformance suite runs there
# against the sources whose actors have threads (TSAN_SOURCES).
THREADED_TESTS ?= test_thread test_conformance test_threads test_alloc test_sqlite test_cq test_manager test_vector test_embed_http test_tiered test_events test_hybrid
TSAN_SOURCES   ?= cache,sqlite,sqlite-memory,sqlite-required-only,vector,vector-file,tiered-cache-sqlite
EXAMPLE_SRC := $(wildcard examples/*/main.c)
EXAMPLE_BIN := $(patsubst examples/%/main.c,$(BUILD)/examples/%,$(EXAMPLE_SRC))
BENCH_SRC := $(filter-out $(NO_PG) $(NO_REDIS),$(wildcard tests/bench/bench_*.c))
BENCH_BIN := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: cli cli-test mcp mcp-deps mcp-test mcp-asan mcp-bench all lib test check check-layout stress-test soak asan tsan valgrind install uninstall clean deps deps-check headers examples bench bench-ann demo

all: lib headers $(BUILD)/engram-mcp $(BUILD)/engram

lib: $(BUILD)/libengram.a $(BUILD)/libengram.so $(BUILD)/engram.pc

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# The flags an object was built with: a change (WITH_*, OPT, SAN_FLAGS) rebuilds everything.
FLAGS_STAMP := $(BUILD)/flags.$(shell printf '%s' '$(CFLAGS_BASE)' | cksum | cut -d' ' -f1)
$(FLAGS_STAMP):
	@mkdir -p $(BUILD) && rm -f $(BUILD)/flags.* && touch $@

$(BUILD)/obj/src/%.o: src/%.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -Iinclude -Isrc -c $< -o $@

$(BUILD)/obj/sources/%.o: sources/%.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -Iinclude -I$(dir $<) -c $< -o $@

$(BUILD)/obj/tests/%.o: tests/%.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/libengram.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libengram.so: $(LIB_OBJ)
	$(CC) -shared $(SAN_FLAGS) -o $@ $^ $(LIBS)

$(BUILD)/engram.pc: Makefile $(FLAGS_STAMP)
	@mkdir -p $(BUILD)
	@printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: engram\nDescription: asynchronous actor-style memory manager for LLM agents\nVersion: 0.1.0\nRequires: libcjson\nRequires.private: %s\nLibs: -L$${libdir} -lengram\nLibs.private: -lpthread -lm\nCflags: -I$${includedir}\n' \
	  '$(PREFIX)' '$(filter-out libcjson,$(PKGS))' > $@

# The public headers must compile on their own as strict C11.
headers:
	@mkdir -p $(BUILD)
	@for h in $(patsubst include/%,%,$(wildcard include/*.h include/engram/*.h)); do \
	  printf '#include <%s>\nint main(void) { return 0; }\n' $$h > $(BUILD)/hdr.c; \
	  $(CC) -std=c11 -pedantic -Wall -Wextra -Werror -Iinclude $$(pkg-config --cflags libcjson) -c $(BUILD)/hdr.c -o $(BUILD)/hdr.o || exit 1; \
	  printf '#include <%s>\n#include <%s>\nint main(void) { return 0; }\n' $$h $$h > $(BUILD)/hdr.c; \
	  $(CC) -std=c11 -pedantic -Wall -Wextra -Werror -Iinclude $$(pkg-config --cflags libcjson) -c $(BUILD)/hdr.c -o $(BUILD)/hdr.o || exit 1; \
	done; echo "headers: every public header compiles alone (and twice) with -std=c11 -pedantic"

$(BUILD)/tests/%: tests/%.c $(BUILD)/libengram.a $(SUPPORT_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests $< $(SUPPORT_OBJ) $(BUILD)/libengram.a -o $@ $(TEST_LIBS)

$(BUILD)/examples/%: examples/%/main.c $(BUILD)/libengram.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/libengram.a -o $@ $(LIBS) -lhttp_parser

$(BUILD)/bench/%: tests/bench/%.c tests/bench/benchlib.c tests/bench/benchlib.h tests/bench/hdr.c tests/bench/hdr.h $(BUILD)/libengram.a $(SUPPORT_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(shell pkg-config --cflags ck 2>/dev/null) -Itests $< tests/bench/benchlib.c tests/bench/hdr.c $(SUPPORT_OBJ) $(BUILD)/libengram.a -o $@ $(BENCH_LIBS)

# The soak: mixed load on every source with 1,000 calls in flight while redis-server and PostgreSQL are killed
# and restarted every 20 s (tests/soak/soak.c); SOAK_SECONDS long (default 60).
SOAK_SECONDS ?= 60
$(BUILD)/soak/soak: tests/soak/soak.c $(BUILD)/libengram.a $(SUPPORT_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< $(SUPPORT_OBJ) $(BUILD)/libengram.a -o $@ $(TEST_LIBS)

soak: deps-check
	@$(MAKE) --no-print-directory lib $(BUILD)/soak/soak
	@$(BUILD)/soak/soak $(SOAK_SECONDS)

# engram-mcp (tools/mcp/, docs/mcp.md): engram's memory over the Model Context Protocol, built on the public API
# only. `make mcp-test` runs its tests: tests/mcp/stdio-test.sh (raw JSON-RPC over stdio and HTTP),
# tests/mcp/many-processes.sh (4 processes over one SQLite file), tests/mcp/http-hostile.mjs (slow, broken and
# too many HTTP clients) and
# tests/mcp/client.mjs (the official TypeScript SDK client over both transports) and tests/mcp/conformance.sh (the
# official conformance suite over HTTP, with tests/mcp/expected-failures.yml); `make mcp-deps` installs Node.js
# and npm when missing and the pinned clients of tests/mcp (npm ci; node_modules is not in git).
MCP_SRC := $(wildcard tools/mcp/*.c)
$(BUILD)/engram-mcp: $(MCP_SRC) $(wildcard tools/mcp/*.h) $(BUILD)/libengram.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -Iinclude $(MCP_SRC) $(BUILD)/libengram.a -o $@ $(LIBS) -lhttp_parser

mcp: lib $(BUILD)/engram-mcp

# The engram command (tools/cli/, docs/cli.md): get, put, delete, search, list, count, info, sources, export and
# import from a shell, on the public API only. `make cli-test` drives it as a subprocess (tests/cli/cli-test.sh)
# against a cache and a SQLite file.
CLI_SRC := $(wildcard tools/cli/*.c)
$(BUILD)/engram: $(CLI_SRC) $(BUILD)/libengram.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -Iinclude $(CLI_SRC) $(BUILD)/libengram.a -o $@ $(LIBS)

cli: lib $(BUILD)/engram

cli-test: deps-check
	@$(MAKE) --no-print-directory cli
	@tests/cli/cli-test.sh $(BUILD)/engram

tests/mcp/node_modules/.package-lock.json: tests/mcp/package.json tests/mcp/package-lock.json
	@command -v npm >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  echo "mcp-deps: installing nodejs npm"; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm; }
	cd tests/mcp && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

mcp-deps: tests/mcp/node_modules/.package-lock.json

mcp-test: deps-check mcp-deps
	@$(MAKE) --no-print-directory mcp
	@tests/mcp/stdio-test.sh $(BUILD)/engram-mcp
	@tests/mcp/many-processes.sh $(BUILD)/engram-mcp
	@node tests/mcp/client.mjs $(BUILD)/engram-mcp
	@node tests/mcp/http-hostile.mjs $(BUILD)/engram-mcp
	@tests/mcp/conformance.sh $(BUILD)/engram-mcp

# engram-mcp's speed (tests/mcp/bench.mjs): stdio round trip with one call in flight, HTTP keep-alive calls/s.
mcp-bench: mcp-deps
	@$(MAKE) --no-print-directory mcp
	@node tests/mcp/bench.mjs $(BUILD)/engram-mcp

# The same tests against engram-mcp built with AddressSanitizer + UBSan (the flags of `make asan`, so its objects
# are reused); the tests fail on any sanitizer report in the server's stderr, leaks included.
MCP_ASAN_BUILD ?= build/asan
mcp-asan: deps-check mcp-deps
	@$(MAKE) --no-print-directory BUILD=$(MCP_ASAN_BUILD) OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" mcp-test

# Installs the missing Debian packages (needs root or sudo), saying what it installs; and, through mcp-deps,
# Node.js/npm when missing and the pinned MCP clients of tests/mcp.
deps: mcp-deps
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then echo "deps: every package is installed"; exit 0; fi; \
	echo "deps: installing$$missing"; \
	SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing

# Runs `make deps` when a library or a tool the tests need is missing.
deps-check:
	@ok=1; pkg-config --exists $(PKGS) cmocka 2>/dev/null || ok=0; \
	for c in $(DEB_CMDS); do command -v $$c >/dev/null 2>&1 || ok=0; done; \
	[ -f /usr/include/http_parser.h ] || ok=0; \
	if [ $$ok = 0 ]; then $(MAKE) --no-print-directory deps; fi

test: deps-check
	@$(MAKE) --no-print-directory $(SUBJOBS) headers lib tests-build
	@tests/run-tests.sh $(BUILD)/tests $(TEST_BIN)

tests-build: $(TEST_BIN) $(BUILD)/engram-mcp

# The whole suite STRESS_RUNS times in a row (default 20) with two CPU hogs on the 2 cores; CI runs a short form.
STRESS_RUNS ?= 20
stress-test: deps-check
	@$(MAKE) --no-print-directory $(SUBJOBS) lib tests-build
	@tests/stress.sh $(STRESS_RUNS) $(BUILD)/tests $(TEST_BIN)

check: test

asan: deps-check
	@$(MAKE) --no-print-directory BUILD=build/asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" test

tsan: deps-check
	@ENGRAM_TEST_SOURCES="$(TSAN_SOURCES)" TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp $(TSAN_OPTIONS)" \
	  $(MAKE) --no-print-directory BUILD=build/tsan OPT="-O1 -g" SAN_FLAGS="-fsanitize=thread" \
	  TEST_BIN="$(addprefix build/tsan/tests/,$(THREADED_TESTS))" test

valgrind: deps-check
	@$(MAKE) --no-print-directory lib tests-build
	@ENGRAM_VALGRIND=1 tests/run-tests.sh $(BUILD)/tests $(TEST_BIN)

examples: lib $(EXAMPLE_BIN)

# The architecture the tree promises (docs/architecture.md): no cycle in src/ or in a backend, layers call down
# only, backends see include/ and their own folder; and no internal symbol exported from the shared library.
check-layout: lib
	@tests/layout/check-layout.sh $(BUILD)/obj
	@n=$$(nm -D --defined-only $(BUILD)/libengram.so | grep -c ' engram__'); \
	if [ "$$n" != 0 ]; then echo "check-layout: libengram.so exports $$n internal engram__ symbols"; exit 1; fi; \
	echo "check-layout: libengram.so exports no engram__ symbol"

# The README's main command: installs what is missing, builds, and runs the agent-memory demo on the Debian
# package-description corpus — ../shared/corpus/ when present, else one examples/corpus/build-corpus.sh builds
# from this machine's apt lists. Data persists in $ENGRAM_DEMO_DIR (default $(BUILD)/demo), so a second run
# skips the ingest; ENGRAM_REDIS_URL / ENGRAM_PG_URL add those sources; DEMO_ARGS="--limit 5000" ingests less.
demo: deps-check
	@$(MAKE) --no-print-directory lib $(BUILD)/examples/agent_memory
	@corpus=../shared/corpus/debian-descriptions.jsonl.gz; \
	if [ ! -f "$$corpus" ]; then \
	  corpus=$(BUILD)/demo/corpus/debian-descriptions.jsonl.gz; \
	  [ -f "$$corpus" ] || examples/corpus/build-corpus.sh "$$corpus" || exit 1; \
	fi; \
	ENGRAM_DEMO_DIR="$${ENGRAM_DEMO_DIR:-$(BUILD)/demo}" $(BUILD)/examples/agent_memory $(DEMO_ARGS) "$$corpus"

bench: deps-check
	@$(MAKE) --no-print-directory OPT="-O3 -g -march=native" BUILD=build/release lib $(patsubst $(BUILD)/%,build/release/%,$(BENCH_BIN))
	@tests/bench/run-bench.sh build/release/bench

# The approximate index (bench_ann: HNSW against exact search and hnswlib) at 1,000,000 items, alone: long (the
# two graphs take tens of minutes each to build on one core). BENCH_ANN_N, BENCH_ANN_Q... as in bench_ann.c.
bench-ann: deps-check
	@$(MAKE) --no-print-directory OPT="-O3 -g -march=native" BUILD=build/release lib build/release/bench/bench_ann
	@BENCH_ANN_N=$${BENCH_ANN_N:-1000000} tests/bench/run-bench.sh build/release/bench bench_ann

install: lib $(BUILD)/engram-mcp $(BUILD)/engram
	@rm -f $(BUILD)/engram.pc && $(MAKE) --no-print-directory $(BUILD)/engram.pc PREFIX=$(PREFIX)
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/engram $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 $(BUILD)/libengram.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libengram.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/engram.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 include/engram/*.h $(DESTDIR)$(PREFIX)/include/engram/
	install -m 644 $(BUILD)/engram.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/
	install -d $(DESTDIR)$(PREFIX)/bin && install -m 755 $(BUILD)/engram-mcp $(BUILD)/engram $(DESTDIR)$(PREFIX)/bin/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/lib/libengram.a $(DESTDIR)$(PREFIX)/lib/libengram.so \
	  $(DESTDIR)$(PREFIX)/include/engram.h \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig/engram.pc $(DESTDIR)$(PREFIX)/bin/engram-mcp $(DESTDIR)$(PREFIX)/bin/engram
	rm -rf $(DESTDIR)$(PREFIX)/include/engram

clean:
	rm -rf build

# Fuzzing (tests/fuzz/): libFuzzer harnesses, `make fuzz FUZZ_SECONDS=N`.
-include tests/fuzz/fuzz.mk
