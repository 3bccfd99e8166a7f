#!/bin/sh
# Runs every test program given, each with a time limit, and ends with one summary line that CI reads:
#   "engram tests: N programs, P passed, F failed"
# With ENGRAM_VALGRIND=1 every program runs under valgrind's memcheck (leaks are errors).
dir="$1"; shift
passed=0; failed=0; failed_names=""
for t in "$@"; do
  [ -x "$t" ] || { echo "missing test program $t"; failed=$((failed + 1)); continue; }
  name=$(basename "$t")
  echo "=== $name"
  if [ "${ENGRAM_VALGRIND:-0}" = 1 ]; then
    timeout 1800 valgrind -q --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
      --error-exitcode=99 "$t"
  else
    timeout 900 "$t"
  fi
  rc=$?
  if [ $rc = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names="$failed_names $name(rc=$rc)"; fi
done
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "engram tests: $((passed + failed)) programs, $passed passed, $failed failed"
[ $failed = 0 ]
