#!/bin/sh
# tests/mcp/many-processes.sh — many MCP clients, one store: every MCP host starts its own stdio engram-mcp, so
# several processes over one SQLite file is the normal deployment (the reference memory server loses writes
# there). Four engram-mcp processes run at once over one SQLite file, each sent 1,000 memory_store calls with
# distinct keys and 250 memory_thread_append calls to one shared thread, all written at once (so the calls are
# in flight together); then a fifth process reads every key back and the thread's window. Asserted: every call
# answered without error, all 4,000 keys present with their values, and the thread holding exactly 1,000
# messages numbered 1..1,000 (appends go through engram's update path: read, then a store conditional on the
# version, retried on conflict — across processes too).
# Usage: tests/mcp/many-processes.sh build/engram-mcp
set -u
BIN=${1:?usage: many-processes.sh path/to/engram-mcp}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
bad() { fails=$((fails + 1)); echo "FAIL: $*"; }
printf '{"sources": [{"name": "shared", "type": "sqlite", "description": "one file, many processes", "default": true, "options": {"path": "%s/shared.db"}}]}\n' "$TMP" > "$TMP/config.json"
for p in 0 1 2 3; do
  awk -v p=$p 'BEGIN {
    for (i = 0; i < 1000; i++)
      printf "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"tools/call\",\"params\":{\"name\":\"memory_store\",\"arguments\":{\"key\":\"p%d-%d\",\"value\":{\"p\":%d,\"i\":%d}}}}\n", i, p, i, p, i;
    for (i = 0; i < 250; i++)
      printf "{\"jsonrpc\":\"2.0\",\"id\":\"a%d\",\"method\":\"tools/call\",\"params\":{\"name\":\"memory_thread_append\",\"arguments\":{\"thread\":\"shared-counter\",\"role\":\"user\",\"content\":\"p%d-%d\"}}}\n", i, p, i;
  }' > "$TMP/in$p"
done
start=$(date +%s)
for p in 0 1 2 3; do timeout 120 "$BIN" --config "$TMP/config.json" < "$TMP/in$p" > "$TMP/out$p" 2> "$TMP/err$p" & done
wait
for p in 0 1 2 3; do
  ok=$(grep -c '"isError":false' "$TMP/out$p"); n=$(grep -c '' "$TMP/out$p")
  [ "$ok" = 1250 ] && [ "$n" = 1250 ] || { bad "process $p: $ok of 1250 calls succeeded ($n answers)"; grep '"isError":true' "$TMP/out$p" | head -3 | cut -c1-300; head -5 "$TMP/err$p"; }
done
# read everything back from a fifth process
awk 'BEGIN { for (p = 0; p < 4; p++) for (i = 0; i < 1000; i++)
  printf "{\"jsonrpc\":\"2.0\",\"id\":\"r%d-%d\",\"method\":\"tools/call\",\"params\":{\"name\":\"memory_retrieve\",\"arguments\":{\"key\":\"p%d-%d\"}}}\n", p, i, p, i;
  print "{\"jsonrpc\":\"2.0\",\"id\":\"w\",\"method\":\"tools/call\",\"params\":{\"name\":\"memory_thread_window\",\"arguments\":{\"thread\":\"shared-counter\",\"max_messages\":1000}}}" }' > "$TMP/check"
timeout 60 "$BIN" --config "$TMP/config.json" < "$TMP/check" > "$TMP/checked" 2> "$TMP/errc"
n=0
for p in 0 1 2 3; do # each key holds its own value
  m=$(grep -c "\"structuredContent\":{\"found\":true,\"key\":\"p$p-[0-9]*\",\"value\":{\"p\":$p," "$TMP/checked"); n=$((n + m))
done
[ "$n" = 4000 ] || bad "$n of 4000 keys read back with their values"
grep -F '"id":"w",' "$TMP/checked" > "$TMP/window"
grep -qF '"count":1000,"omitted":0,' "$TMP/window" && grep -qF '"first_seq":1,"last_seq":1000}' "$TMP/window" \
  || { bad "the shared thread does not hold exactly messages 1..1000:"; cut -c1-200 "$TMP/window"; sed 's/.*\("count".*\)/\1/' "$TMP/window" | cut -c1-200; }
distinct=$(grep -o 'p[0-3]-[0-9]*\\"}' "$TMP/window" | sort -u | wc -l)
[ "$distinct" = 1000 ] || bad "the thread holds $distinct distinct messages of 1000"
for f in "$TMP"/err*; do # no sanitizer report (an ASan build of engram-mcp)
  if grep -qE 'Sanitizer|runtime error:' "$f"; then bad "sanitizer report in $f:"; head -20 "$f"; fi
done
echo "many-processes: 4 engram-mcp processes x (1000 stores + 250 appends to one thread) over one SQLite file in $(( $(date +%s) - start )) s: $([ $fails = 0 ] && echo ok || echo "$fails failures")"
[ $fails = 0 ]
