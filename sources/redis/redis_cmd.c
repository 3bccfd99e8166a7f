/*
 * redis_cmd.c — the redis source's command formatting: a reusable RESP buffer (commands are formatted here and
 * handed to hiredis with redisAsyncFormattedCommand, so the hot path allocates nothing of its own), the key
 * encoding of the data layout, and the Lua scripts that make conditional stores, deletes, index scans and
 * clears atomic on the server (docs/sources-redis.md describes the layout they maintain).
 *
 * Keys: prefix "i:" <ns byte length> ":" ns ":" key for an item's hash, prefix "x:" <ns byte length> ":" ns
 * for a namespace's index, prefix "g:" <ns byte length> ":" ns for its generation counter (bumped by every
 * script that changes its items), prefix "namespaces" for the set of namespaces. The length makes the encoding
 * unambiguous whatever bytes a namespace or key holds (':' included).
 */
#include <stdio.h>
#include <string.h>

#include "redis_src.h"

/* ---- Scripts ---- */

/* Every script that changes a namespace's items bumps its generation key (P "g:" len ":" ns) once per call:
 * INCR, or — when the key is new (INCR answers 1) or holds something INCR refuses — a fresh start from the
 * server's clock in microseconds, so that a generation deleted and recreated (FLUSHDB) does not count up to a
 * value seen before. redis_search.c compares it to the generation its cached text index was built at. */
#define BUMP_LUA                                                                                                  \
  "local function bump(g)\n"                                                                                      \
  "  local v = redis.pcall('INCR', g)\n"                                                                          \
  "  if type(v) ~= 'number' or v == 1 then\n"                                                                     \
  "    local t = redis.call('TIME')\n"                                                                            \
  "    redis.pcall('SET', g, t[1] .. string.format('%06d', tonumber(t[2])))\n"                                    \
  "  end\n"                                                                                                       \
  "end\n"

/* store (one item; update's conditional store): KEYS item, index, namespaces, generation; ARGV
 * create_only("0"/"1"), if_version("0" = none), now, expires("0" = never), value, metadata("" = none), key,
 * ns. Returns {version, created}, {-1} exists, {-2} version differs. */
static const char store_lua[] =
    BUMP_LUA
    "local cur = redis.call('HMGET', KEYS[1], 'version', 'created')\n"
    "local v = cur[1]\n"
    "if ARGV[1] == '1' and v then return {-1} end\n"
    "if ARGV[2] ~= '0' and v ~= ARGV[2] then return {-2} end\n"
    "local created = ARGV[3]\n"
    "local nv = 1\n"
    "if v then\n"
    "  nv = (tonumber(v) or 0) + 1\n"
    "  if cur[2] then created = cur[2] end\n"
    "end\n"
    "if ARGV[6] ~= '' then\n"
    "  redis.call('HSET', KEYS[1], 'value', ARGV[5], 'metadata', ARGV[6], 'created', created, 'updated', ARGV[3],"
    " 'version', nv, 'expires', ARGV[4])\n"
    "else\n"
    "  redis.call('HSET', KEYS[1], 'value', ARGV[5], 'created', created, 'updated', ARGV[3], 'version', nv,"
    " 'expires', ARGV[4])\n"
    "  if v then redis.call('HDEL', KEYS[1], 'metadata') end\n"
    "end\n"
    "if ARGV[4] ~= '0' then redis.call('PEXPIREAT', KEYS[1], ARGV[4])\n"
    "elseif v then redis.call('PERSIST', KEYS[1]) end\n"
    "if not v then\n"
    "  redis.call('ZADD', KEYS[2], 0, ARGV[7])\n"
    "  redis.call('SADD', KEYS[3], ARGV[8])\n"
    "end\n"
    "bump(KEYS[4])\n"
    "return {nv, created}\n";

/* store_batch: the stores of one loop turn in one call (sources/redis_store.c), each with the store script's
 * semantics, in order (a later item sees an earlier one's write).
 *   KEYS: namespaces set, the n item hashes, the index of each of the m namespaces the batch touches, then
 *         the generation key of each.
 *   ARGV: n, then 7 per item: cond ("0" = none; "c" create-only, then the if_version digits if any), now,
 *         expires ("0" = never), value, metadata ("" = none), key, namespace slot (0..m-1); then the m names.
 * Returns a flat array of 2n: per item version and created, or -1 (exists) / -2 (version differs) and 0, or an
 * error reply and 0 when a command failed for that item alone (a hash of the wrong type, out of memory). Reads
 * metadata and expires along with version so that HDEL and PERSIST run only when there is something to
 * remove; the index and the namespace set get one ZADD and one SADD per namespace for the new items, and each
 * namespace with an item written gets one generation bump. Numbers
 * handed to redis.pcall are strings ('1', string.format('%d')): Lua would print them with "%.14g". */
static const char store_batch_lua[] =
    BUMP_LUA
    "local n = tonumber(ARGV[1])\n"
    "local out, zadd, fresh, written = {}, {}, {}, {}\n"
    "local a = 2\n"
    "for i = 1, n do\n"
    "  local k = KEYS[i + 1]\n"
    "  local cur = redis.pcall('HMGET', k, 'version', 'created', 'metadata', 'expires')\n"
    "  local nv, created = 0, 0\n"
    "  if cur.err then\n"
    "    nv = cur\n"
    "  else\n"
    "    local v, c = cur[1], ARGV[a]\n"
    "    if c ~= '0' then\n"
    "      if string.byte(c) == 99 then\n"
    "        if v then nv = -1 end\n"
    "        c = string.sub(c, 2)\n"
    "      end\n"
    "      if nv == 0 and c ~= '' and v ~= c then nv = -2 end\n"
    "    end\n"
    "    if nv == 0 then\n"
    "      local now, exp, meta = ARGV[a + 1], ARGV[a + 2], ARGV[a + 4]\n"
    "      local nvs = '1'\n"
    "      created, nv = now, 1\n"
    "      if v then\n"
    "        nv = (tonumber(v) or 0) + 1\n"
    "        nvs = string.format('%d', nv)\n"
    "        if cur[2] then created = cur[2] end\n"
    "      end\n"
    "      local e\n"
    "      if meta ~= '' then\n"
    "        e = redis.pcall('HSET', k, 'value', ARGV[a + 3], 'metadata', meta, 'created', created, 'updated', now,"
    " 'version', nvs, 'expires', exp)\n"
    "      else\n"
    "        e = redis.pcall('HSET', k, 'value', ARGV[a + 3], 'created', created, 'updated', now, 'version', nvs,"
    " 'expires', exp)\n"
    "        if cur[3] and type(e) ~= 'table' then redis.call('HDEL', k, 'metadata') end\n"
    "      end\n"
    "      if type(e) == 'table' then\n"
    "        nv, created = e, 0\n"
    "      else\n"
    "        written[ARGV[a + 6]] = true\n"
    "        if exp ~= '0' then redis.call('PEXPIREAT', k, exp)\n"
    "        elseif v and cur[4] ~= '0' then redis.call('PERSIST', k) end\n"
    "        if not v then\n"
    "          local s = ARGV[a + 6]\n"
    "          local z = zadd[s]\n"
    "          if not z then\n"
    "            z = {}\n"
    "            zadd[s] = z\n"
    "            fresh[s] = {}\n"
    "          end\n"
    "          z[#z + 1] = '0'\n"
    "          z[#z + 1] = ARGV[a + 5]\n"
    "          local f = fresh[s]\n"
    "          f[#f + 1] = i\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  out[2 * i - 1] = nv\n"
    "  out[2 * i] = created\n"
    "  a = a + 7\n"
    "end\n"
    "for s, z in pairs(zadd) do\n"
    "  local j = tonumber(s)\n"
    "  local e = redis.pcall('ZADD', KEYS[n + 2 + j], unpack(z))\n"
    "  if type(e) ~= 'table' then e = redis.pcall('SADD', KEYS[1], ARGV[a + j]) end\n"
    "  if type(e) == 'table' then\n"
    "    for _, i in ipairs(fresh[s]) do\n"
    "      out[2 * i - 1] = e\n"
    "      out[2 * i] = 0\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local m = #ARGV - a + 1\n"
    "for s in pairs(written) do bump(KEYS[n + 2 + m + tonumber(s)]) end\n"
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

const char *const engram__redis_scripts[RS_COUNT_] = {store_lua, delete_lua, scan_lua, clear_lua, store_batch_lua};

/* ---- Buffer ---- */

static int grow(engram__rbuf_t *b, size_t more) {
  size_t cap;
  char *p;
  if (b->failed) return -1;
  cap = b->cap ? b->cap : 4096;
  while (cap < b->len + more) cap *= 2;
  if ((p = engram_realloc(b->p, cap)) == NULL) {
    b->failed = 1;
    return -1;
  }
  b->p = p;
  b->cap = cap;
  return 0;
}

static inline int reserve(engram__rbuf_t *b, size_t more) {
  if (b->len + more <= b->cap && !b->failed) return 0;
  return grow(b, more);
}

/* Decimal digits of v into out (no NUL); returns their count. */
static int digits(uint64_t v, char *out) {
  char tmp[24];
  int k = 0, i;
  do {
    tmp[k++] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0);
  for (i = 0; i < k; i++) out[i] = tmp[k - 1 - i];
  return k;
}

void engram__rbuf_reset(engram__rbuf_t *b) {
  b->len = 0;
  b->failed = 0;
  /* Do not keep a huge buffer around after one large value. */
  if (b->cap > (1u << 20)) {
    engram_free(b->p);
    b->p = NULL;
    b->cap = 0;
  }
}

void engram__rbuf_free(engram__rbuf_t *b) {
  engram_free(b->p);
  memset(b, 0, sizeof *b);
}

void engram__rbuf_raw_slow(engram__rbuf_t *b, const void *s, size_t len) {
  if (len == 0 || reserve(b, len) != 0) return;
  memcpy(b->p + b->len, s, len);
  b->len += len;
}

static void header(engram__rbuf_t *b, char c, size_t n) {
  char *p;
  if (reserve(b, 24) != 0) return;
  p = b->p + b->len;
  *p++ = c;
  if (n < 10) *p++ = (char)('0' + n);
  else if (n < 100) {
    *p++ = (char)('0' + n / 10);
    *p++ = (char)('0' + n % 10);
  } else {
    p += digits(n, p);
  }
  b->len = (size_t)(p - b->p);
  b->p[b->len++] = '\r';
  b->p[b->len++] = '\n';
}

void engram__rbuf_array(engram__rbuf_t *b, size_t n) { header(b, '*', n); }

void engram__rbuf_arg_begin(engram__rbuf_t *b, size_t total) {
  header(b, '$', total);
  reserve(b, total + 2);
}

void engram__rbuf_arg_end(engram__rbuf_t *b) { engram__rbuf_raw(b, "\r\n", 2); }

void engram__rbuf_arg(engram__rbuf_t *b, const void *s, size_t len) {
  engram__rbuf_arg_begin(b, len);
  engram__rbuf_raw(b, s, len);
  engram__rbuf_arg_end(b);
}

void engram__rbuf_arg_str(engram__rbuf_t *b, const char *s) { engram__rbuf_arg(b, s, strlen(s)); }

void engram__rbuf_arg_i64(engram__rbuf_t *b, int64_t v) {
  char tmp[24];
  int n = 0;
  if (v < 0) {
    tmp[n++] = '-';
    n += digits(v == INT64_MIN ? (uint64_t)INT64_MAX + 1u : (uint64_t)-v, tmp + n);
  } else {
    n = digits((uint64_t)v, tmp);
  }
  engram__rbuf_arg(b, tmp, (size_t)n);
}

/* ---- Keys ---- */

static int ns_len_text(size_t ns_len, char *out) { return digits(ns_len, out); }

/* Begins an argument "prefix tag <ns length>:ns" with room for extra bytes after it (the key encoding above). */
static void ns_key_begin(const engram__redis_t *r, engram__rbuf_t *b, const char *tag, const char *ns, size_t ns_len,
                         size_t extra) {
  char nl[24];
  size_t k = (size_t)ns_len_text(ns_len, nl);
  engram__rbuf_arg_begin(b, r->prefix_len + 2 + k + 1 + ns_len + extra);
  engram__rbuf_raw(b, r->prefix, r->prefix_len);
  engram__rbuf_raw(b, tag, 2);
  engram__rbuf_raw(b, nl, k);
  engram__rbuf_raw(b, ":", 1);
  engram__rbuf_raw(b, ns, ns_len);
}

void engram__redis_arg_item(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len, const char *key,
                            size_t key_len) {
  ns_key_begin(r, b, "i:", ns, ns_len, 1 + key_len);
  engram__rbuf_raw(b, ":", 1);
  engram__rbuf_raw(b, key, key_len);
  engram__rbuf_arg_end(b);
}

void engram__redis_arg_item_prefix(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len) {
  ns_key_begin(r, b, "i:", ns, ns_len, 1);
  engram__rbuf_raw(b, ":", 1);
  engram__rbuf_arg_end(b);
}

void engram__redis_arg_index(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len) {
  ns_key_begin(r, b, "x:", ns, ns_len, 0);
  engram__rbuf_arg_end(b);
}

void engram__redis_arg_gen(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len) {
  ns_key_begin(r, b, "g:", ns, ns_len, 0);
  engram__rbuf_arg_end(b);
}

/* A ZRANGEBYLEX bound: mark ('(', '[' or '-') followed by s[0..n), in a buffer grown as needed. */
int engram__redis_set_bound(char **buf, size_t *cap, size_t *len, char mark, const char *s, size_t n) {
  if (*cap < n + 2) {
    char *p = engram_realloc(*buf, n + 2);
    if (p == NULL) return ENGRAM_ENOMEM;
    *buf = p;
    *cap = n + 2;
  }
  (*buf)[0] = mark;
  memcpy(*buf + 1, s, n);
  *len = n + 1;
  return 0;
}

void engram__redis_arg_nsset(const engram__redis_t *r, engram__rbuf_t *b) {
  engram__rbuf_arg_begin(b, r->prefix_len + 10);
  engram__rbuf_raw(b, r->prefix, r->prefix_len);
  engram__rbuf_raw(b, "namespaces", 10);
  engram__rbuf_arg_end(b);
}

void engram__redis_begin_script(const engram__redis_t *r, engram__rbuf_t *b, int script, int use_eval, int nkeys,
                                int nargs) {
  engram__rbuf_array(b, (size_t)(3 + nkeys + nargs));
  if (use_eval) {
    engram__rbuf_arg(b, "EVAL", 4);
    engram__rbuf_arg_str(b, engram__redis_scripts[script]);
  } else {
    engram__rbuf_arg(b, "EVALSHA", 7);
    engram__rbuf_arg(b, r->conn.sha[script], 40);
  }
  engram__rbuf_arg_i64(b, nkeys);
}

int engram__redis_is_noscript(const redisReply *reply) {
  return reply->type == REDIS_REPLY_ERROR && reply->len >= 8 && memcmp(reply->str, "NOSCRIPT", 8) == 0;
}

char *engram__redis_json(engram__redis_t *r, const cJSON *v, size_t *len, int *owned) {
  char *s;
  *owned = 0;
  if (r->scratch == NULL) {
    if ((r->scratch = engram_malloc(16384)) == NULL) return NULL;
    r->scratch_cap = 16384;
  }
  /* cJSON_PrintPreallocated wants a little slack beyond the text. */
  if (cJSON_PrintPreallocated((cJSON *)v, r->scratch, (int)r->scratch_cap - 8, 0)) {
    *len = strlen(r->scratch);
    return r->scratch;
  }
  if ((s = cJSON_PrintUnformatted(v)) == NULL) return NULL;
  *owned = 1;
  *len = strlen(s);
  /* Grow the scratch buffer (up to 1 MiB) so that values of this size fit next time. */
  if (*len + 64 <= (1u << 20)) {
    size_t cap = r->scratch_cap;
    char *p;
    while (cap < *len + 64) cap *= 2;
    if ((p = engram_malloc(cap)) != NULL) {
      engram_free(r->scratch);
      r->scratch = p;
      r->scratch_cap = cap;
    }
  }
  return s;
}

int64_t engram__redis_int(const redisReply *reply, int64_t def) {
  if (reply == NULL) return def;
  if (reply->type == REDIS_REPLY_INTEGER) return reply->integer;
  if (reply->type == REDIS_REPLY_STRING && reply->len > 0 && reply->len < 20) {
    const char *p = reply->str, *end = reply->str + reply->len;
    int neg = *p == '-';
    int64_t v = 0;
    if (neg) p++;
    if (p == end) return def;
    for (; p < end; p++) {
      if (*p < '0' || *p > '9') return def;
      v = v * 10 + (*p - '0');
    }
    return neg ? -v : v;
  }
  return def;
}

/* ---- JSON text read back from Redis ---- */

/* A non-allocating JSON syntax check, so that a failed cJSON parse can be told apart: out of memory (the text is
 * valid) or a value some other tool stored (it is not). */
static const char *ws(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

static const char *v_value(const char *p, const char *e, int depth);

static const char *v_string(const char *p, const char *e) {
  int i;
  if (p >= e || *p != '"') return NULL;
  for (p++; p < e; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') return p + 1;
    if (c < 0x20) return NULL;
    if (c == '\\') {
      if (++p >= e) return NULL;
      if (*p == 'u') {
        for (i = 0; i < 4; i++)
          if (++p >= e || !((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F'))) return NULL;
      } else if (!strchr("\"\\/bfnrt", *p)) {
        return NULL;
      }
    }
  }
  return NULL;
}

static const char *v_digits(const char *p, const char *e) {
  const char *s = p;
  while (p < e && *p >= '0' && *p <= '9') p++;
  return p > s ? p : NULL;
}

static const char *v_number(const char *p, const char *e) {
  if (p < e && *p == '-') p++;
  if ((p = v_digits(p, e)) == NULL) return NULL;
  if (p < e && *p == '.' && (p = v_digits(p + 1, e)) == NULL) return NULL;
  if (p < e && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < e && (*p == '+' || *p == '-')) p++;
    if ((p = v_digits(p, e)) == NULL) return NULL;
  }
  return p;
}

static const char *v_word(const char *p, const char *e, const char *w) {
  size_t n = strlen(w);
  return (size_t)(e - p) >= n && memcmp(p, w, n) == 0 ? p + n : NULL;
}

static const char *v_value(const char *p, const char *e, int depth) {
  if (depth > 1000 || (p = ws(p, e)) >= e) return NULL;
  switch (*p) {
    case '"': return v_string(p, e);
    case 't': return v_word(p, e, "true");
    case 'f': return v_word(p, e, "false");
    case 'n': return v_word(p, e, "null");
    case '[':
      if ((p = ws(p + 1, e)) < e && *p == ']') return p + 1;
      for (;;) {
        if ((p = v_value(p, e, depth + 1)) == NULL || (p = ws(p, e)) >= e) return NULL;
        if (*p == ']') return p + 1;
        if (*p++ != ',') return NULL;
      }
    case '{':
      if ((p = ws(p + 1, e)) < e && *p == '}') return p + 1;
      for (;;) {
        if ((p = v_string(ws(p, e), e)) == NULL || (p = ws(p, e)) >= e || *p++ != ':') return NULL;
        if ((p = v_value(p, e, depth + 1)) == NULL || (p = ws(p, e)) >= e) return NULL;
        if (*p == '}') return p + 1;
        if (*p++ != ',') return NULL;
      }
    default: return v_number(p, e);
  }
}

int engram__redis_parse_json(const char *s, size_t n, cJSON **out) {
  const char *end;
  if ((*out = cJSON_ParseWithLength(s, n)) != NULL) return 0;
  end = v_value(s, s + n, 0);
  return end != NULL && ws(end, s + n) == s + n ? ENGRAM_ENOMEM : ENGRAM_EBACKEND;
}
