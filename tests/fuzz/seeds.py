#!/usr/bin/env python3
"""seeds.py — writes the committed seed corpora of tests/fuzz/corpus/<name>/ (run from the top of the tree:
python3 tests/fuzz/seeds.py). The seeds come from the unit tests (tests/test_pattern.c, test_filter.c,
test_tools.c) and the example configurations; each file is one input in the harness's format (see the header
comment of tests/fuzz/fuzz_<name>.c). Existing files of the same name are overwritten; others are left alone."""
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(harness, name, data):
    d = os.path.join(ROOT, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- pattern: PATTERN \0 STRING ----
patterns = [
    ("star", "user:*", "user:42"), ("star_mid", "a*b*c", "aXXbYYc"), ("star_end", "*:42", "user:421"),
    ("qmark_utf8", "caf?", "café"), ("qmark_emoji", "?", "\U0001F600"), ("class", "key[0-9]", "key7"),
    ("class_rev", "[9-0]", "5"), ("class_neg", "[^a]b", "éb"), ("class_bang", "[!a-z]", "Q"),
    ("class_utf8_range", "[à-ï]", "ê"), ("class_empty", "a[]", "a]"), ("class_neg_empty", "a[^]", "ax"),
    ("class_dash", "[a-]", "-"), ("class_esc", "[\\]a]", "]"), ("class_esc_dash", "[a\\-z]", "-"),
    ("class_range_esc_end", "[a-\\]]", "]"), ("substring", "user", "a-user-1"), ("substring_esc", "a\\*b", "xa*by"),
    ("substring_utf8", "é", "café"), ("esc_glob", "\\[*\\]", "[x]"), ("esc_backslash", "*\\\\", "dir\\"),
    ("invalid_class", "[abc", "[abc"), ("invalid_backslash", "abc\\", "abc\\"), ("invalid_star", "*[a", "x[a"),
    ("backtrack", "a*a*a*a*a*b", "a" * 60), ("backtrack_q", "*?*?*?b", "a" * 40),
    ("prefix_esc", "us\\*er?x", "us*erax"), ("prefix_class", "a\\[b[cd]*", "a[bc"),
    ("empty", "", "anything"), ("invalid_utf8_key", "a?c", b"a\xffc"), ("trunc_utf8_key", "??", b"\xc3\x28"),
    ("lead_star", b"*\xa9", b"\xc3\xa9"),
]
for name, p, s in patterns:
    pb = p.encode() if isinstance(p, str) else p
    sb = s.encode() if isinstance(s, str) else s
    write("pattern", name, pb + b"\0" + sb)

# ---- filter: FILTER METADATA (two JSON texts one after the other) ----
filters = [
    ("null_meta", '{"a":{"$exists":false}}', 'null'),
    ("plain_num", '{"a":1}', '{"a":1.0}'),
    ("plain_type", '{"a":1}', '{"a":"1"}'),
    ("plain_obj", '{"a":{"x":1,"y":[1,"z"]}}', '{"a":{"y":[1,"z"],"x":1}}'),
    ("plain_empty_obj", '{"a":{}}', '{"a":{}}'),
    ("eq_literal_op", '{"n":{"$eq":{"$gt":1}}}', '{"n":{"$gt":1}}'),
    ("ne_missing", '{"n":{"$ne":3}}', '{}'),
    ("gt_num", '{"n":{"$gt":9}}', '{"n":10}'),
    ("gt_str", '{"s":{"$gt":"9"}}', '{"s":"10"}'),
    ("range_dates", '{"d":{"$gte":"2024-01-01","$lt":"2025-01-01"}}', '{"d":"2024-06-30"}'),
    ("in_mixed", '{"c":{"$in":[1,"a",true,null,[1,2]]}}', '{"c":[1,2]}'),
    ("nin_type", '{"c":{"$nin":[1,2]}}', '{"c":"1"}'),
    ("exists_null", '{"a":{"$exists":true}}', '{"a":null}'),
    ("and_fields", '{"a":1,"b":"x","c":{"$in":[true]}}', '{"a":1,"b":"x","c":true,"d":0}'),
    ("nested", '{"a.b.c":{"$gte":10}}', '{"a":{"b":{"c":12}}}'),
    ("nested_array", '{"a.b":1}', '{"a":[{"b":1}]}'),
    ("bad_op", '{"age":{"$foo":1}}', '{"age":1}'),
    ("bad_mix", '{"c":{"$gt":1,"x":2}}', '{"c":2}'),
    ("bad_reserved", '{"$and":[]}', '{}'),
    ("bad_segment", '{"a..b":1}', '{"a":{"b":1}}'),
    ("bad_gt_type", '{"age":{"$gt":true}}', '{"age":true}'),
    ("big_numbers", '{"n":{"$lt":1e308},"m":-0}', '{"n":1e300,"m":0}'),
    ("dup_keys", '{"a":1,"a":2}', '{"a":1,"a":2}'),
    ("tags", '{"tags":{"$in":["x"]},"user.name":{"$ne":"bob"}}', '{"tags":"x","user":{"name":"ann"}}'),
    # The first finding (src/shared/filter.c compared nested numbers with cJSON_Compare): regression seeds.
    ("inf_nested", '{"a":{"$eq":{"x":1e400}}}', '{"a":{"x":1e400},"b":[2e308]}'),
    ("inf_op_value", '{"n":{"$lt":1e308}}', '{"n":{"$lt":2e308}}'),
]
for name, f, m in filters:
    write("filter", name, f + " " + m)

# ---- tools: the arguments JSON of one call (every tool is called with them) ----
tools = [
    ("store_obj", {"key": "fact", "value": {"a": 1, "b": [True, None]}}),
    ("store_str", '{"key":"s","value":"hello \\"you\\""}'),
    ("store_meta", {"key": "k", "value": 1, "metadata": {"tags": ["a", "b"], "mood": "calm"}}),
    ("store_ttl", {"key": "brief", "value": 1, "metadata": {"ttl": 0.05}}),
    ("store_ns", {"key": "p", "value": "in proj", "namespace": "proj"}),
    ("store_source", {"key": "n1", "value": 1, "memory_source": "notes"}),
    ("store_unknown_source", {"key": "n1", "value": 1, "memory_source": "nope"}),
    ("key_only", {"key": "fact"}),
    ("search", {"query": "apple", "limit": 5}),
    ("search_pattern", {"query": "", "pattern": "fruit:*"}),
    ("search_filter", {"query": "", "filter": {"n": {"$gte": 3}}}),
    ("list_keys", {"pattern": "k[24]", "limit": 2}),
    ("list_cursor", {"cursor": "0:k1", "limit": 1}),
    ("list_bad_cursor", {"cursor": "01:ak"}),
    ("empty", "{}"),
    ("blank", " \n"),
    ("openai_string", json.dumps(json.dumps({"key": "k", "value": 1}))),
    ("bad_limit", {"query": "a", "limit": 2.5}),
    ("bad_json", '{"key": "k", "value": '),
    ("null_args", {"key": "k", "value": None, "namespace": None, "memory_source": None}),
    ("utf8_key", {"key": "café ☕", "value": "x"}),
    ("unknown_arg", {"key": "k", "value": 1, "colour": "red"}),
]
for name, a in tools:
    write("tools", name, a if isinstance(a, str) else json.dumps(a, ensure_ascii=False))

# ---- config: a configuration document ----
configs = [
    ("cache_min", {"sources": [{"name": "cache", "type": "cache"}]}),
    ("cache_opts", {"sources": [{"name": "cache", "type": "cache", "description": "Fast temporary cache",
                                 "default": True, "options": {"max_entries": 10000, "sweep_interval_ms": 30000}}]}),
    ("bare_array", [{"name": "a", "type": "cache"}, {"name": "b", "type": "cache", "default": True}]),
    ("sqlite_memory", {"sources": [{"name": "db", "type": "sqlite", "options": {"path": ":memory:",
                                                                              "table": "agent_memory",
                                                                              "synchronous": "normal"}}]}),
    ("sqlite_file", {"sources": [{"name": "persistent", "type": "sqlite",
                                  "options": {"path": "${ENGRAM_DEMO_DIR}/persistent.db", "table": "agent_memory"}}]}),
    ("vector", {"sources": [{"name": "vectors", "type": "vector", "options": {"dimension": 16, "metric": "cosine",
                                                                             "text_fields": ["text"]}}]}),
    ("vector_file", {"sources": [{"name": "v", "type": "vector", "options": {"dimension": 8, "path": "/x/v.bin"}}]}),
    ("three", {"sources": [{"name": "cache", "type": "cache", "default": True},
                           {"name": "persistent", "type": "sqlite"},
                           {"name": "vectors", "type": "vector", "options": {"dimension": 8, "metric": "l2"}}]}),
    ("dup_name", {"sources": [{"name": "a", "type": "cache"}, {"name": "a", "type": "sqlite"}]}),
    ("unknown_type", {"sources": [{"name": "m", "type": "mongo"}]}),
    ("unknown_field", {"sources": [{"name": "m", "type": "cache", "colour": "red"}]}),
    ("bad_option", {"sources": [{"name": "m", "type": "cache", "options": {"max_entries": -1}}]}),
    ("unknown_option", {"sources": [{"name": "m", "type": "sqlite", "options": {"pathh": "x"}}]}),
    ("bad_table", {"sources": [{"name": "m", "type": "sqlite", "options": {"table": "sqlite_x"}}]}),
    ("env_unset", {"sources": [{"name": "m", "type": "cache", "options": {"x": "${ENGRAM_FUZZ_UNSET}"}}]}),
    ("bad_name", {"sources": [{"name": "bad name!", "type": "cache"}]}),
    ("redis_rewritten", {"sources": [{"name": "r", "type": "redis", "options": {"url": "redis://127.0.0.1:1"}}]}),
    ("empty_sources", {"sources": []}),
]
for name, c in configs:
    write("config", name, json.dumps(c, ensure_ascii=False, indent=1))
write("config", "trailing_text", '{"sources": []} x')
here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for ex in ("agent_memory", "multi_source_agent"):
    with open(os.path.join(here, "examples", ex, "config.json"), "rb") as f:
        write("config", "example_" + ex, f.read())

# ---- list_keys: LIMIT \n NAMESPACE \n PATTERN \n CURSOR (a missing line is NULL) ----
lists = [
    ("all", "100\n\n"), ("page1", "1\n\n"), ("page3_ns", "3\nproj\n"), ("glob", "5\n\nuser:*"),
    ("glob_class", "4\n\nk[0-9]*"), ("substring", "10\n\nuser"), ("cursor", "2\n\nuser:*\n0:user:1"),
    ("cursor_other_ns", "2\nproj\n\n4:projk"), ("cursor_before_ns", "2\nproj\n\n0:zzz"),
    ("cursor_after_ns", "2\n\n\n4:projk"), ("bad_cursor_zero", "2\n\n\n01:k"), ("bad_cursor_sign", "2\n\n\n+0:k"),
    ("bad_cursor_empty_key", "2\n\n\n0:"), ("utf8", "3\nünï\né*"), ("prefix_max", "3\n\n\U0010FFFF*"),
    ("limit_zero", "0\n\n"), ("limit_big", "100001\n\n"), ("invalid_pattern", "3\n\n[abc"),
    ("escape", "3\n\na\\*b*"), ("nested_ns", "2\na/b\n*"),
]
for name, l in lists:
    write("list_keys", name, l)

# ---- server: the bytes a client sends on one connection ----
def post(body, extra=""):
    b = body.encode() if isinstance(body, str) else body
    return ("POST /tools/call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n"
            % (extra, len(b))).encode() + b

server = [
    ("get_tools", b"GET /tools HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("get_tools_anthropic", b"GET /tools?format=anthropic HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("store", post('{"name":"memory_store","arguments":{"key":"k","value":{"a":1}}}')),
    ("store_string_args", post(json.dumps({"name": "memory_store", "arguments": json.dumps({"key": "k", "value": 1})}))),
    ("pipelined", post('{"name":"memory_store","arguments":{"key":"k","value":1}}')
     + post('{"name":"memory_retrieve","arguments":{"key":"k"}}')
     + b"GET /tools HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("search", post('{"name":"memory_search","arguments":{"query":"k","limit":3}}')),
    ("list_keys", post('{"name":"memory_list_keys","arguments":{}}')),
    ("unknown_tool", post('{"name":"memory_fly","arguments":{}}')),
    ("bad_body", post('{"name":')),
    ("empty_body", post("")),
    ("bad_args_type", post('{"name":"memory_store","arguments":5}')),
    ("expect_continue", post('{"name":"memory_list_sources"}', "Expect: 100-continue\r\n")),
    ("http10", b"GET /tools HTTP/1.0\r\n\r\n"),
    ("close", b"GET /tools HTTP/1.1\r\nConnection: close\r\n\r\nGET /tools HTTP/1.1\r\n\r\n"),
    ("not_found", b"GET /nope?x=1 HTTP/1.1\r\n\r\n"),
    ("wrong_method", b"DELETE /tools/call HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
    ("chunked", b"POST /tools/call HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"10\r\n{\"name\":\"memory_\r\n10\r\nlist_sources\"}   \r\n0\r\n\r\n"),
    ("garbage", b"\x00\x01GET / HTTP/9.9\r\n\r\n"),
]
for name, s in server:
    write("server", name, s)
