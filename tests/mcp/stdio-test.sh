#!/bin/sh
# tests/mcp/stdio-test.sh — raw-protocol test of engram-mcp (no MCP library in between): feeds JSON-RPC lines to
# the stdio transport and checks every answer, then sends HTTP requests with curl to the Streamable HTTP
# transport and checks status codes and bodies. It covers what a client library never sends: malformed JSON,
# batches, objects that are not requests, unknown methods and tools, a line over the size limit, a message
# split across reads, stdin closed in the middle of a message, a foreign Origin or Host, a missing token, a
# body over the limit. Usage: tests/mcp/stdio-test.sh build/engram-mcp   (exits non-zero on any failure)
set -u
BIN=${1:?usage: stdio-test.sh path/to/engram-mcp}
TMP=$(mktemp -d)
fails=0; checks=0
cleanup() { [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*"; }
# has FILE TEXT WHAT: FILE holds TEXT (fixed string)
has() { if grep -qF -- "$2" "$1"; then ok; else bad "$3: expected $2 in:"; sed 's/^/    /' "$1" | cut -c1-300; fi; }
hasnt() { if grep -qF -- "$2" "$1"; then bad "$3: did not expect $2"; else ok; fi; }
# san FILE WHAT: no sanitizer report (ASan, UBSan, LeakSanitizer) in a server's stderr
san() { if grep -qE 'Sanitizer|runtime error:' "$1"; then bad "$2: sanitizer report:"; head -30 "$1"; else ok; fi; }
lines() { n=$(grep -c '' "$1"); if [ "$n" = "$2" ]; then ok; else bad "$3: expected $2 lines, got $n"; sed 's/^/    /' "$1" | cut -c1-300; fi; }

INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"sh","version":"1"}}}'

# ---- stdio: one session with good and bad messages ----
cat > "$TMP/in" <<EOF
$INIT
{"jsonrpc":"2.0","method":"notifications/initialized"}
{"jsonrpc":"2.0","id":2,"method":"ping"}
{"jsonrpc":"2.0","id":3,"method":"tools/list"}
{"jsonrpc":"2.0","id":4, "method":
[{"jsonrpc":"2.0","id":5,"method":"ping"}]
{"foo":1}
"just a string"
{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}
{"jsonrpc":"1.0","id":6,"method":"ping"}
{"jsonrpc":"2.0","id":7,"method":"resources/list"}
{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"no_such_tool","arguments":{}}}
{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"memory_store","arguments":"not an object"}}
{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"memory_store","arguments":{"key":"greeting","value":{"text":"hello from sh"}}}}
{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"memory_retrieve","arguments":{"key":"greeting"}}}
{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"memory_retrieve","arguments":{"nokey":1}}}
{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"memory_search","arguments":{"query":"hello"}}}
{"jsonrpc":"2.0","id":14,"method":"tools/call","params":{"name":"memory_store","arguments":{"key":"x","value":1,"memory_source":"nowhere"}}}
{"jsonrpc":"2.0","id":15,"method":"tools/call"}
{"jsonrpc":"2.0","id":"s16","method":"ping","params":[1]}
{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":99}}
{"jsonrpc":"2.0","id":17,"result":{}}
{"jsonrpc":"2.0","id":"nul","method":"tools/call","params":{"name":"memory_list_sources\u0000x","arguments":{}}}
{"jsonrpc":"2.0","id":"last","method":"ping"}
EOF
printf '{"jsonrpc":"2.0","id":"utf8","method":"tools/call","params":{"name":"memory_store","arguments":{"key":"\377","value":1}}}\n' >> "$TMP/in"
printf '{"jsonrpc":"2.0","id":"a\377","method":"ping"}\n' >> "$TMP/in"
printf '{"jsonrpc":"2.0","id":"crlf","method":"ping"}\r\n\n   \n' >> "$TMP/in"
timeout 20 "$BIN" < "$TMP/in" > "$TMP/out" 2> "$TMP/err"
rc=$?
san "$TMP/err" "stdio run 1"
[ $rc = 0 ] && ok || bad "stdio: exit status $rc at EOF (stderr: $(cat "$TMP/err"))"
o="$TMP/out"
grep -F '"id":1,' "$o" > "$TMP/l1"; has "$TMP/l1" '"result":{"capabilities":{"tools":{}},"serverInfo":{"name":"engram-mcp"' "initialize"
has "$TMP/l1" '"protocolVersion":"2025-11-25"' "initialize: the version"
has "$o" '{"jsonrpc":"2.0","id":2,"result":{}}' "ping"
for t in memory_store memory_retrieve memory_search memory_delete memory_list_keys memory_list_sources; do
  has "$o" "{\"name\":\"$t\"," "tools/list names $t"
done
has "$o" '"inputSchema":{"type":"object"' "tools/list: inputSchema"
has "$o" '{"jsonrpc":"2.0","id":null,"error":{"code":-32700,' "malformed JSON"
has "$o" '{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: JSON-RPC batches' "batch refused"
n=$(grep -c '"id":null,"error":{"code":-32600' "$o"); [ "$n" = 5 ] && ok || bad "non-requests: expected 5 -32600 errors with id null (batch, object, string, object id, an id that is not UTF-8), got $n"
has "$o" '{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"message.id: invalid UTF-8' "an id that is not UTF-8: refused, never echoed (found by fuzz_mcp)"
if LC_ALL=C grep -q "$(printf '\377')" "$o"; then bad "a byte that is not UTF-8 was echoed"; else ok; fi
has "$o" '{"jsonrpc":"2.0","id":6,"error":{"code":-32600,' "jsonrpc 1.0"
has "$o" '{"jsonrpc":"2.0","id":7,"error":{"code":-32601,' "unknown method"
has "$o" '{"jsonrpc":"2.0","id":8,"error":{"code":-32602,"message":"Unknown tool: no_such_tool"}}' "unknown tool"
has "$o" '{"jsonrpc":"2.0","id":9,"error":{"code":-32602,' "arguments not an object"
has "$o" '"id":10,"result":{"content":[{"type":"text","text":"{\"status\":\"stored\",\"key\":\"greeting\"' "memory_store"
has "$o" '"structuredContent":{"status":"stored","key":"greeting"' "memory_store structuredContent"
grep -F '"id":10,' "$o" > "$TMP/l10"; has "$TMP/l10" '"isError":false' "memory_store isError false"
grep -F '"id":11,' "$o" > "$TMP/l11"; has "$TMP/l11" '"structuredContent":{"found":true,"key":"greeting","value":{"text":"hello from sh"}}' "memory_retrieve"
grep -F '"id":12,' "$o" > "$TMP/l12"; has "$TMP/l12" '"isError":true' "memory_retrieve with a bad argument: isError"
has "$TMP/l12" '"structuredContent":{"error":"memory_retrieve:' "memory_retrieve with a bad argument: the error text"
grep -F '"id":13,' "$o" > "$TMP/l13"; has "$TMP/l13" '"found":1' "memory_search finds the item"
has "$TMP/l13" '"key":"greeting"' "memory_search names the key"
grep -F '"id":14,' "$o" > "$TMP/l14"; has "$TMP/l14" '"isError":true' "unknown memory_source: isError"
has "$TMP/l14" 'nowhere' "unknown memory_source: named"
has "$o" '{"jsonrpc":"2.0","id":15,"error":{"code":-32602,' "tools/call without params"
has "$o" '{"jsonrpc":"2.0","id":"s16","error":{"code":-32602,' "params not an object"
has "$o" '{"jsonrpc":"2.0","id":"last","result":{}}' "string id"
has "$o" '{"jsonrpc":"2.0","id":"nul","error":{"code":-32600,' "a NUL escape inside a string is refused (cJSON would cut the tool name)"
has "$o" '{"jsonrpc":"2.0","id":"utf8","error":{"code":-32600,' "bytes that are not UTF-8 are refused"
has "$o" '{"jsonrpc":"2.0","id":"crlf","result":{}}' "CRLF line"
hasnt "$o" '"id":17' "a response from the client gets no answer"
# 24 messages with an id or unreadable; 2 notifications, 1 response and 2 blank lines unanswered
lines "$o" 24 "one answer per request, none for notifications"
n=$(grep -cv '^{"jsonrpc":"2.0","id":' "$o"); [ "$n" = 0 ] && ok || bad "stdout carries $n lines that are not JSON-RPC answers"

# ---- stdio: --tools memory offers (and routes) the six memory tools only ----
printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' \
  '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"memory_thread_list","arguments":{}}}' \
  | timeout 10 "$BIN" --tools memory > "$o" 2> "$TMP/err"
grep -F '"id":1,' "$o" > "$TMP/l1"; has "$TMP/l1" '{"name":"memory_list_sources",' "--tools memory: the memory tools listed"
hasnt "$TMP/l1" 'memory_thread' "--tools memory: no conversation tool listed"
has "$o" '{"jsonrpc":"2.0","id":2,"error":{"code":-32602,"message":"Unknown tool: memory_thread_list"}}' "--tools memory: a conversation tool is unknown"
# (the search is sent once the append has answered: the server runs calls concurrently)
: > "$o"
{
  printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' \
    '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"memory_thread_append","arguments":{"thread":"t1","role":"user","content":"the ferry to Corsica"}}}'
  i=0; while ! grep -qF '"id":2,' "$o" && [ $i -lt 600 ]; do i=$((i + 1)); sleep 0.05; done
  printf '%s\n' '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"memory_thread_search","arguments":{"query":"Corsica"}}}' \
    '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"memory_thread_search","arguments":{"query":"x","limit":0}}}'
} | timeout 40 "$BIN" > "$o" 2> "$TMP/err"
san "$TMP/err" "stdio: thread tools"
grep -F '"id":1,' "$o" > "$TMP/l1"
has "$TMP/l1" '{"name":"memory_thread_append",' "default: the conversation tools are listed"
has "$TMP/l1" '{"name":"memory_thread_search",' "default: memory_thread_search is listed"
n=$(grep -o '"name":"memory_[a-z_]*"' "$TMP/l1" | sort -u | wc -l); [ "$n" = 10 ] && ok || bad "default: $n tools listed, expected 10"
grep -F '"id":3,' "$o" > "$TMP/l3"
has "$TMP/l3" '"isError":false' "memory_thread_search: a result"
has "$TMP/l3" '\"thread\":\"t1\",' "memory_thread_search: the message names its thread"
has "$TMP/l3" '\"content\":\"the ferry to Corsica\"' "memory_thread_search: the message found"
grep -F '"id":4,' "$o" > "$TMP/l4"
has "$TMP/l4" '"isError":true' "memory_thread_search: a bad limit is an error result"
has "$TMP/l4" 'limit' "memory_thread_search: the error names the field"

# ---- stdio: protocol versions ----
printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"1999-01-01","capabilities":{},"clientInfo":{"name":"sh","version":"1"}}}' \
  '{"jsonrpc":"2.0","id":2,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"sh","version":"1"}}}' \
  | timeout 10 "$BIN" > "$o" 2> "$TMP/err"
san "$TMP/err" "stdio run 2"
grep -F '"id":1,' "$o" > "$TMP/l1"; has "$TMP/l1" '"protocolVersion":"2025-11-25"' "unsupported version: answered with the latest"
grep -F '"id":2,' "$o" > "$TMP/l2"; has "$TMP/l2" '"protocolVersion":"2025-06-18"' "older supported version: echoed"

# ---- stdio: the stateless revision 2026-07-28 (no initialize; _meta on every request) ----
M='"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}'
printf '%s\n' "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server/discover\",\"params\":{$M}}" \
  "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\",\"params\":{$M}}" \
  "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"memory_store\",\"arguments\":{\"key\":\"s\",\"value\":1},$M}}" \
  "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/call\",\"params\":{\"name\":\"memory_retrieve\",\"arguments\":{},$M}}" \
  '{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01","io.modelcontextprotocol/clientCapabilities":{}}}}' \
  '{"jsonrpc":"2.0","id":6,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}' \
  '{"jsonrpc":"2.0","id":7,"method":"initialize","params":{"protocolVersion":"2026-07-28","capabilities":{},"clientInfo":{"name":"sh","version":"1"}}}' \
  '{"jsonrpc":"2.0","id":8,"method":"tools/list"}' \
  | timeout 10 "$BIN" > "$o" 2> "$TMP/err"
san "$TMP/err" "stdio 2026-07-28"
has "$o" '"supportedVersions":["2026-07-28","2025-11-25","2025-06-18","2025-03-26","2024-11-05"]' "server/discover: the revisions"
grep -F '"id":1,' "$o" > "$TMP/l1"; has "$TMP/l1" '"capabilities":{"tools":{}},"serverInfo":{"name":"engram-mcp"' "server/discover: capabilities and serverInfo"
has "$TMP/l1" '"resultType":"complete"' "server/discover: resultType"
grep -F '"id":2,' "$o" > "$TMP/l2"; has "$TMP/l2" '"resultType":"complete"' "2026-07-28 tools/list: resultType"
has "$TMP/l2" '{"name":"memory_store",' "2026-07-28 tools/list: the tools"
grep -F '"id":3,' "$o" > "$TMP/l3"; has "$TMP/l3" '"isError":false,"resultType":"complete"}}' "2026-07-28 tools/call"
grep -F '"id":4,' "$o" > "$TMP/l4"; has "$TMP/l4" '"isError":true,"resultType":"complete"}}' "2026-07-28 tools/call with a bad argument"
has "$o" '{"jsonrpc":"2.0","id":5,"error":{"code":-32022,"message":"Unsupported protocol version: 2099-01-01","data":{"supported":["2026-07-28","2025-11-25","2025-06-18","2025-03-26","2024-11-05"],"requested":"2099-01-01"}}}' "unsupported revision in _meta: -32022 with the list"
has "$o" '{"jsonrpc":"2.0","id":6,"error":{"code":-32602,' "2026-07-28 without clientCapabilities"
has "$o" '"id":7,"result":{"capabilities":{"tools":{}}' "initialize asking for 2026-07-28"
grep -F '"id":7,' "$o" > "$TMP/l7"; has "$TMP/l7" '"protocolVersion":"2025-11-25"' "initialize never answers the stateless revision"
grep -F '"id":8,' "$o" > "$TMP/l8"; hasnt "$TMP/l8" 'resultType' "a handshake-revision result has no resultType"

# ---- stdio: a line over --max-body, then a good one ----
{ printf '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"'; head -c 3000 /dev/zero | tr '\0' 'a'; printf '"}}\n'
  printf '{"jsonrpc":"2.0","id":2,"method":"ping"}\n'; } | timeout 10 "$BIN" --max-body 1024 > "$o" 2> "$TMP/err"
san "$TMP/err" "stdio run 3"
has "$o" '{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: a message over 1024 bytes"}}' "line over the limit"
has "$o" '{"jsonrpc":"2.0","id":2,"result":{}}' "served after a line over the limit"
lines "$o" 2 "line over the limit"

# ---- stdio: a message split across reads; stdin closed in the middle of a message ----
{ printf '{"jsonrpc":"2.0",'; sleep 0.3; printf '"id":1,"method":"ping"}\n{"jsonrpc":"2.0","id":2,"meth'; } \
  | timeout 10 "$BIN" > "$o" 2> "$TMP/err"
rc=$?
san "$TMP/err" "stdio run 4"
[ $rc = 0 ] && ok || bad "stdin closed mid-message: exit status $rc"
has "$o" '{"jsonrpc":"2.0","id":1,"result":{}}' "message split across reads"
lines "$o" 1 "the fragment left at EOF is not answered"
has "$TMP/err" "stdin closed inside a message" "the dropped fragment is logged on stderr"

# ---- stdio: calls pending at EOF are answered before the exit; a configuration file ----
printf '{"sources": [{"name": "db", "type": "sqlite", "description": "persistent", "default": true, "options": {"path": "%s/m.db"}}]}\n' "$TMP" > "$TMP/config.json"
i=0; : > "$TMP/in"
while [ $i -lt 200 ]; do
  printf '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"memory_store","arguments":{"key":"k%d","value":%d}}}\n' $i $i $i >> "$TMP/in"
  i=$((i + 1))
done
timeout 20 "$BIN" --config "$TMP/config.json" < "$TMP/in" > "$o" 2> "$TMP/err"
rc=$?
san "$TMP/err" "stdio run 5"
[ $rc = 0 ] && ok || bad "sqlite config: exit status $rc ($(cat "$TMP/err"))"
n=$(grep -c '"isError":false' "$o"); [ "$n" = 200 ] && ok || bad "200 stores pending at EOF: $n answered ok"
printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"memory_retrieve","arguments":{"key":"k199"}}}' \
  | timeout 10 "$BIN" --config "$TMP/config.json" > "$o" 2> "$TMP/err"
san "$TMP/err" "stdio run 6"
has "$o" '"structuredContent":{"found":true,"key":"k199","value":199}' "sqlite: the data outlives the process"
# ---- stdio: notifications/cancelled for a slow call: that call is never answered, the others are ----
# The call is made slow by holding the SQLite file's write lock from the sqlite3 shell until the cancellation
# has been sent and a later ping answered; then the lock is released and the cancelled store completes unseen.
if command -v sqlite3 > /dev/null 2>&1; then
  rm -f "$TMP/release"
  : > "$o"
  waitfor() { i=0; while ! grep -q "$1" "$o" && [ $i -lt 300 ]; do i=$((i + 1)); sleep 0.05; done; }
  {
    echo '{"jsonrpc":"2.0","id":0,"method":"ping"}'
    waitfor '"id":0,' # the server is up (its source opened: that needs the write lock too)
    ( echo 'BEGIN EXCLUSIVE;'; while [ ! -f "$TMP/release" ]; do sleep 0.05; done; echo 'COMMIT;' ) | sqlite3 "$TMP/m.db" &
    i=0; while sqlite3 "$TMP/m.db" 'PRAGMA busy_timeout=0; BEGIN IMMEDIATE; ROLLBACK;' > /dev/null 2>&1 && [ $i -lt 200 ]; do i=$((i + 1)); sleep 0.05; done
    echo '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"memory_store","arguments":{"key":"cancelled","value":1}}}'
    echo '{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"reason":"the user gave up"}}'
    echo '{"jsonrpc":"2.0","id":2,"method":"ping"}'
    waitfor '"id":2,'
    touch "$TMP/release"
    echo '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"memory_retrieve","arguments":{"key":"cancelled"}}}'
    waitfor '"id":3,'
    wait
  } | timeout 30 "$BIN" --config "$TMP/config.json" > "$o" 2> "$TMP/err"
  rc=$?
  touch "$TMP/release"
  [ $rc = 0 ] && ok || bad "cancellation: exit status $rc ($(cat "$TMP/err"))"
  san "$TMP/err" "stdio cancellation"
  hasnt "$o" '"id":1,' "a cancelled call is not answered"
  has "$o" '{"jsonrpc":"2.0","id":2,"result":{}}' "served while a call waits for the lock"
  has "$o" '"structuredContent":{"found":true,"key":"cancelled","value":1}' "the cancelled store still ran (engram calls are not interrupted)"
else
  bad "sqlite3 is missing: the cancellation check did not run (make deps installs it)"
fi
echo '{"sources": [{"name": "x", "type": "nonsense"}]}' > "$TMP/bad.json"
timeout 10 "$BIN" --config "$TMP/bad.json" < /dev/null > "$o" 2> "$TMP/err"
rc=$?
san "$TMP/err" "stdio run 7"
[ $rc != 0 ] && ok || bad "a bad configuration must fail the start"
[ -s "$o" ] && bad "a bad configuration wrote to stdout" || ok
timeout 10 "$BIN" --bogus < /dev/null > /dev/null 2>&1
[ $? = 2 ] && ok || bad "unknown option: exit status 2 expected"

# ---- Streamable HTTP ----
if command -v curl > /dev/null 2>&1; then
  MCP_TEST_TOKEN=sekret "$BIN" --http 127.0.0.1:0 > "$TMP/hout" 2> "$TMP/herr" &
  SPID=$!
  port=""; i=0
  while [ -z "$port" ] && [ $i -lt 100 ]; do
    port=$(sed -n 's|^listening on http://127.0.0.1:\([0-9]*\)/mcp$|\1|p' "$TMP/herr" 2>/dev/null); i=$((i + 1)); sleep 0.05
  done
  [ -n "$port" ] && ok || bad "http: no 'listening on' line on stderr: $(cat "$TMP/herr")"
  U="http://127.0.0.1:$port/mcp"
  # code METHOD EXPECTED_STATUS WHAT [curl args...]: the body lands in $TMP/body
  code() {
    m=$1; want=$2; what=$3; shift 3
    got=$(curl -s -o "$TMP/body" -w '%{http_code}' -X "$m" "$@")
    [ "$got" = "$want" ] && ok || { bad "http $what: status $got, expected $want"; sed 's/^/    /' "$TMP/body" | cut -c1-300; }
  }
  J='Content-Type: application/json'
  code POST 200 "initialize" -H "$J" -d "$INIT" "$U"
  has "$TMP/body" '"protocolVersion":"2025-11-25"' "http initialize"
  code POST 202 "notification" -H "$J" -d '{"jsonrpc":"2.0","method":"notifications/initialized"}' "$U"
  [ -s "$TMP/body" ] && bad "http notification: 202 with a body" || ok
  code GET 405 "GET (no server stream)" "$U"
  code DELETE 405 "DELETE" "$U"
  code POST 404 "another path" -H "$J" -d '{"jsonrpc":"2.0","id":1,"method":"ping"}' "http://127.0.0.1:$port/other"
  code POST 403 "foreign Origin" -H "$J" -H 'Origin: http://evil.example.com' -d '{"jsonrpc":"2.0","id":1,"method":"ping"}' "$U"
  code POST 403 "foreign Host" -H "$J" -H 'Host: evil.example.com' -d '{"jsonrpc":"2.0","id":1,"method":"ping"}' "$U"
  code POST 200 "loopback Origin" -H "$J" -H "Origin: http://localhost:$port" -d '{"jsonrpc":"2.0","id":1,"method":"ping"}' "$U"
  code POST 400 "malformed JSON" -H "$J" -d '{"jsonrpc":' "$U"
  has "$TMP/body" '"code":-32700' "http malformed JSON"
  code POST 400 "batch" -H "$J" -d '[{"jsonrpc":"2.0","id":1,"method":"ping"}]' "$U"
  has "$TMP/body" '"code":-32600' "http batch"
  code POST 200 "unknown method" -H "$J" -d '{"jsonrpc":"2.0","id":3,"method":"nope"}' "$U"
  has "$TMP/body" '"code":-32601' "http unknown method"
  code POST 400 "unsupported MCP-Protocol-Version" -H "$J" -H 'MCP-Protocol-Version: 1999-01-01' -d '{"jsonrpc":"2.0","id":1,"method":"ping"}' "$U"
  has "$TMP/body" '"code":-32022,' "http unsupported MCP-Protocol-Version: -32022"
  has "$TMP/body" '"supported":["2026-07-28",' "http unsupported MCP-Protocol-Version: the list"
  code POST 200 "2026-07-28 server/discover" -H "$J" -H 'MCP-Protocol-Version: 2026-07-28' -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server/discover\",\"params\":{$M}}" "$U"
  has "$TMP/body" '"supportedVersions":["2026-07-28",' "http server/discover"
  head -c 5000000 /dev/zero | tr '\0' 'a' > "$TMP/big"
  code POST 413 "body over the limit" -H "$J" --data-binary @"$TMP/big" "$U"
  code POST 200 "tools/call" -H "$J" -d '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"memory_store","arguments":{"key":"h","value":"v"}}}' "$U"
  has "$TMP/body" '"isError":false' "http tools/call"
  code POST 200 "tools/call, bad arguments" -H "$J" -d '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"memory_store","arguments":{"key":""}}}' "$U"
  has "$TMP/body" '"isError":true' "http tools/call with bad arguments"
  # Expect: 100-continue (curl sends it for bodies over 1 MiB): answered at once, not after the client's timeout
  head -c 1500000 /dev/zero | tr '\0' 'a' > "$TMP/pad"
  printf '{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"memory_store","arguments":{"key":"big","value":"%s"}}}' "$(cat "$TMP/pad")" > "$TMP/bigcall"
  t0=$(date +%s)
  code POST 200 "Expect: 100-continue" -H "$J" -H 'Expect: 100-continue' --expect100-timeout 20 --data-binary @"$TMP/bigcall" "$U"
  [ $(( $(date +%s) - t0 )) -lt 10 ] && ok || bad "http: Expect: 100-continue was not answered (curl waited for its timeout)"
  has "$TMP/body" '"isError":false' "http: a 1.5 MB store"
  # keep-alive: two requests on one connection
  n=$(curl -s -H "$J" -d '{"jsonrpc":"2.0","id":1,"method":"ping"}' "$U" -: -H "$J" -d '{"jsonrpc":"2.0","id":2,"method":"ping"}' "$U" 2>/dev/null | grep -o '"result":{}' | wc -l)
  [ "$n" = 2 ] && ok || bad "http keep-alive: $n of 2 answers"
  kill -TERM $SPID; wait $SPID; rc=$?; SPID=""
  [ $rc = 0 ] && ok || bad "http: exit status $rc after SIGTERM ($(cat "$TMP/herr"))"
  san "$TMP/herr" "http server"
  [ -s "$TMP/hout" ] && bad "http: something was written to stdout" || ok

  # with a token
  MCP_TEST_TOKEN=sekret "$BIN" --http 127.0.0.1:0 --token-env MCP_TEST_TOKEN > "$TMP/hout" 2> "$TMP/herr2" &
  SPID=$!
  port=""; i=0
  while [ -z "$port" ] && [ $i -lt 100 ]; do
    port=$(sed -n 's|^listening on http://127.0.0.1:\([0-9]*\)/mcp$|\1|p' "$TMP/herr2" 2>/dev/null); i=$((i + 1)); sleep 0.05
  done
  U="http://127.0.0.1:$port/mcp"
  code POST 401 "no token" -H "$J" -d '{"jsonrpc":"2.0","id":1,"method":"ping"}' "$U"
  code POST 401 "wrong token" -H "$J" -H 'Authorization: Bearer sekreT' -d '{"jsonrpc":"2.0","id":1,"method":"ping"}' "$U"
  code POST 200 "right token" -H "$J" -H 'Authorization: Bearer sekret' -d '{"jsonrpc":"2.0","id":1,"method":"ping"}' "$U"
  kill -TERM $SPID; wait $SPID; rc=$?; SPID=""
  [ $rc = 0 ] && ok || bad "http with a token: exit status $rc after SIGTERM ($(cat "$TMP/herr2"))"
  san "$TMP/herr2" "http server with a token"
  env -u MCP_TEST_TOKEN timeout 10 "$BIN" --http 127.0.0.1:0 --token-env MCP_TEST_TOKEN > /dev/null 2>&1
  [ $? != 0 ] && ok || bad "--token-env naming an unset variable must fail the start"
else
  bad "curl is missing: the HTTP checks did not run (make deps installs it)"
fi

echo "mcp stdio/http raw test: $checks checks, $fails failed"
[ $fails = 0 ]
