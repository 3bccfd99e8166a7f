#!/bin/sh
# Runs every test program given, each with a time limit, and ends with one summary line that CI reads:
#   "engram tests: N programs, P passed, F failed"
# ENGRAM_TEST_JOBS programs run at once (default: one per core): each test starts its own servers on free
# loopback ports in its own temporary directory, so programs do not share state; each program's output is kept
# in a log and printed whole when it ends, headed by its name, result and time, so parallel runs stay readable.
# With ENGRAM_VALGRIND=1 every program runs under valgrind's memcheck (leaks are errors).
# Usage: tests/run-tests.sh DIR TEST...   (DIR is kept for the callers; the programs are named in full)
if [ "${1:-}" = "--one" ]; then
  # One program: run it, keep its output and status, print the output under a lock.
  t=$2 logs=$3
  name=$(basename "$t")
  start=$(date +%s)
  if [ ! -x "$t" ]; then
    echo "missing test program $t" > "$logs/$name.log"; rc=127
  elif [ "${ENGRAM_VALGRIND:-0}" = 1 ]; then
    timeout 1800 valgrind -q --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
      --error-exitcode=99 "$t" > "$logs/$name.log" 2>&1
    rc=$?
  else
    timeout 900 "$t" > "$logs/$name.log" 2>&1
    rc=$?
  fi
  echo "$rc" > "$logs/$name.rc"
  if [ "$rc" = 0 ]; then verdict=passed; else verdict="FAILED (rc=$rc)"; fi
  flock "$logs/lock" sh -c 'echo "=== $1"; cat "$2"; echo "=== $1: $3 in $4 s"' sh "$name" "$logs/$name.log" "$verdict" \
    "$(( $(date +%s) - start ))"
  exit 0
fi
dir="$1"; shift
jobs=${ENGRAM_TEST_JOBS:-$(nproc 2>/dev/null || echo 1)}
logs=$(mktemp -d /tmp/engram-tests-XXXXXX) || exit 2
trap 'rm -rf "$logs"' EXIT
: > "$logs/lock"
printf '%s\n' "$@" | xargs -P "$jobs" -I{} sh "$0" --one {} "$logs"
passed=0; failed=0; failed_names=""
for t in "$@"; do
  name=$(basename "$t")
  rc=$(cat "$logs/$name.rc" 2>/dev/null || echo "none")
  if [ "$rc" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names="$failed_names $name(rc=$rc)"; fi
done
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "engram tests: $((passed + failed)) programs, $passed passed, $failed failed"
[ $failed = 0 ]
