#!/bin/sh
# hostile.sh — puts the server example in front of hostile clients and checks that it answers each one as
# main.c's opening says, stays up for the others, and still stops cleanly. It builds hostile_client.c (the raw
# socket half: stalls, drips, floods, pipelines) with ${CC:-cc}, starts the server on a free loopback port with
# short clocks (--header-timeout 1000 --body-timeout 1000 --idle-timeout 3000 --max-connections 200), then:
#
#   oversized       a 50 MB body → 413 before it is read; a 2 MB chunked body → 413; 100 KB of headers → 431;
#                   a 4 KB path → 414
#   bad bodies      100k-deep nesting, a NUL byte, invalid UTF-8 (four kinds), trailing garbage → 400 each,
#                   the connection kept; trailing whitespace → 200; invalid UTF-8 in the path never echoed
#   lies            Content-Length shorter than the body → 400, then 400 and close for the rest read as a
#                   request; longer, or a chunked body cut off → 400 and close when the body clock runs out;
#                   Content-Length with Transfer-Encoding, two Content-Lengths, a request line that is not
#                   HTTP → 400 and close;
#                   a tool call pipelined behind Connection: close → neither answered nor run
#   clocks          headers stalled, or dripped a byte every 100 ms → 408 and close after 1 s; a silent
#                   connection, and a keep-alive one after its answer → closed after 3 s
#   flood           1,000 idle connections: 200 held, the rest 503 (Connection: close) and closed; GET /tools
#                   from a new client answered while they are open (an idle one evicted for it); all closed by
#                   the idle timeout, none before
#   pipelines       10,000 requests (tool calls and 404s) answered in order; 10,000 more from a client that
#                   does not read its answers (the server stops reading it instead of queueing)
#   afterwards      a store and a retrieve answered; SIGTERM → exit 0 with the manager closed
#   low limit       a second server under `ulimit -n 64` sizes its connection limit from it, keeps serving
#                   beside 100 idle clients, and exits 0 on SIGINT
#
# Every wait is on a condition with a generous deadline (the only durations are the clocks under test, and the
# 500 ms without progress by which the client that does not read decides the server has stopped reading it); any
# unexpected answer fails the script (exit 1), and so does a sanitizer report in the server's output. The flood needs about 1,100 descriptors: the script raises its
# soft limit and skips the flood, saying so, only if it cannot.
#
# Usage: examples/server/hostile.sh [path/to/server]      (run by examples/server/ci.sh)
set -eu
bin="${1:-build/examples/server}"
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/engram-hostile.XXXXXX")
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() {
  echo "hostile: FAIL: $*" >&2
  for f in "$dir"/server*.out; do [ -f "$f" ] && tail -n 20 "$f" | sed 's/^/  server: /' >&2; done
  exit 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
t_start=$(now_ms)

# ---- Setup ----

if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 2048 ]; then
  ulimit -n 2048 2>/dev/null || ulimit -n "$(ulimit -H -n)" 2>/dev/null || true
fi
fds=$(ulimit -n)
${CC:-cc} -O2 -o "$dir/client" "$here/hostile_client.c" || fail "cannot build hostile_client.c with ${CC:-cc}"
client="$dir/client"

# start NAME ARGS...: starts the server (output in $dir/NAME.out), waits for its port; sets pid and port.
start() {
  out="$dir/$1.out"
  shift
  "$@" > "$out" 2>&1 &
  pid=$!
  port=""
  deadline=$(($(now_ms) + 20000))
  while [ -z "$port" ] && [ "$(now_ms)" -lt "$deadline" ]; do
    port=$(sed -n 's/^listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out")
    kill -0 "$pid" 2>/dev/null || fail "the server exited before listening"
    [ -n "$port" ] || sleep 0.05
  done
  [ -n "$port" ] || fail "the server is not listening after 20 s"
}

# stop SIGNAL: the server must exit 0 with its manager closed.
stop() {
  kill -"$1" "$pid"
  status=0
  wait "$pid" || status=$?
  pid=""
  [ "$status" = 0 ] || fail "exit status $status after SIG$1"
  grep -q '^manager closed: ENGRAM_OK' "$out" || fail "no clean manager close after SIG$1"
  ! grep -q 'handles left open' "$out" || fail "handles left open at exit"
  ! grep -Eq 'Sanitizer|runtime error' "$out" || fail "sanitizer report: $(grep -E -m3 'Sanitizer|runtime error' "$out")"
  echo "  ok  SIG$1: exit 0, $(sed -n 's/^signal [0-9]*: stopping (\(.*\))/\1/p' "$out")"
}

# exchange WAIT_MS [N [DRIP_MS]] < request: one connection's answers, in $dir/got (see hostile_client.c).
exchange() {
  "$client" exchange "$port" "$@" > "$dir/got" 2>&1 || echo "client failed" >> "$dir/got"
}

# expect NAME PATTERN...: line k of $dir/got matches extended regex k, and there are no other lines.
expect() {
  name=$1
  shift
  [ "$(wc -l < "$dir/got")" -eq $# ] || fail "$name: expected $# lines, got: $(cat "$dir/got")"
  k=1
  for pattern in "$@"; do
    line=$(sed -n "${k}p" "$dir/got")
    printf '%s\n' "$line" | grep -Eq -- "$pattern" || fail "$name: got \"$(printf '%s' "$line" | cut -c1-200)\", expected /$pattern/"
    k=$((k + 1))
  done
  printf '  ok  %s: %s | %s\n' "$name" "$(head -n 1 "$dir/got" | cut -c1-96)" "$(tail -n 1 "$dir/got")"
}

# after_ms: how long the last exchange lasted; at_least MS: not shorter than that (20 ms allowed for the loop's
# clock, which libuv reads once per iteration).
after_ms() { sed -n 's/^\(open\|closed\) after \([0-9]*\) ms.*/\2/p' "$dir/got"; }
at_least() { [ "$(after_ms)" -ge $(($1 - 20)) ] || fail "$name: over after $(after_ms) ms, before the $1 ms clock"; }

# post BODY [CONTENT_LENGTH]: a POST /tools/call (BODY is a printf format: \000 is a NUL byte).
post() {
  printf "$1" > "$dir/body"
  printf 'POST /tools/call HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n' \
    "${2:-$(wc -c < "$dir/body")}"
  cat "$dir/body"
}

start server "$bin" --port 0 --max-connections 200 --header-timeout 1000 --body-timeout 1000 --idle-timeout 3000
echo "hostile: server on 127.0.0.1:$port — $(sed -n 's/^limits: //p' "$out")"

# ---- Oversized ----

{ printf 'POST /tools/call HTTP/1.1\r\nHost: test\r\nContent-Length: 52428800\r\n\r\n'; head -c 52428800 /dev/zero | tr '\0' a; } |
  exchange 30000
expect "50 MB body → 413" '^response 413 close \{"error":"a body of 52428800 bytes' '^closed after'
{ printf 'POST /tools/call HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n'
  head -c 2097152 /dev/zero | tr '\0' a; printf '\r\n0\r\n\r\n'; } | exchange 30000
expect "2 MB chunked body → 413" '^response 413 close \{"error":"a body over 1048576 bytes' '^closed after'
{ printf 'GET /tools HTTP/1.1\r\nHost: test\r\nX-Big: '; head -c 102400 /dev/zero | tr '\0' a; printf '\r\n\r\n'; } |
  exchange 30000
expect "100 KB of headers → 431" '^response 431 close' '^closed after'
{ printf 'GET /'; head -c 4096 /dev/zero | tr '\0' a; printf ' HTTP/1.1\r\nHost: test\r\n\r\n'; } | exchange 10000
expect "a 4 KB path → 414" '^response 414 close' '^closed after'

# ---- Bodies that are not one JSON value in UTF-8 ----

{ printf 'POST /tools/call HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n'; head -c 100000 /dev/zero | tr '\0' '['; } |
  exchange 10000 1
expect "100k-deep nesting → 400" '^response 400 \{"error":"malformed JSON body near offset' '^open after'
post '{"name":"memory_store","arguments":{"key":"a\000b","value":1}}' | exchange 10000 1
expect "NUL byte → 400" '^response 400 \{"error":"the body holds a NUL byte at offset 44"\}' '^open after'
for bytes in '\377' '\300\257' '\355\240\200' '\342\202'; do # invalid, overlong, surrogate, truncated
  post '{"name":"memory_store","arguments":{"key":"'"$bytes"'","value":1}}' | exchange 10000 1
  expect "invalid UTF-8 $bytes → 400" '^response 400 \{"error":"the body is not UTF-8: invalid byte at offset 43"\}' '^open after'
done
post '{"name":"memory_list_sources"} xyz' | exchange 10000 1
expect "trailing garbage → 400" '^response 400 \{"error":"trailing data after the JSON value, at offset 31"\}' '^open after'
post '{"name":"memory_list_sources"}{"name":"memory_list_sources"}' | exchange 10000 1
expect "two JSON values → 400" '^response 400 \{"error":"trailing data after the JSON value, at offset 30"\}' '^open after'
post '{"name":"memory_list_sources\\u0000x"}' | exchange 10000 1
expect "\\u0000 in the tool name → 400" '^response 400 \{"error":"body.name: ' '^open after'
post '{"name":"memory_store","arguments":{"key":"\\ud800","value":1}}' | exchange 10000 1
expect "a lone surrogate escape → 400" '^response 400 \{"error":"malformed JSON body near offset 43"\}' '^open after'
post '{"name":"memory_list_sources"} \r\n\t' | exchange 10000 1
expect "trailing whitespace → 200" '^response 200 \{"sources":' '^open after'
printf 'GET /\377\376x HTTP/1.1\r\nHost: test\r\n\r\n' | exchange 10000 1
expect "invalid UTF-8 in the path → 404, not echoed" '^response 404 \{"error":"no route GET /\?\?x ' '^open after'

# ---- Lies about the framing ----

post '{"name":"memory_list_sources"}' 10 | exchange 10000
expect "Content-Length shorter than the body" '^response 400 \{"error":"malformed JSON body' '^response 400 close \{"error":"malformed HTTP request' '^closed after'
post '{"name":"memory_list_sources"}' 100 | exchange 10000
expect "Content-Length longer than the body" '^response 400 close \{"error":"request body incomplete after 1000 ms: 30 of 100 bytes"\}' '^closed after'
at_least 1000
printf 'POST /tools/call HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n{"name":' | exchange 10000
expect "a chunked body cut off → 400" '^response 400 close \{"error":"chunked request body incomplete after 1000 ms \(8 bytes\)"\}' '^closed after'
at_least 1000
printf 'POST /tools/call HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' |
  exchange 10000
expect "Content-Length with Transfer-Encoding → 400" '^response 400 close \{"error":"malformed HTTP request' '^closed after'
printf 'POST /tools/call HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\nContent-Length: 30\r\n\r\n{}' |
  exchange 10000
expect "two Content-Lengths → 400" '^response 400 close \{"error":"malformed HTTP request' '^closed after'
printf 'BLAH\r\n\r\n' | exchange 10000
expect "not HTTP → 400" '^response 400 close \{"error":"malformed HTTP request' '^closed after'
{ printf 'GET /tools HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n'
  post '{"name":"memory_store","arguments":{"key":"after:close","value":"ghost"}}'; } | exchange 10000
expect "a request behind Connection: close → not answered" '^response 200 close \[' '^closed after'

# ---- Clocks (side by side: each case's answer in $dir/clock.N, checked once all are over) ----

clock() { # clock N WAIT_MS [N [DRIP_MS]] < request, in the background
  k=$1
  shift
  "$client" exchange "$port" "$@" > "$dir/clock.$k" 2>&1 || echo "client failed" >> "$dir/clock.$k"
}
printf 'POST /tools/call HTTP/1.1\r\nHost: test\r\n' | clock 1 10000 & c1=$!
printf 'GET /tools HTTP/1.1\r\nHost: test\r\nX-Slow: one byte every 100 ms\r\n\r\n' | clock 2 10000 0 100 & c2=$!
clock 3 10000 < /dev/null & c3=$!
printf 'GET /tools HTTP/1.1\r\nHost: test\r\n\r\n' | clock 4 10000 & c4=$!
wait $c1 $c2 $c3 $c4
cp "$dir/clock.1" "$dir/got"
expect "headers stalled → 408" '^response 408 close \{"error":"request headers not complete after 1000 ms"\}' '^closed after'
at_least 1000
cp "$dir/clock.2" "$dir/got"
expect "headers dripped → 408" '^response 408 close' '^closed after [0-9]+ ms, 1?[0-9] of 66 bytes sent'
at_least 1000
cp "$dir/clock.3" "$dir/got"
expect "a silent connection → closed" '^closed after [0-9]+ ms, 0 of 0 bytes sent'
at_least 3000
cp "$dir/clock.4" "$dir/got"
expect "keep-alive after its answer → closed" '^response 200 \[' '^closed after'
at_least 3000

# ---- A thousand idle connections ----

if [ "$fds" != unlimited ] && [ "$fds" -lt 1200 ]; then
  echo "  SKIP 1,000 idle connections: the open-file limit is $fds and cannot be raised to 1,200 (ulimit -n)"
else
  "$client" idle "$port" 1000 200 3000 > "$dir/got" 2> "$dir/err" || fail "1,000 idle connections: $(cat "$dir/err")"
  sed 's/^/  ok  /' "$dir/got"
fi

# ---- Pipelines ----

for mode in mixed unread; do
  "$client" pipeline "$port" 10000 $mode > "$dir/got" 2> "$dir/err" || fail "pipeline $mode: $(cat "$dir/err")"
  sed 's/^/  ok  /' "$dir/got"
done

# ---- Still serving ----

call() { curl -s --max-time 10 -o "$dir/got" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$1" "http://127.0.0.1:$port/tools/call"; }
code=$(call '{"name":"memory_store","arguments":{"key":"after:all","value":"still here"}}') || true
[ "$code" = 200 ] && grep -q '"status":"stored"' "$dir/got" || fail "memory_store afterwards: HTTP $code $(cat "$dir/got")"
code=$(call '{"name":"memory_retrieve","arguments":{"key":"after:all"}}') || true
[ "$code" = 200 ] && grep -q '"still here"' "$dir/got" || fail "memory_retrieve afterwards: HTTP $code $(cat "$dir/got")"
code=$(call '{"name":"memory_retrieve","arguments":{"key":"after:close"}}') || true
[ "$code" = 200 ] && grep -q '"found":false' "$dir/got" || fail "the request behind Connection: close ran: $(cat "$dir/got")"
echo "  ok  afterwards: memory_store and memory_retrieve answered 200; the store behind Connection: close never ran"
[ -r "/proc/$pid/status" ] && echo "  peak memory of the server: $(sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$pid/status")"
stop TERM

# ---- A low open-file limit ----

start server-low sh -c 'ulimit -n 64 && exec "$0" --port 0 --idle-timeout 2000' "$bin"
limit=$(sed -n 's/^limits: \([0-9]*\) connections.*/\1/p' "$out")
echo "hostile: under ulimit -n 64 — $(sed -n 's/^limits: //p' "$out")"
[ -n "$limit" ] && [ "$limit" -lt 64 ] || fail "under ulimit -n 64 the connection limit is '$limit'"
"$client" idle "$port" 100 "$limit" 2000 > "$dir/got" 2> "$dir/err" || fail "100 idle connections under ulimit -n 64: $(cat "$dir/err")"
sed 's/^/  ok  /' "$dir/got"
stop INT

echo "hostile: ok in $(($(now_ms) - t_start)) ms"
