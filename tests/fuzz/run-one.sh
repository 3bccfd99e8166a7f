#!/bin/sh
# run-one.sh — runs one libFuzzer harness for `make fuzz` (tests/fuzz/fuzz.mk), which starts several at once:
# each writes its log to BUILD/NAME.log and prints its figures in one block when it ends, so parallel runs do
# not interleave their lines; a failing harness appends its name to BUILD/failed and prints its log's end.
# Usage: run-one.sh NAME BUILD SECONDS "LIBFUZZER OPTIONS"
set -u
n=$1 build=$2 seconds=$3 opts=$4
mkdir -p "$build/corpus/$n"
dict=""
[ -f "tests/fuzz/$n.dict" ] && dict="-dict=tests/fuzz/$n.dict"
# shellcheck disable=SC2086 # opts and dict are lists of options
if "$build/fuzz_$n" $opts -max_total_time="$seconds" $dict -artifact_prefix="$build/artifacts/$n-" \
     "$build/corpus/$n" "tests/fuzz/corpus/$n" > "$build/$n.log" 2>&1; then
  out=$(grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$build/$n.log" |
        sed "s/^/  $n /")
  printf 'fuzz: %s ran %s s (log: %s)\n%s\n' "$n" "$seconds" "$build/$n.log" "$out"
else
  out=$(tail -n 60 "$build/$n.log")
  printf 'fuzz: %s FAILED — the end of %s:\n%s\n' "$n" "$build/$n.log" "$out"
  echo "$n" >> "$build/failed"
fi
