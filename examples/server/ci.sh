#!/bin/sh
# ci.sh — runs the server example briefly and checks it from the outside: starts it on a free loopback port
# (--port 0) with a cache and an SQLite source in a temporary directory, checks each route with curl (the tool
# definitions, a store and a retrieve whose arguments arrive as a JSON string, a search, a malformed request →
# 400, an unknown tool → an error result, an unknown route → 404), loads it with wrk (POST /tools/call from a
# Lua script, then GET /tools; 2 threads, 50 connections, 3 s each) printing requests/s, then sends SIGTERM and
# expects a clean shutdown (manager closed, exit status 0). Then examples/server/hostile.sh puts a fresh server
# in front of hostile clients (oversized, malformed and lying requests, stalls, a 1,000-connection flood,
# pipelines; about 15 s).
#
# Usage: examples/server/ci.sh [path/to/server]
set -eu
bin="${1:-build/examples/server}"
dir=$(mktemp -d "${TMPDIR:-/tmp}/engram-server.XXXXXX")
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM
fail() { echo "server ci: FAIL: $*" >&2; [ -f "$dir/out" ] && sed 's/^/  server: /' "$dir/out" >&2; exit 1; }

cat > "$dir/config.json" <<EOF
{"sources": [
  {"name": "cache", "type": "cache", "description": "Fast temporary cache for session data", "default": true},
  {"name": "persistent", "type": "sqlite", "description": "Long-term storage", "options": {"path": "$dir/persistent.db"}}
]}
EOF

"$bin" --port 0 --config "$dir/config.json" > "$dir/out" 2>&1 &
pid=$!
port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's/^listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/out")
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || fail "exited before listening"
  sleep 0.1
done
[ -n "$port" ] || fail "not listening after 10 s"
url="http://127.0.0.1:$port"
echo "server ci: listening on $url"

# call NAME ARGS → prints "STATUS BODY"
post() { curl -s -o "$dir/body" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$1" "$url${2:-/tools/call}"; }
expect() { # expect WHAT CODE PATTERN
  code=$(cat "$dir/code"); body=$(cat "$dir/body")
  [ "$code" = "$2" ] || fail "$1: HTTP $code, expected $2 (body: $body)"
  printf '%s' "$body" | grep -q -- "$3" || fail "$1: body lacks $3: $body"
  echo "  ok  $1: HTTP $code $(printf '%s' "$body" | cut -c1-110)"
}

curl -s -o "$dir/body" -w '%{http_code}' "$url/tools" > "$dir/code"
expect "GET /tools" 200 '"name":"memory_list_sources"'
n=$(grep -o '"name":"memory_[a-z_]*"' "$dir/body" | sort -u | wc -l)
[ "$n" = 6 ] || fail "GET /tools lists $n tools, expected 6"
curl -s -o "$dir/body" -w '%{http_code}' "$url/tools?format=anthropic" > "$dir/code"
expect "GET /tools?format=anthropic" 200 '"input_schema"'

post '{"name": "memory_store", "arguments": {"key": "user:42", "value": {"name": "Ada", "likes": ["math", "engines"]}, "metadata": {"tags": ["profile"]}}}' > "$dir/code"
expect "memory_store" 200 '"status":"stored"'
post '{"name": "memory_retrieve", "arguments": "{\"key\": \"user:42\"}"}' > "$dir/code"
expect "memory_retrieve (arguments as a JSON string)" 200 '"found":true.*"Ada"'
post '{"name": "memory_store", "arguments": {"key": "doc:curl", "value": {"text": "command line tool for transferring data with URL syntax"}, "memory_source": "persistent"}}' > "$dir/code"
expect "memory_store into persistent" 200 '"status":"stored"'
post '{"name": "memory_search", "arguments": {"query": "transferring data", "memory_source": "persistent"}}' > "$dir/code"
expect "memory_search on persistent" 200 '"key":"doc:curl"'
post '{"name": "memory_list_sources"}' > "$dir/code"
expect "memory_list_sources (no arguments)" 200 '"name":"persistent"'
post '{"name": "memory_teleport", "arguments": {}}' > "$dir/code"
expect "unknown tool → error result" 200 '"error"'
post '{"name": "memory_retrieve", "arguments": {"key": "x", "memory_source": "nowhere"}}' > "$dir/code"
expect "unknown memory_source → error result" 200 '"error".*nowhere'
post '{"name": "memory_store", "arguments"' > "$dir/code"
expect "malformed JSON → 400" 400 '"error"'
post '["memory_store"]' > "$dir/code"
expect "a body that is not a call → 400" 400 '"error"'
curl -s -o "$dir/body" -w '%{http_code}' "$url/nowhere" > "$dir/code"
expect "unknown route → 404" 404 '"error"'
curl -s -o "$dir/body" -w '%{http_code}' -X DELETE "$url/tools" > "$dir/code"
expect "wrong method → 405" 405 '"error"'
# A request that is not HTTP at all: 400 and the connection closes.
code=$(printf 'BLAH\r\n\r\n' | curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X 'BAD METHOD' "$url/tools" 2>/dev/null || true)
case "$code" in 4*) echo "  ok  malformed request line: HTTP $code" ;; *) fail "malformed request line: HTTP $code" ;; esac

# Load: keep-alive connections, concurrent calls.
cat > "$dir/post.lua" <<'EOF'
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"name":"memory_store","arguments":{"key":"bench:%d","value":{"n":%d}}}', counter % 1000, counter)
  return wrk.format("POST", "/tools/call", {["Content-Type"] = "application/json"}, body)
end
EOF
for target in "POST /tools/call (memory_store)" "GET /tools"; do
  case "$target" in
    POST*) wrk -t2 -c50 -d3s -s "$dir/post.lua" "$url/tools/call" > "$dir/wrk" 2>&1 || fail "wrk failed: $(cat "$dir/wrk")" ;;
    *) wrk -t2 -c50 -d3s "$url/tools" > "$dir/wrk" 2>&1 || fail "wrk failed: $(cat "$dir/wrk")" ;;
  esac
  rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$dir/wrk")
  [ -n "$rps" ] || fail "wrk printed no Requests/sec: $(cat "$dir/wrk")"
  ! grep -q 'Non-2xx' "$dir/wrk" || fail "wrk saw error responses: $(cat "$dir/wrk")"
  if grep -q 'Socket errors' "$dir/wrk"; then fail "wrk saw socket errors: $(grep 'Socket errors' "$dir/wrk")"; fi
  lat=$(sed -n 's/^ *Latency *\([^ ]*\).*/\1/p' "$dir/wrk")
  echo "  wrk -t2 -c50 -d3s $target: $rps requests/s, mean latency $lat"
done

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
grep -q '^manager closed: ENGRAM_OK' "$dir/out" || fail "no clean manager close"
[ "$status" = 0 ] || fail "exit status $status after SIGTERM"
sed -n 's/^signal.*(\(.*\))/  shutdown after \1/p' "$dir/out"
echo "server ci: ok"
sh "$(dirname "$0")/hostile.sh" "$bin"
