/*
 * redis_script.h — the Lua scripts of the redis source, which make its conditional stores, deletes, index scans
 * and clears atomic on the server (docs/sources-redis.md describes the data layout they maintain). The
 * connection loads them on every connect (SCRIPT LOAD in the handshake); a script's index here is its place in
 * the connection's SHA list. Plain text with no dependency: tests/bench/bench_redis.c sends the same scripts.
 */
#ifndef ENGRAM_REDIS_SCRIPT_H
#define ENGRAM_REDIS_SCRIPT_H

enum { RS_STORE = 0, RS_DELETE, RS_SCAN, RS_CLEAR, RS_STORE_BATCH, RS_UPDATE_WRITES, RS_STORE_ONE, RS_COUNT_ };
extern const char *const engram__redis_scripts[RS_COUNT_];

#endif
