#!/bin/sh
# ci.sh — runs the multi_source_agent example and checks its routing: the configured default, a call with no
# source landing on the default, set_default_source moving it, remove_source of the default falling back to the
# next source, a removed source refused with ENGRAM_EUNKNOWN_SOURCE (and an error result from the tools), a
# clean close (exit status 0, no problem found by the program's own checks). With ENGRAM_PG_URL /
# ENGRAM_REDIS_URL set, the postgres and redis sources are routed too.
#
# Usage: examples/multi_source_agent/ci.sh [path/to/multi_source_agent]
set -eu
bin="${1:-build/examples/multi_source_agent}"
out=$(mktemp "${TMPDIR:-/tmp}/engram-msa.XXXXXX")
trap 'rm -f "$out"' EXIT INT TERM
fail() { echo "multi_source_agent ci: FAIL: $*" >&2; cat "$out" >&2; exit 1; }

status=0
timeout 60 "$bin" > "$out" 2>&1 || status=$?
[ "$status" = 0 ] || fail "exit status $status"
check() { grep -q -- "$2" "$out" || fail "$1"; echo "  ok  $1"; }
check "archive is the configured default" 'as configured.*: session archive\*'
check "a call with no source goes to the default" 'retrieve goal from (default) *→ "ship the release"'
check "set_default_source moves the default" 'after set_default_source): session\* archive'
check "the new default answers" 'retrieve goal from (default) *→ "answer the user'"'"'s question"'
check "remove_source of the default falls back" 'after remove_source): archive\*'
check "a removed source is refused at once" 'retrieve goal from session *refused at once: ENGRAM_EUNKNOWN_SOURCE'
check "the tools answer an error result for it" '"error":"memory_retrieve: unknown memory_source'
check "clean close" '^closed: ENGRAM_OK; 0 problem(s)'
echo "multi_source_agent ci: ok"
