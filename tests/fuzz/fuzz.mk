# tests/fuzz/fuzz.mk — libFuzzer harnesses (tests/fuzz/fuzz_*.c), included by the top Makefile.
#
#   make fuzz-build                 builds every harness into build/fuzz/ (clang, ASan + UBSan + libFuzzer)
#   make fuzz FUZZ_SECONDS=N        runs each harness for N seconds (default 60), FUZZ_JOBS at once; fails when
#                                   any harness finds a crash, a leak, a timeout or a broken invariant
#   make fuzz-corpus                runs each harness once over its committed seeds (a quick regression check)
#   make fuzz FUZZ_ONLY="pattern filter"   only those harnesses
#
# The library is compiled again for the fuzzers, with clang and -fsanitize=fuzzer-no-link,address,undefined, into
# build/fuzz/obj/ (never the gcc objects of build/obj/). Seeds are tests/fuzz/corpus/<name>/ (read only: what a
# run discovers goes to build/fuzz/corpus/<name>/), dictionaries tests/fuzz/<name>.dict, crash inputs and logs
# build/fuzz/artifacts/ and build/fuzz/<name>.log. Reproduce a crash with build/fuzz/fuzz_<name> <file>.

DEB_PKGS += clang libfuzzer-14-dev
DEB_CMDS += clang

FUZZ_BUILD   ?= build/fuzz
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TIMEOUT ?= 30
FUZZ_RSS_MB  ?= 2048
FUZZ_ARGS    ?=
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_ONLY    ?= $(FUZZ_NAMES)
FUZZ_JOBS    ?= $(shell nproc 2>/dev/null || echo 1)
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE -O1 -g $(WARN) -MMD -MP \
                -DENGRAM_WITH_POSTGRES=$(WITH_POSTGRES) -DENGRAM_WITH_REDIS=$(WITH_REDIS) \
                $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(FUZZ_SAN)
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(LIB_SRC))
FUZZ_BIN     := $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ_NAMES))
# libFuzzer's options for every run; the harnesses that start threads keep to one worker.
FUZZ_RUN_OPTS = -timeout=$(FUZZ_TIMEOUT) -rss_limit_mb=$(FUZZ_RSS_MB) -print_final_stats=1

.PHONY: fuzz fuzz-build fuzz-corpus fuzz-deps

# clang and its fuzzer runtime: `make deps` installs them (DEB_PKGS above) when either is missing.
fuzz-deps:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 && dpkg -s libfuzzer-14-dev >/dev/null 2>&1 || $(MAKE) --no-print-directory deps
	@pkg-config --exists $(PKGS) 2>/dev/null && [ -f /usr/include/http_parser.h ] || $(MAKE) --no-print-directory deps

FUZZ_FLAGS_STAMP := $(FUZZ_BUILD)/flags.$(shell printf '%s %s' '$(FUZZ_CFLAGS)' '$(FUZZ_CC)' | cksum | cut -d' ' -f1)
$(FUZZ_FLAGS_STAMP):
	@mkdir -p $(FUZZ_BUILD) && rm -f $(FUZZ_BUILD)/flags.* && touch $@

$(FUZZ_BUILD)/obj/src/%.o: src/%.c $(FUZZ_FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -Iinclude -Isrc -c $< -o $@

$(FUZZ_BUILD)/obj/sources/%.o: sources/%.c $(FUZZ_FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -Iinclude -I$(dir $<) -c $< -o $@

$(FUZZ_BUILD)/libengram.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The server harness includes examples/server/main.c (its main renamed) and links libhttp-parser.
$(FUZZ_BUILD)/obj/tests/fuzz/%.o: tests/fuzz/%.c tests/fuzz/fuzz_common.h $(FUZZ_FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -Iinclude -Itests/fuzz -c $< -o $@

$(FUZZ_BUILD)/obj/tests/fuzz/fuzz_server.o: examples/server/main.c
# The MCP harness includes engram-mcp's dispatcher (tools/mcp/dispatch.c).
$(FUZZ_BUILD)/obj/tests/fuzz/fuzz_mcp.o: tools/mcp/dispatch.c tools/mcp/mcp.h

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_BUILD)/libengram.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_BUILD)/libengram.a -o $@ $(LIBS) \
	  $(if $(filter %fuzz_server,$@),-lhttp_parser)

# Keep the harness objects (make would delete them as intermediates).
.SECONDARY: $(patsubst %,$(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o,$(FUZZ_NAMES))

fuzz-build: fuzz-deps
	@$(MAKE) --no-print-directory $(SUBJOBS) $(FUZZ_BIN)

# FUZZ_JOBS harnesses at once (default: one per core; each harness is one libFuzzer worker on one core). Each run
# reads the committed seeds and the corpus of earlier runs, writes what it finds to the latter, and prints
# libFuzzer's final statistics when it ends (tests/fuzz/run-one.sh).
fuzz: fuzz-build
	@mkdir -p $(FUZZ_BUILD)/artifacts; rm -f $(FUZZ_BUILD)/failed; \
	printf '%s\n' $(FUZZ_ONLY) | xargs -P $(FUZZ_JOBS) -I{} sh tests/fuzz/run-one.sh {} $(FUZZ_BUILD) $(FUZZ_SECONDS) \
	  "$(FUZZ_RUN_OPTS) $(FUZZ_ARGS)"; \
	if [ -s $(FUZZ_BUILD)/failed ]; then \
	  echo "fuzz: failed: $$(cat $(FUZZ_BUILD)/failed | tr '\n' ' ')(inputs in $(FUZZ_BUILD)/artifacts/)"; exit 1; fi; \
	echo "fuzz: every harness ran $(FUZZ_SECONDS) s without a finding"

# Every committed seed once, no mutation: a regression check that takes seconds.
fuzz-corpus: fuzz-build
	@for n in $(FUZZ_ONLY); do \
	  $(FUZZ_BUILD)/fuzz_$$n $(FUZZ_RUN_OPTS) -runs=0 tests/fuzz/corpus/$$n > $(FUZZ_BUILD)/$$n.corpus.log 2>&1 \
	    || { echo "fuzz-corpus: $$n FAILED:"; tail -n 60 $(FUZZ_BUILD)/$$n.corpus.log; exit 1; }; \
	  echo "fuzz-corpus: $$n: $$(ls tests/fuzz/corpus/$$n | wc -l) seeds pass"; \
	done
