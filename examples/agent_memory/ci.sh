#!/bin/sh
# ci.sh — a bounded run of the agent-memory demo: --limit 3000 records into a temporary directory, twice. The
# first run must ingest into the persistent and vector sources and finish its agent session, its conversation
# (trimming, a rolling summary heading the window) and recall; the second must find the data already there and
# skip the ingest, with the same recall. The corpus is
# ../shared/corpus/ when present, else one examples/corpus/build-corpus.sh builds (from the apt lists, or, with
# no network, from the installed packages).
#
# Usage: examples/agent_memory/ci.sh [path/to/agent_memory]   (run from the repository root)
set -eu
bin="${1:-build/examples/agent_memory}"
dir=$(mktemp -d "${TMPDIR:-/tmp}/engram-demo.XXXXXX")
trap 'rm -rf "$dir"' EXIT INT TERM
fail() { echo "agent_memory ci: FAIL: $*" >&2; [ -f "$dir/run$run" ] && tail -40 "$dir/run$run" >&2; exit 1; }

corpus=../shared/corpus/debian-descriptions.jsonl.gz
if [ ! -f "$corpus" ]; then
  corpus="$dir/corpus.jsonl.gz"
  examples/corpus/build-corpus.sh "$corpus" > "$dir/corpus.log" 2>&1 ||
    examples/corpus/build-corpus.sh --installed "$corpus" > "$dir/corpus.log" 2>&1 ||
    { cat "$dir/corpus.log" >&2; run=0; fail "no corpus"; }
  tail -1 "$dir/corpus.log"
fi

for run in 1 2; do
  start=$(date +%s)
  status=0
  timeout 300 "$bin" --dir "$dir/data" --limit 3000 "$corpus" > "$dir/run$run" 2>&1 || status=$?
  [ "$status" = 0 ] || fail "run $run: exit status $status"
  for source in persistent vectors; do
    if [ $run = 1 ]; then
      grep -q "^  $source .*ingest needed" "$dir/run1" || fail "run 1: $source was not ingested"
      grep -q "^  $source  *[0-9,]* items in .* items/s" "$dir/run1" || fail "run 1: no ingest figures for $source"
    else
      grep -q "^  $source .*skipping the ingest" "$dir/run2" || fail "run 2: $source did not skip the ingest"
    fi
    recall=$(sed -n "s/^  $source  *recall@10 = \([0-9.]*\).*/\1/p" "$dir/run$run")
    [ -n "$recall" ] || fail "run $run: no recall for $source"
    awk -v r="$recall" 'BEGIN { exit !(r >= 0.5) }' || fail "run $run: recall@10 of $source is $recall"
  done
  ! grep -q '^  ingest' "$dir/run2" 2>/dev/null || fail "run 2 ingested again"
  grep -q '"found":true,"key":"user:preferences"' "$dir/run$run" || fail "run $run: the cache did not return the stored fact"
  grep -q '^< version 2:' "$dir/run$run" || fail "run $run: engram_update did not answer"
  grep -q '"found":false,"key":"user:preferences"' "$dir/run$run" || fail "run $run: the deleted fact was found"
  grep -q '^< (error) {"error":"memory_retrieve: unknown memory_source' "$dir/run$run" || fail "run $run: no error result"
  grep -q '"found":5,"results"\|"found": 5' "$dir/run$run" || fail "run $run: a search found fewer than 5 results"
  grep -q '^  + #10 assistant .*(visible 8, trimmed 1)' "$dir/run$run" || fail "run $run: the thread did not keep its newest 8"
  grep -q '^  summariser: messages #1..#6 now summarised' "$dir/run$run" || fail "run $run: the summary did not roll forward"
  grep -q '^    {"role":"system","content":"Summary of the earlier conversation: user: I want to learn' "$dir/run$run" ||
    fail "run $run: the window is not headed by the summary"
  grep -q '^    {"role":"assistant","content":"Bitter means' "$dir/run$run" || fail "run $run: the window lacks the newest turn"
  grep -q '^== done' "$dir/run$run" || fail "run $run: did not finish"
  echo "agent_memory ci: run $run ok in $(( $(date +%s) - start )) s:"
  grep -E "^  (persistent|vectors) .*(items in|skipping|recall)" "$dir/run$run"
done
echo "agent_memory ci: ok"
