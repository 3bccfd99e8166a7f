/*
 * redis_script.c — the text of the redis source's Lua scripts (see redis_script.h): the one-item store (update's
 * conditional store), the batch store (every store of a loop turn, redis_store.c), an update with the writes
 * that ride on it (redis_update.c), delete, the index scan of
 * list_keys and search, and clear; each script that changes a namespace's items bumps its generation key, which
 * the cached text indexes of redis_search.c are checked against. Keys and arguments are described above each
 * script. redis_cmd.c formats the keys and the EVALSHA (or EVAL) header; the calls are made by redis_item.c
 * (store, delete), redis_store.c (batch store) and redis_scan.c (scan, clear).
 */
#include "redis_script.h"

/* Every script that changes a namespace's items bumps its generation key (P "g:" len ":" ns) once per call:
 * INCR, or — when the key is new (INCR answers 1) or holds something INCR refuses — a fresh start from the
 * server's clock in microseconds, so that a generation deleted and recreated (FLUSHDB) does not count up to a
 * value seen before (it would take a million bumps a second to catch up with the clock). redis_search.c compares
 * it to the generation its cached text index was built at. bump returns the new generation as decimal text: the
 * scripts that write items bump before writing and store it in each item written as its `stamp` — a value no
 * earlier call that wrote the namespace had, so a key deleted and written again (its version back at 1) never
 * holds the version and stamp an update read before the delete (redis_update.c). */
#define BUMP_LUA                                                                                                  \
  "local function bump(g)\n"                                                                                      \
  "  local v = redis.pcall('INCR', g)\n"                                                                          \
  "  if type(v) ~= 'number' or v == 1 then\n"                                                                     \
  "    local t = redis.call('TIME')\n"                                                                            \
  "    v = t[1] .. string.format('%06d', tonumber(t[2]))\n"                                                       \
  "    redis.pcall('SET', g, v)\n"                                                                                \
  "    return v\n"                                                                                                \
  "  end\n"                                                                                                       \
  "  return string.format('%d', v)\n"                                                                             \
  "end\n"

/* store (one item; update's conditional store): KEYS item, index, namespaces, generation; ARGV
 * create_only("0"/"1"), cond ("0" = none; version ":" stamp, the stamp empty for an item without one; or the
 * version alone), now, expires("0" = never), value, metadata("" = none), key, ns. Returns {version, created,
 * stamp}, {-1} exists, {-2} the item is not the one named (another version, or another stamp: written again,
 * or deleted and written again). */
static const char store_lua[] =
    BUMP_LUA
    "local cur = redis.call('HMGET', KEYS[1], 'version', 'created', 'stamp')\n"
    "local v = cur[1]\n"
    "if ARGV[1] == '1' and v then return {-1} end\n"
    "if ARGV[2] ~= '0' and v ~= ARGV[2] and (not v or v .. ':' .. (cur[3] or '') ~= ARGV[2]) then return {-2} end\n"
    "local st = bump(KEYS[4])\n"
    "local created = ARGV[3]\n"
    "local nv = 1\n"
    "if v then\n"
    "  nv = (tonumber(v) or 0) + 1\n"
    "  if cur[2] then created = cur[2] end\n"
    "end\n"
    "if ARGV[6] ~= '' then\n"
    "  redis.call('HSET', KEYS[1], 'value', ARGV[5], 'metadata', ARGV[6], 'created', created, 'updated', ARGV[3],"
    " 'version', nv, 'expires', ARGV[4], 'stamp', st)\n"
    "else\n"
    "  redis.call('HSET', KEYS[1], 'value', ARGV[5], 'created', created, 'updated', ARGV[3], 'version', nv,"
    " 'expires', ARGV[4], 'stamp', st)\n"
    "  if v then redis.call('HDEL', KEYS[1], 'metadata') end\n"
    "end\n"
    "if ARGV[4] ~= '0' then redis.call('PEXPIREAT', KEYS[1], ARGV[4])\n"
    "elseif v then redis.call('PERSIST', KEYS[1]) end\n"
    "if not v then\n"
    "  redis.call('ZADD', KEYS[2], 0, ARGV[7])\n"
    "  redis.call('SADD', KEYS[3], ARGV[8])\n"
    "end\n"
    "return {nv, created, st}\n";

/* The stores of a batch (store_batch and update_writes below), with the batch layout:
 *   KEYS: namespaces set, the n item hashes, the index of each of the m namespaces the batch touches, then
 *         the generation key of each.
 *   ARGV: n, then 7 per item: cond ("0" = none; "c" create-only, then the if_version digits if any, or those
 *         digits ":" the stamp read — update_writes' head; or "r" then version ":" created: a replica, written
 *         with that version and created time, now being its updated time), now, expires ("0" = never), value,
 *         metadata ("" = none), key, namespace slot (0..m-1); then the m names.
 * store_items(n, m, strict) runs the items in order, each with the store script's semantics (a later item sees an
 * earlier one's write); strict stops at the first item not written (a condition failed or a command failed),
 * leaving the rest out. Each namespace's generation is bumped before its first item is written, and every item
 * written in it gets that generation as its stamp (items of one call share it: an update reads an item between
 * calls, never inside one). Returns a flat array of 2 per item run: version and created, or -1 (exists) / -2
 * (version or stamp differs) and 0, or an error reply and 0 when a command failed for that item alone (a hash of
 * the wrong type, out of memory); and the stamps by namespace slot (the slots bumped).
 * Reads metadata and expires along with version so that HDEL and PERSIST run only when there is something to
 * remove; the index and the namespace set get one ZADD and one SADD per namespace for the new items. Numbers
 * handed to redis.pcall are strings ('1', string.format('%d')): Lua would print them with "%.14g". */
#define STORE_ITEMS_LUA                                                                                           \
    "local function store_items(n, m, strict)\n"                                                                  \
    "local out, zadd, fresh, stamps = {}, {}, {}, {}\n"                                                           \
    "local a = 2\n"                                                                                               \
    "for i = 1, n do\n"                                                                                           \
    "  local k = KEYS[i + 1]\n"                                                                                   \
    "  local cur = redis.pcall('HMGET', k, 'version', 'created', 'metadata', 'expires')\n"                        \
    "  local nv, created = 0, 0\n"                                                                                \
    "  if cur.err then\n"                                                                                         \
    "    nv = cur\n"                                                                                              \
    "  else\n"                                                                                                    \
    "    local v, c = cur[1], ARGV[a]\n"                                                                          \
    "    local rep, repc\n"                                                                                       \
    "    if string.byte(c) == 114 then\n"                                                                         \
    "      local p = string.find(c, ':', 2, true)\n"                                                              \
    "      rep, repc, c = string.sub(c, 2, p - 1), string.sub(c, p + 1), '0'\n"                                   \
    "    end\n"                                                                                                   \
    "    if c ~= '0' then\n"                                                                                      \
    "      if string.byte(c) == 99 then\n"                                                                        \
    "        if v then nv = -1 end\n"                                                                             \
    "        c = string.sub(c, 2)\n"                                                                              \
    "      end\n"                                                                                                 \
    "      if nv == 0 and c ~= '' and v ~= c and (not v or not string.find(c, ':', 1, true) or"                   \
    "          v .. ':' .. (redis.call('HGET', k, 'stamp') or '') ~= c) then nv = -2 end\n"                      \
    "    end\n"                                                                                                   \
    "    if nv == 0 then\n"                                                                                       \
    "      local now, exp, meta = ARGV[a + 1], ARGV[a + 2], ARGV[a + 4]\n"                                        \
    "      local nvs = '1'\n"                                                                                     \
    "      created, nv = now, 1\n"                                                                                \
    "      if v then\n"                                                                                           \
    "        nv = (tonumber(v) or 0) + 1\n"                                                                       \
    "        nvs = string.format('%d', nv)\n"                                                                     \
    "        if cur[2] then created = cur[2] end\n"                                                               \
    "      end\n"                                                                                                 \
    "      if rep then nv, nvs, created = tonumber(rep), rep, repc end\n"                                         \
    "      local s = ARGV[a + 6]\n"                                                                               \
    "      local st = stamps[s]\n"                                                                                \
    "      if not st then\n"                                                                                      \
    "        st = bump(KEYS[n + 2 + m + tonumber(s)])\n"                                                          \
    "        stamps[s] = st\n"                                                                                    \
    "      end\n"                                                                                                 \
    "      local e\n"                                                                                             \
    "      if meta ~= '' then\n"                                                                                  \
    "        e = redis.pcall('HSET', k, 'value', ARGV[a + 3], 'metadata', meta, 'created', created, 'updated', now,"\
    " 'version', nvs, 'expires', exp, 'stamp', st)\n"                                                             \
    "      else\n"                                                                                                \
    "        e = redis.pcall('HSET', k, 'value', ARGV[a + 3], 'created', created, 'updated', now, 'version', nvs,"  \
    " 'expires', exp, 'stamp', st)\n"                                                                             \
    "        if cur[3] and type(e) ~= 'table' then redis.call('HDEL', k, 'metadata') end\n"                       \
    "      end\n"                                                                                                 \
    "      if type(e) == 'table' then\n"                                                                          \
    "        nv, created = e, 0\n"                                                                                \
    "      else\n"                                                                                                \
    "        if exp ~= '0' then redis.call('PEXPIREAT', k, exp)\n"                                                \
    "        elseif v and cur[4] ~= '0' then redis.call('PERSIST', k) end\n"                                      \
    "        if not v then\n"                                                                                     \
    "          local z = zadd[s]\n"                                                                               \
    "          if not z then\n"                                                                                   \
    "            z = {}\n"                                                                                        \
    "            zadd[s] = z\n"                                                                                   \
    "            fresh[s] = {}\n"                                                                                 \
    "          end\n"                                                                                             \
    "          z[#z + 1] = '0'\n"                                                                                 \
    "          z[#z + 1] = ARGV[a + 5]\n"                                                                         \
    "          local f = fresh[s]\n"                                                                              \
    "          f[#f + 1] = i\n"                                                                                   \
    "        end\n"                                                                                               \
    "      end\n"                                                                                                 \
    "    end\n"                                                                                                   \
    "  end\n"                                                                                                     \
    "  out[2 * i - 1] = nv\n"                                                                                     \
    "  out[2 * i] = created\n"                                                                                    \
    "  if strict and type(nv) ~= 'number' or strict and nv < 0 then break end\n"                                  \
    "  a = a + 7\n"                                                                                               \
    "end\n"                                                                                                       \
    "a = 2 + 7 * n\n"                                                                                             \
    "for s, z in pairs(zadd) do\n"                                                                                \
    "  local j = tonumber(s)\n"                                                                                   \
    "  local e = redis.pcall('ZADD', KEYS[n + 2 + j], unpack(z))\n"                                               \
    "  if type(e) ~= 'table' then e = redis.pcall('SADD', KEYS[1], ARGV[a + j]) end\n"                            \
    "  if type(e) == 'table' then\n"                                                                              \
    "    for _, i in ipairs(fresh[s]) do\n"                                                                       \
    "      out[2 * i - 1] = e\n"                                                                                  \
    "      out[2 * i] = 0\n"                                                                                      \
    "    end\n"                                                                                                   \
    "  end\n"                                                                                                     \
    "end\n"                                                                                                       \
    "return out, stamps\n"                                                                                        \
    "end\n"

/* store_batch: the stores of one loop turn in one call (redis_store.c), with store_items' layout and results
 * (not strict: each item stands alone); each namespace with an item written gets one generation bump (store_items'). */
static const char store_batch_lua[] =
    BUMP_LUA
    STORE_ITEMS_LUA
    "local n = tonumber(ARGV[1])\n"
    "local out = store_items(n, #ARGV - (2 + 7 * n) + 1, false)\n"
    "return out\n";

/* store_one: a batch of one store (the stores of a loop turn when there is one: every store at one call in
 * flight), with the batch layout for n = 1 and m = 1 and store_items' semantics and answer, in straight-line Lua:
 * no tables or closures beyond the answer, so the server spends about 16% fewer instructions on it than on the
 * batch script (callgrind of redis-server, 3,000 new keys one at a time: 87 k against 104 k a store). */
static const char store_one_lua[] =
    BUMP_LUA
    "local k = KEYS[2]\n"
    "local cur = redis.pcall('HMGET', k, 'version', 'created', 'metadata', 'expires')\n"
    "if cur.err then return {cur, 0} end\n"
    "local v, c = cur[1], ARGV[2]\n"
    "local rep, repc\n"
    "if string.byte(c) == 114 then\n"
    "  local p = string.find(c, ':', 2, true)\n"
    "  rep, repc, c = string.sub(c, 2, p - 1), string.sub(c, p + 1), '0'\n"
    "end\n"
    "if c ~= '0' then\n"
    "  if string.byte(c) == 99 then\n"
    "    if v then return {-1, 0} end\n"
    "    c = string.sub(c, 2)\n"
    "  end\n"
    "  if c ~= '' and v ~= c then return {-2, 0} end\n"
    "end\n"
    "local now, exp, meta = ARGV[3], ARGV[4], ARGV[6]\n"
    "local nv, nvs, created = 1, '1', now\n"
    "local st = bump(KEYS[4])\n"
    "if v then\n"
    "  nv = (tonumber(v) or 0) + 1\n"
    "  nvs = string.format('%d', nv)\n"
    "  if cur[2] then created = cur[2] end\n"
    "end\n"
    "if rep then nv, nvs, created = tonumber(rep), rep, repc end\n"
    "local e\n"
    "if meta ~= '' then\n"
    "  e = redis.pcall('HSET', k, 'value', ARGV[5], 'metadata', meta, 'created', created, 'updated', now, 'version', nvs, 'expires', exp,"
    " 'stamp', st)\n"
    "else\n"
    "  e = redis.pcall('HSET', k, 'value', ARGV[5], 'created', created, 'updated', now, 'version', nvs, 'expires', exp, 'stamp', st)\n"
    "  if cur[3] and type(e) ~= 'table' then redis.call('HDEL', k, 'metadata') end\n"
    "end\n"
    "if type(e) == 'table' then return {e, 0} end\n"
    "if exp ~= '0' then redis.call('PEXPIREAT', k, exp)\n"
    "elseif v and cur[4] ~= '0' then redis.call('PERSIST', k) end\n"
    "if not v then\n"
    "  e = redis.pcall('ZADD', KEYS[3], 0, ARGV[7])\n"
    "  if type(e) ~= 'table' then e = redis.pcall('SADD', KEYS[1], ARGV[9]) end\n"
    "  if type(e) == 'table' then return {e, 0} end\n"
    "end\n"
    "return {nv, created}\n";

/* update_writes: an update's new value with the writes that ride on it (redis_update.c, a conversation
 * append), in one namespace: store_items' layout with m = 1, the updated item first (cond "c" when it was
 * absent, else the version and stamp read, "version:stamp"), then the stores (cond "0"); after the namespace's
 * name come the keys to delete, whose hashes follow the generation key in KEYS. Checks first that every hash to
 * store is a hash or absent ({-3, i} otherwise, nothing written), then runs the stores strict: a changed head
 * ({-1} / {-2}) or one that failed (its error reply alone) writes nothing. Deletes as the delete script does
 * (DEL and ZREM); the generation is bumped once (store_items', before the head is written). Returns store_items'
 * 2 per item followed by the number of items deleted and the stamp written; a store that failed after the head
 * was written ends the call with the 2 per item run so far (an error reply among them), the generation bumped. */
static const char update_writes_lua[] =
    BUMP_LUA
    STORE_ITEMS_LUA
    "local n = tonumber(ARGV[1])\n"
    "for i = 1, n do\n"
    "  local t = redis.call('TYPE', KEYS[i + 1])\n"
    "  t = t.ok or t\n"
    "  if t ~= 'hash' and t ~= 'none' then return {-3, i} end\n"
    "end\n"
    "local out, stamps = store_items(n, 1, true)\n"
    "if type(out[1]) ~= 'number' or out[1] < 0 then return {out[1]} end\n"
    "if #out < 2 * n then return out end\n"
    "local a = 2 + 7 * n\n"
    "local del = 0\n"
    "for j = 1, #ARGV - a do\n"
    "  del = del + redis.call('DEL', KEYS[n + 3 + j])\n"
    "  redis.call('ZREM', KEYS[n + 2], ARGV[a + j])\n"
    "end\n"
    "out[2 * n + 1] = del\n"
    "out[2 * n + 2] = stamps['0']\n"
    "return out\n";

/* delete: KEYS item, index, generation; ARGV key. Returns 1 when the item existed. */
static const char delete_lua[] =
    BUMP_LUA
    "local n = redis.call('DEL', KEYS[1])\n"
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "if n > 0 then bump(KEYS[3]) end\n"
    "return n\n";

/* scan: KEYS index; ARGV min, max, count, item-hash prefix. Returns {members scanned, last member scanned,
 * {live members}}; members whose hash is gone (expired) are removed from the index on the way. */
static const char scan_lua[] =
    "local ks = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))\n"
    "local live = {}\n"
    "for i = 1, #ks do\n"
    "  if redis.call('EXISTS', ARGV[4] .. ks[i]) == 1 then live[#live + 1] = ks[i]\n"
    "  else redis.call('ZREM', KEYS[1], ks[i]) end\n"
    "end\n"
    "return {#ks, ks[#ks] or '', live}\n";

/* clear: KEYS index, namespaces, generation; ARGV item-hash prefix, count, ns. Deletes up to count items of
 * the namespace and their index entries; drops the namespace from the set once its index is empty (the
 * generation key stays: see BUMP_LUA). Returns {members removed, items that existed}. */
static const char clear_lua[] =
    BUMP_LUA
    "local ks = redis.call('ZRANGEBYLEX', KEYS[1], '-', '+', 'LIMIT', 0, tonumber(ARGV[2]))\n"
    "local n = 0\n"
    "for i = 1, #ks do n = n + redis.call('DEL', ARGV[1] .. ks[i]) end\n"
    "if #ks > 0 then redis.call('ZREM', KEYS[1], unpack(ks)) end\n"
    "if n > 0 then bump(KEYS[3]) end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end\n"
    "return {#ks, n}\n";

const char *const engram__redis_scripts[RS_COUNT_] = {store_lua,       delete_lua,        scan_lua,     clear_lua,
                                                      store_batch_lua, update_writes_lua, store_one_lua};
