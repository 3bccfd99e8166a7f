#!/bin/sh
# tests/cli/cli-test.sh — drives the `engram` command (tools/cli/, docs/cli.md) as a subprocess, one process per
# call, against a cache (the default: nothing outlives a process), SQLite files (what one process writes, the next
# one reads) and a redis-server of its own (two processes share it; a round trip through it): every subcommand's
# output in tables and in --json, the documented exit codes (0 ok, 1 not found, 2 usage, 3 configuration,
# 4 operation failed, 5 bad data or file), --help on every subcommand, export and import with round trips that
# give byte-identical files, a corrupt line (stop, skip, validate first), an unwritable export path (nothing
# created), a progress bar when asked for, and search --mode / --alpha against a vector source (good and bad
# values, a cache refusing vector ranking). With an ASan build of the command
# any sanitizer report in its stderr fails the test.
# Usage: tests/cli/cli-test.sh build/engram   (exits non-zero on any failure)
set -u
BIN=${1:?usage: cli-test.sh path/to/engram}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0; checks=0
ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*"; }

# run EXPECTED_RC ARGS...: runs the command with stdout in $TMP/out and stderr in $TMP/err; checks the exit code
# and that stderr holds no sanitizer report.
run() {
  want=$1; shift
  "$BIN" "$@" > "$TMP/out" 2> "$TMP/err" < "${STDIN:-/dev/null}"
  rc=$?
  if [ "$rc" = "$want" ]; then ok; else bad "engram $*: exit $rc, expected $want"; sed 's/^/    /' "$TMP/out" "$TMP/err" | head -20; fi
  if grep -qE 'Sanitizer|runtime error:' "$TMP/err"; then bad "engram $*: sanitizer report"; head -30 "$TMP/err"; fi
}
# has FILE TEXT WHAT: FILE holds TEXT (a fixed string)
has() { if grep -qF -- "$2" "$1"; then ok; else bad "$3: expected '$2' in:"; sed 's/^/    /' "$1" | head -20; fi; }
hasnt() { if grep -qF -- "$2" "$1"; then bad "$3: did not expect '$2'"; else ok; fi; }
same() { if cmp -s "$1" "$2"; then ok; else bad "$3: $1 and $2 differ"; diff "$1" "$2" | head -10; fi; }
lines() { n=$(grep -c '' "$1"); if [ "$n" = "$2" ]; then ok; else bad "$3: expected $2 lines, got $n"; head -20 "$1"; fi; }

DB="$TMP/db.sqlite"
cat > "$TMP/cfg.json" <<EOF
{"sources": [{"name": "db", "type": "sqlite", "default": true, "description": "persistent memory",
              "options": {"path": "$DB"}},
             {"name": "scratch", "type": "cache", "description": "temporary"}]}
EOF
C="--config $TMP/cfg.json"

# ---- help and usage ----
run 0 --help; has "$TMP/out" "Exit codes" "--help"
for c in get put delete search list count clear namespaces info sources export import watch; do
  run 0 "$c" --help; has "$TMP/out" "usage: engram [options] $c" "$c --help"
done
run 2; has "$TMP/out" "usage:" "no command"
run 2 frobnicate; has "$TMP/err" "unknown command" "unknown command"
run 2 get; has "$TMP/err" "at least 1 argument" "get without a key"
run 2 get a b; has "$TMP/err" "at most 1 argument" "get with two keys"
run 2 put k v --bogus; has "$TMP/err" "--bogus" "unknown option"
run 2 get k --ttl-ms 5; has "$TMP/err" "does not apply" "an option of another command"
run 2 put k v --ttl-ms -5; has "$TMP/err" "--ttl-ms" "a negative TTL"
run 2 put k v --metadata '[1]'; has "$TMP/err" "JSON object" "metadata not an object"
run 2 search --filter '{bad'; has "$TMP/err" "not valid JSON" "a filter that is not JSON"
run 4 watch; has "$TMP/err" "ENGRAM_ENOTSUP" "watch on a cache (no invalidation channel)"

# ---- configuration errors ----
run 3 --config "$TMP/missing.json" sources; has "$TMP/err" "missing.json" "missing config"
echo '{"sources": [{"name": "x", "type": "nope"}]}' > "$TMP/badcfg.json"
run 3 --config "$TMP/badcfg.json" sources; has "$TMP/err" "nope" "unknown source type"

# ---- the cache (no config): one process, nothing kept ----
run 0 put k1 '{"a":1}'; has "$TMP/out" "stored k1 (version 1)" "cache put"
run 1 get k1; has "$TMP/err" "ENGRAM_ENOTFOUND" "cache: the next process has nothing"
run 0 sources --json; has "$TMP/out" '"type":"cache"' "default source is a cache"

# ---- SQLite: what one process writes, the next reads ----
run 0 $C put alpha '{"text":"the quick brown fox","n":1}' --metadata '{"tag":"animal"}' --ttl-ms 3600000
has "$TMP/out" "stored alpha (version 1)" "sqlite put"
run 0 $C put alpha '{"text":"the quick brown fox","n":2}' --metadata '{"tag":"animal"}' --ttl-ms 3600000
has "$TMP/out" "version 2" "second put bumps the version"
run 0 $C put beta 'just some words'
run 0 $C put gamma 42 --ns other
run 0 $C put --string delta 42
STDIN="$TMP/value.json"; echo '{"from":"stdin"}' > "$STDIN"; run 0 $C put eps -; unset STDIN
run 0 $C get alpha; has "$TMP/out" '{"text":"the quick brown fox","n":2}' "get: value"
has "$TMP/out" '{"tag":"animal"}' "get: metadata"; has "$TMP/out" "version   2" "get: version row aligned"
run 0 $C put exact '[0.30000000000000004,8888888888888888888888888888888888882]' --ns numbers
run 0 $C get exact --ns numbers; has "$TMP/out" '[0.30000000000000004,8.8888888888888894e+36]' "get: numbers exact (cJSON alone prints 0.3)"
run 0 $C delete exact --ns numbers
run 0 $C get alpha --json
has "$TMP/out" '{"key":"alpha","ns":"","value":{"text":"the quick brown fox","n":2},"metadata":{"tag":"animal"},"created_at_ms":' "get --json"
run 0 $C get beta --json; has "$TMP/out" '"value":"just some words"' "text that is not JSON is a string"
run 0 $C get delta --json; has "$TMP/out" '"value":"42"' "--string"
run 0 $C get eps --json; has "$TMP/out" '"value":{"from":"stdin"}' "put - reads stdin"
run 1 $C get gamma; has "$TMP/err" "ENGRAM_ENOTFOUND" "another namespace"
run 0 $C get gamma --ns other --json; has "$TMP/out" '"value":42' "--ns"
run 4 $C put alpha 1 --create-only; has "$TMP/err" "ENGRAM_EEXIST" "--create-only"
run 4 $C put alpha 1 --if-version 7; has "$TMP/err" "ENGRAM_ECONFLICT" "--if-version"
run 0 $C list; lines "$TMP/out" 5 "list: header + 4 keys"; has "$TMP/out" "KEY" "list header"
run 0 $C list --json; has "$TMP/out" '{"keys":["alpha","beta","delta","eps"],"cursor":null}' "list --json"
run 0 $C list --limit 2 --json; has "$TMP/out" '"keys":["alpha","beta"]' "list --limit"
has "$TMP/out" '"cursor":"0:beta"' "list --limit gives the cursor"
run 0 $C list --cursor 0:beta --json; has "$TMP/out" '"keys":["delta","eps"]' "list --cursor"
run 0 $C list 'a*' --json; has "$TMP/out" '"keys":["alpha"]' "list PATTERN"
run 0 $C count; has "$TMP/out" "4" "count"
run 0 $C count --json --ns other; has "$TMP/out" '{"count":1}' "count --ns --json"
run 0 $C count --filter '{"tag":"animal"}' --json; has "$TMP/out" '{"count":1}' "count --filter"
run 0 $C search fox; has "$TMP/out" "SCORE" "search header"; has "$TMP/out" "alpha" "search finds alpha"
run 0 $C search words --json; has "$TMP/out" '"key":"beta"' "search --json"; has "$TMP/out" '"score":' "search score"
run 0 $C search --pattern 'e*' --json; has "$TMP/out" '"key":"eps"' "search --pattern"
run 0 $C info; has "$TMP/out" "sqlite" "info table"
run 0 $C info --json; has "$TMP/out" '"type":"sqlite"' "info --json"
run 0 $C --source scratch info --json; has "$TMP/out" '"type":"cache"' "--source"
run 4 $C --source nope info; has "$TMP/err" "ENGRAM_EUNKNOWN_SOURCE" "unknown source"
run 0 $C sources; has "$TMP/out" "NAME" "sources header"; has "$TMP/out" "persistent memory" "sources description"

# ---- namespace prefixes: user/1 and everything below it, never user/10; the namespaces themselves ----
run 0 $C put n1 1 --ns user/1
run 0 $C put n2 2 --ns user/1/notes
run 0 $C put n3 3 --ns user/10
run 0 $C namespaces --json; has "$TMP/out" '{"namespaces":["","other","user/1","user/1/notes","user/10"],"cursor":null}' "namespaces"
run 0 $C namespaces; has "$TMP/out" "NAMESPACE" "namespaces header"; has "$TMP/out" "user/1/notes" "namespaces table"
run 0 $C namespaces user/1 --json; has "$TMP/out" '"namespaces":["user/1","user/1/notes"]' "namespaces PREFIX"
run 0 $C namespaces --depth 1 --json; has "$TMP/out" '"namespaces":["","other","user"]' "namespaces --depth"
run 0 $C namespaces --limit 2 --json; has "$TMP/out" '{"namespaces":["","other"],"cursor":"n:other"}' "namespaces --limit"
run 0 $C namespaces --cursor n:other --json; has "$TMP/out" '"namespaces":["user/1","user/1/notes","user/10"]' "namespaces --cursor"
run 0 $C count --ns user/1 --prefix --json; has "$TMP/out" '{"count":2}' "count --prefix"
run 0 $C list --ns user/1 --prefix --json
has "$TMP/out" '{"keys":[{"ns":"user/1","key":"n1"},{"ns":"user/1/notes","key":"n2"}],"cursor":null}' "list --prefix"
run 4 $C count fox --ns user/1 --prefix; has "$TMP/err" "query.text" "count --prefix with text"
run 2 $C clear; has "$TMP/err" "name a namespace" "clear without a namespace"
run 2 $C clear --all --ns x; has "$TMP/err" "--all" "clear --all with --ns"
run 0 $C clear --ns user/1 --prefix --json; has "$TMP/out" '{"cleared":2}' "clear --prefix"
run 0 $C namespaces --json; has "$TMP/out" '"namespaces":["","other","user/10"]' "clear --prefix left user/10"
run 0 $C clear --ns user/10; has "$TMP/out" "1" "clear --ns"

# ---- search modes: a vector source (its SQLite file carries the items from process to process) ----
cat > "$TMP/cfgv.json" <<EOF
{"sources": [{"name": "mem", "type": "vector", "default": true,
              "options": {"dimension": 64, "path": "$TMP/vec.sqlite"}},
             {"name": "plain", "type": "cache"}]}
EOF
V="--config $TMP/cfgv.json"
run 0 $V put cat '"the cat sat on the mat"'
run 0 $V put dog '"dogs chase the cat"'
run 0 $V put rain '"rain on the roof"'
run 0 $V search 'cat mat' --mode text --json; has "$TMP/out" '"key":"cat"' "--mode text"
hasnt "$TMP/out" '"key":"rain"' "--mode text: no shared word"
run 0 $V search 'cat mat' --mode vector --json; has "$TMP/out" '"key":"cat"' "--mode vector"
run 0 $V search 'cat mat' --mode hybrid --json; has "$TMP/out" '"key":"cat"' "--mode hybrid"
has "$TMP/out" '"key":"dog"' "--mode hybrid: both"
run 0 $V search 'cat mat' --mode=hybrid --alpha 1 --json; cp "$TMP/out" "$TMP/a1.json"
run 0 $V search 'cat mat' --mode=hybrid --alpha=0 --json
if cmp -s "$TMP/out" "$TMP/a1.json"; then bad "--alpha 0 and --alpha 1 gave the same scores"; else ok; fi
run 0 $V search 'cat mat' --mode hybrid --alpha 0.5; has "$TMP/out" "SCORE" "--alpha table"
run 2 $V search cat --mode semantic
has "$TMP/err" "--mode: 'semantic' is not a mode (text, vector or hybrid)" "a bad --mode"
run 2 $V search cat --mode hybrid --alpha 1.5; has "$TMP/err" "--alpha: '1.5' is not a number in [0, 1]" "--alpha out of range"
run 2 $V search cat --mode hybrid --alpha x; has "$TMP/err" "--alpha: 'x'" "--alpha not a number"
run 2 $V search cat --mode hybrid --alpha ''; has "$TMP/err" "--alpha" "--alpha empty"
run 2 $V search cat --alpha 0.5; has "$TMP/err" "--mode hybrid only" "--alpha without --mode hybrid"
run 2 $V search --mode hybrid; has "$TMP/err" "needs TEXT" "--mode hybrid without text"
run 2 $V count cat --mode text; has "$TMP/err" "does not apply" "--mode on count"
run 4 $V --source plain search cat --mode vector; has "$TMP/err" "ENGRAM_ENOTSUP" "--mode vector on a cache"
has "$TMP/err" "query.mode" "ENOTSUP names the field"
run 4 $V search '!!' --mode hybrid; has "$TMP/err" "ENGRAM_EINVAL" "hybrid text without words"

# ---- export and import ----
run 0 $C export "$TMP/a.jsonl"; has "$TMP/out" "exported 5 items" "export to a file"
lines "$TMP/a.jsonl" 5 "export: 5 lines"
has "$TMP/a.jsonl" '{"key":"gamma","ns":"other","value":42,"metadata":null,' "export: every namespace"
run 0 $C export; lines "$TMP/out" 5 "export to stdout"; same "$TMP/out" "$TMP/a.jsonl" "stdout and file"
run 0 $C export --ns other; lines "$TMP/out" 1 "export --ns"
run 0 $C export --pattern 'a*'; lines "$TMP/out" 1 "export --pattern"
# into a second SQLite file and back out: byte-identical (versions and timestamps kept)
cat > "$TMP/cfg2.json" <<EOF
{"sources": [{"name": "db2", "type": "sqlite", "options": {"path": "$TMP/db2.sqlite"}}]}
EOF
run 0 --config "$TMP/cfg2.json" import "$TMP/a.jsonl"; has "$TMP/out" "imported 5 items from 5 lines" "import"
run 0 --config "$TMP/cfg2.json" export "$TMP/b.jsonl"; same "$TMP/a.jsonl" "$TMP/b.jsonl" "round trip through SQLite"
run 0 --config "$TMP/cfg2.json" get alpha --json; has "$TMP/out" '"version":2' "import keeps the version"
STDIN="$TMP/a.jsonl"; run 0 --config "$TMP/cfg2.json" import --fresh --json; unset STDIN
has "$TMP/out" '"items":5' "import --fresh from stdin"
run 0 --config "$TMP/cfg2.json" get alpha --json; has "$TMP/out" '"version":3' "fresh writes count on"
# progress line on request
run 0 $C export "$TMP/c.jsonl" --progress; has "$TMP/err" "exported 5 items" "export --progress"
run 0 --config "$TMP/cfg2.json" import "$TMP/a.jsonl" --progress; has "$TMP/err" "[####################] 100%" "import --progress"
# a corrupt line: stop (items before it kept), validate first (nothing written), skip
printf '{"key":"x1","value":1}\n{"key":"x2","value":\n{"key":"x3","value":3}\n' > "$TMP/bad.jsonl"
cat > "$TMP/cfg3.json" <<EOF
{"sources": [{"name": "db3", "type": "sqlite", "options": {"path": "$TMP/db3.sqlite"}}]}
EOF
run 5 --config "$TMP/cfg3.json" import "$TMP/bad.jsonl" --validate-first; has "$TMP/err" "line 2" "validate-first names the line"
run 0 --config "$TMP/cfg3.json" count; has "$TMP/out" "0" "validate-first wrote nothing"
run 5 --config "$TMP/cfg3.json" import "$TMP/bad.jsonl"; has "$TMP/err" "line 2" "stop names the line"
run 0 --config "$TMP/cfg3.json" count; has "$TMP/out" "1" "stop kept the line before"
run 0 --config "$TMP/cfg3.json" import "$TMP/bad.jsonl" --skip-bad --json; has "$TMP/out" '"items":2' "skip-bad"
has "$TMP/out" '"bad_line":2' "skip-bad reports the line"
run 2 --config "$TMP/cfg3.json" import "$TMP/bad.jsonl" --skip-bad --validate-first
run 5 --config "$TMP/cfg3.json" import "$TMP/nope.jsonl"; has "$TMP/err" "nope.jsonl" "import of a missing file"
# an unwritable path: a clear error, nothing created
run 5 $C export "$TMP/no-such-dir/x.jsonl"; has "$TMP/err" "no-such-dir" "unwritable export path"
if [ -e "$TMP/no-such-dir" ]; then bad "an export path was created"; else ok; fi
if ls "$TMP"/*.tmp.* >/dev/null 2>&1; then bad "a temporary export file was left behind"; else ok; fi

# ---- Redis (a server of its own on a free port): two processes share it; a round trip SQLite -> Redis -> file ----
if command -v redis-server >/dev/null 2>&1; then
  RPID=""
  for try in 1 2 3 4 5; do
    RPORT=$(( 20000 + ( $$ * 7 + try * 977 ) % 40000 ))
    redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" > "$TMP/redis.log" 2>&1 &
    RPID=$!
    n=0
    while [ $n -lt 200 ] && ! redis-cli -p "$RPORT" ping >/dev/null 2>&1; do
      kill -0 "$RPID" 2>/dev/null || break
      sleep 0.05; n=$((n + 1))
    done
    redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break
    kill "$RPID" 2>/dev/null; wait "$RPID" 2>/dev/null; RPID=""
  done
  if [ -z "$RPID" ]; then bad "could not start redis-server"; else
    trap 'kill "$RPID" 2>/dev/null; rm -rf "$TMP"' EXIT
    printf '{"sources": [{"name": "r", "type": "redis", "options": {"url": "redis://127.0.0.1:%s", "prefix": "clitest:"}}]}\n' \
      "$RPORT" > "$TMP/cfgr.json"
    run 0 --config "$TMP/cfgr.json" put shared '{"x":1}' --metadata '{"m":true}'
    run 0 --config "$TMP/cfgr.json" get shared --json
    has "$TMP/out" '"value":{"x":1},"metadata":{"m":true}' "redis: put then get in two processes"
    run 0 --config "$TMP/cfgr.json" delete shared
    run 0 --config "$TMP/cfgr.json" import "$TMP/a.jsonl"; has "$TMP/out" "imported 5 items" "redis import"
    run 0 --config "$TMP/cfgr.json" export "$TMP/r.jsonl"; same "$TMP/a.jsonl" "$TMP/r.jsonl" "round trip through Redis"
    run 0 --config "$TMP/cfgr.json" info --json; has "$TMP/out" '"type":"redis"' "redis info"
    # watch: one process prints what others write (the source's invalidation channel), until --limit or SIGINT
    "$BIN" --config "$TMP/cfgr.json" watch --json --limit 2 > "$TMP/watch.out" 2> "$TMP/watch.err" &
    WPID=$!
    n=0; while [ $n -lt 600 ] && ! grep -q '"kind":"live"' "$TMP/watch.out" 2>/dev/null; do sleep 0.05; n=$((n + 1)); done
    has "$TMP/watch.out" '"kind":"live","source":"r"' "watch: the channel is live"
    run 0 --config "$TMP/cfgr.json" put w1 '"x"' --ns team
    run 0 --config "$TMP/cfgr.json" delete w1 --ns team
    n=0; while [ $n -lt 600 ] && kill -0 "$WPID" 2>/dev/null; do sleep 0.05; n=$((n + 1)); done
    kill "$WPID" 2>/dev/null; wait "$WPID"; wrc=$?
    if [ "$wrc" = 0 ]; then ok; else bad "watch --limit 2: exit $wrc"; cat "$TMP/watch.err"; fi
    has "$TMP/watch.out" '"kind":"changed","source":"r","ns":"team","key":"w1"' "watch: another process's write"
    lines "$TMP/watch.out" 3 "watch --limit 2: live + 2 changes"
    "$BIN" --config "$TMP/cfgr.json" watch > "$TMP/watch2.out" 2> "$TMP/watch2.err" &
    WPID=$!
    n=0; while [ $n -lt 600 ] && ! grep -q '^live' "$TMP/watch2.out" 2>/dev/null; do sleep 0.05; n=$((n + 1)); done
    kill -INT "$WPID"; wait "$WPID"; wrc=$?
    if [ "$wrc" = 0 ]; then ok; else bad "watch interrupted: exit $wrc"; cat "$TMP/watch2.err"; fi
    has "$TMP/watch2.out" "live" "watch: table output"
    if grep -qE 'Sanitizer|runtime error:' "$TMP/watch.err" "$TMP/watch2.err"; then bad "watch: sanitizer report"; else ok; fi
    kill "$RPID" 2>/dev/null; wait "$RPID" 2>/dev/null
    # the server gone: the source cannot open, which is a configuration failure (exit 3) naming the cause
    run 3 --config "$TMP/cfgr.json" get shared; has "$TMP/err" "ENGRAM_EUNAVAILABLE" "redis down: exit 3"
  fi
fi

# ---- delete ----
run 0 $C delete alpha beta nothing; has "$TMP/out" "deleted 2" "delete many"
run 0 $C delete gamma --ns other --json; has "$TMP/out" '{"deleted":1}' "delete --json"
run 1 $C get alpha

echo "cli-test: $checks checks, $fails failed"
[ "$fails" = 0 ]
