#!/bin/sh
# Runs the whole test suite RUNS times in a row while two CPU hogs keep both cores busy (a busy CI machine),
# and fails at the first failing run: a flaky test is a failing test. Usage: tests/stress.sh RUNS DIR TEST...
# The hogs are stopped however the script ends.
runs="$1"; shift
hogs=""
stop_hogs() { for p in $hogs; do kill "$p" 2>/dev/null; done; }
trap stop_hogs EXIT INT TERM
for i in 1 2; do
  ( while :; do :; done ) &
  hogs="$hogs $!"
done
i=1
while [ "$i" -le "$runs" ]; do
  echo "==== stress run $i of $runs (2 CPU hogs running)"
  if ! tests/run-tests.sh "$@"; then
    echo "stress-test: run $i of $runs failed"
    exit 1
  fi
  i=$((i + 1))
done
echo "stress-test: $runs runs in a row passed with 2 CPU hogs"
