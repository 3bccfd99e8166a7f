// tests/mcp/client.mjs — engram-mcp driven by the official MCP TypeScript SDK client (@modelcontextprotocol/sdk,
// pinned in package-lock.json), once over stdio and once over Streamable HTTP: the client starts the server,
// initializes (protocol 2025-11-25), lists the tools, calls each memory tool with good and bad arguments and
// asserts the results (content text, structuredContent, isError), checks that an unknown tool is a protocol
// error (-32602), cancels a call, runs 200 calls at once, and for HTTP that SIGTERM ends the server with status 0.
// What a real host does, so a regression that breaks Claude Code, Cursor or VS Code breaks this test first.
//
// Usage: node tests/mcp/client.mjs build/engram-mcp      (exits 1 on the first failed assertion)
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';

const bin = resolve(process.argv[2] ?? 'build/engram-mcp');
const TOOLS = ['memory_store', 'memory_retrieve', 'memory_search', 'memory_delete', 'memory_list_keys', 'memory_list_sources'];
let checks = 0;
const check = (what, fn) => { fn(); checks++; void what; };

const watchdog = setTimeout(() => { console.error('client.mjs: timed out after 60 s'); process.exit(1); }, 60000);
watchdog.unref();

async function call(client, name, args) {
  const r = await client.callTool({ name, arguments: args });
  assert.ok(Array.isArray(r.content) && r.content.length === 1, `${name}: one content item`);
  assert.equal(r.content[0].type, 'text');
  assert.deepEqual(JSON.parse(r.content[0].text), r.structuredContent, `${name}: text and structuredContent agree`);
  return r;
}

async function exercise(client, label) {
  const t0 = Date.now();
  check('serverInfo', () => assert.equal(client.getServerVersion()?.name, 'engram-mcp'));
  check('capabilities', () => assert.ok(client.getServerCapabilities()?.tools, 'tools capability'));
  await client.ping();
  checks++;

  const { tools } = await client.listTools();
  // the six memory tools, and whatever engram's tools add later (the conversation tools), all named memory_*
  check('tools', () => {
    for (const name of TOOLS) assert.ok(tools.some((t) => t.name === name), `tools/list names ${name}`);
    for (const t of tools) assert.match(t.name, /^memory_[a-z_]+$/);
  });
  for (const t of tools) {
    check('schema', () => {
      assert.equal(t.inputSchema.type, 'object', `${t.name}: inputSchema is an object schema`);
      assert.equal(typeof t.description, 'string');
    });
  }
  check('store requires key and value', () =>
    assert.deepEqual(tools.find((t) => t.name === 'memory_store').inputSchema.required.sort(), ['key', 'value']));

  // memory_store / memory_retrieve
  let r = await call(client, 'memory_store', { key: 'fox', value: { text: 'the quick brown fox jumps' }, metadata: { tags: ['animal'] } });
  check('store', () => { assert.equal(r.isError, false); assert.equal(r.structuredContent.status, 'stored'); assert.equal(r.structuredContent.key, 'fox'); });
  r = await call(client, 'memory_retrieve', { key: 'fox' });
  check('retrieve', () => { assert.equal(r.isError, false); assert.deepEqual(r.structuredContent, { found: true, key: 'fox', value: { text: 'the quick brown fox jumps' } }); });
  r = await call(client, 'memory_retrieve', { key: 'no-such-key' });
  check('retrieve missing', () => { assert.equal(r.isError, false); assert.equal(r.structuredContent.found, false); });
  r = await call(client, 'memory_store', { key: 'note', value: 'lazy dog sleeps', namespace: 'proj' });
  check('store in a namespace', () => assert.equal(r.isError, false));
  r = await call(client, 'memory_retrieve', { key: 'note' });
  check('namespaces are apart', () => assert.equal(r.structuredContent.found, false));
  r = await call(client, 'memory_retrieve', { key: 'note', namespace: 'proj' });
  check('retrieve in a namespace', () => assert.equal(r.structuredContent.value, 'lazy dog sleeps'));

  // numbers come back as the same doubles, both ways through MCP (cJSON alone prints 0.1 + 0.2 as 0.3)
  const exact = [0.1 + 0.2, 8888888888888888888888888888888888882, -0.30000000000000004, 1e-7, 3.141592653589793];
  r = await call(client, 'memory_store', { key: 'numbers', value: exact });
  check('store numbers', () => assert.equal(r.isError, false));
  r = await call(client, 'memory_retrieve', { key: 'numbers' });
  check('numbers read back exactly', () => {
    assert.deepEqual(r.structuredContent.value, exact);
    assert.deepEqual(JSON.parse(r.content[0].text).value, exact);
  });

  // bad arguments: tool errors the model can read, not protocol errors
  r = await call(client, 'memory_store', { key: '' , value: 1 });
  check('store: empty key', () => { assert.equal(r.isError, true); assert.match(r.structuredContent.error, /^memory_store: /); });
  r = await call(client, 'memory_store', { key: 'k' });
  check('store: no value', () => { assert.equal(r.isError, true); assert.match(r.structuredContent.error, /value/); });
  r = await call(client, 'memory_retrieve', { key: 'fox', bogus: true });
  check('retrieve: unknown argument', () => { assert.equal(r.isError, true); assert.match(r.structuredContent.error, /bogus/); });
  r = await call(client, 'memory_retrieve', { key: 'fox', memory_source: 'nowhere' });
  check('retrieve: unknown source', () => { assert.equal(r.isError, true); assert.match(r.structuredContent.error, /nowhere/); });

  // memory_search
  r = await call(client, 'memory_search', { query: 'fox' });
  check('search', () => { assert.equal(r.isError, false); assert.equal(r.structuredContent.found, 1); assert.equal(r.structuredContent.results[0].key, 'fox'); });
  r = await call(client, 'memory_search', { query: 'giraffe' });
  check('search: nothing', () => { assert.equal(r.isError, false); assert.equal(r.structuredContent.found, 0); });
  r = await call(client, 'memory_search', { query: 'fox', limit: 0 });
  check('search: bad limit', () => { assert.equal(r.isError, true); assert.match(r.structuredContent.error, /limit/); });
  r = await call(client, 'memory_search', { limit: 3 });
  check('search: no query', () => assert.equal(r.isError, true));

  // memory_list_keys pages with a cursor
  for (const k of ['p1', 'p2', 'p3']) assert.equal((await call(client, 'memory_store', { key: k, value: k })).isError, false);
  const seen = [];
  let cursor;
  for (let page = 0; page < 10; page++) {
    r = await call(client, 'memory_list_keys', { pattern: 'p*', limit: 2, ...(cursor ? { cursor } : {}) });
    assert.equal(r.isError, false);
    assert.ok(r.structuredContent.count <= 2);
    seen.push(...r.structuredContent.keys);
    cursor = r.structuredContent.cursor;
    if (!cursor) break;
  }
  check('list_keys pages', () => assert.deepEqual(seen.sort(), ['p1', 'p2', 'p3']));

  // memory_delete, memory_list_sources
  r = await call(client, 'memory_delete', { key: 'fox' });
  check('delete', () => assert.deepEqual(r.structuredContent, { status: 'deleted', key: 'fox' }));
  r = await call(client, 'memory_retrieve', { key: 'fox' });
  check('deleted', () => assert.equal(r.structuredContent.found, false));
  r = await call(client, 'memory_list_sources', {});
  check('list_sources', () => { assert.equal(r.structuredContent.sources.length, 1); assert.equal(r.structuredContent.sources[0].name, 'cache'); });

  // the conversation tools: append, window, list
  for (const [role, content] of [['system', 'be brief'], ['user', 'hello'], ['assistant', 'hi there']]) {
    r = await call(client, 'memory_thread_append', { thread: 'chat-1', role, content });
    assert.equal(r.isError, false, JSON.stringify(r.structuredContent));
  }
  check('thread append', () => { assert.equal(r.structuredContent.status, 'appended'); assert.equal(r.structuredContent.seq, 3); });
  r = await call(client, 'memory_thread_window', { thread: 'chat-1' });
  check('thread window', () => assert.deepEqual(r.structuredContent.messages,
    [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello' }, { role: 'assistant', content: 'hi there' }]));
  r = await call(client, 'memory_thread_window', { thread: 'chat-1', format: 'anthropic' });
  check('thread window, anthropic', () => { assert.equal(r.structuredContent.system, 'be brief'); assert.equal(r.structuredContent.messages.length, 2); });
  r = await call(client, 'memory_thread_append', { thread: 'chat-1', role: 'wizard', content: 'x' });
  check('thread append: bad role', () => { assert.equal(r.isError, true); assert.match(r.structuredContent.error, /role/); });
  r = await call(client, 'memory_thread_list', {});
  check('thread list', () => assert.equal(r.isError, false));
  r = await call(client, 'memory_thread_search', { query: 'hello' });
  check('thread search', () => { assert.equal(r.structuredContent.count, 1); assert.equal(r.structuredContent.messages[0].thread, 'chat-1');
    assert.equal(r.structuredContent.messages[0].seq, 2); });
  r = await call(client, 'memory_thread_search', { thread: 'chat-1' });
  check('thread search: no query', () => { assert.equal(r.isError, true); assert.match(r.structuredContent.error, /"query" is required/); });

  // an unknown tool is a protocol error
  await assert.rejects(client.callTool({ name: 'no_such_tool', arguments: {} }),
    (e) => e instanceof McpError && e.code === -32602 && /no_such_tool/.test(e.message));
  checks++;

  // cancellation: the client gives up on a call (notifications/cancelled); the server goes on serving
  const ac = new AbortController();
  const pending = client.callTool({ name: 'memory_search', arguments: { query: 'dog' } }, undefined, { signal: ac.signal });
  ac.abort('test');
  await assert.rejects(pending);
  await client.ping();
  r = await call(client, 'memory_retrieve', { key: 'p1' });
  check('serving after a cancellation', () => assert.equal(r.structuredContent.value, 'p1'));

  // 200 calls at once
  const many = await Promise.all(Array.from({ length: 200 }, (_, i) => call(client, 'memory_store', { key: `many-${i}`, value: i })));
  check('200 concurrent stores', () => assert.ok(many.every((x) => x.isError === false)));
  r = await call(client, 'memory_retrieve', { key: 'many-199' });
  check('concurrent store landed', () => assert.equal(r.structuredContent.value, 199));
  console.log(`client.mjs: ${label}: ok (${Date.now() - t0} ms)`);
}

async function overStdio() {
  const transport = new StdioClientTransport({ command: bin, args: [], stderr: 'pipe' });
  let stderr = '';
  transport.stderr?.on('data', (d) => { stderr += d; });
  const client = new Client({ name: 'engram-test', version: '1.0.0' });
  await client.connect(transport);
  try {
    await exercise(client, 'stdio');
  } catch (e) {
    console.error(`stdio server stderr:\n${stderr}`);
    throw e;
  } finally {
    await client.close();
  }
  await new Promise((res) => setTimeout(res, 100)); // the last of its stderr
  check('stdio: no sanitizer report', () => assert.doesNotMatch(stderr, /Sanitizer|runtime error:/, stderr));
}

async function overHttp() {
  const server = spawn(bin, ['--http', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '', stdout = '';
  server.stdout.on('data', (d) => { stdout += d; });
  const exited = new Promise((res) => server.on('close', (code, signal) => res({ code, signal }))); // after its pipes end
  const url = await new Promise((res, rej) => {
    server.stderr.on('data', (d) => {
      stderr += d;
      const m = /listening on (http:\/\/\S+)/.exec(stderr);
      if (m) res(m[1]);
    });
    server.on('exit', () => rej(new Error(`engram-mcp --http exited: ${stderr}`)));
  });
  const client = new Client({ name: 'engram-test', version: '1.0.0' });
  try {
    await client.connect(new StreamableHTTPClientTransport(new URL(url)));
    await exercise(client, 'streamable http');
    await client.close();
  } catch (e) {
    console.error(`http server stderr:\n${stderr}`);
    server.kill('SIGKILL');
    throw e;
  }
  server.kill('SIGTERM');
  const { code } = await exited;
  check('http exit status', () => assert.equal(code, 0, `exit status after SIGTERM: ${stderr}`));
  check('http stdout empty', () => assert.equal(stdout, ''));
  check('http: no sanitizer report', () => assert.doesNotMatch(stderr, /Sanitizer|runtime error:/, stderr));
}

try {
  await overStdio();
  await overHttp();
  console.log(`client.mjs: @modelcontextprotocol/sdk client over stdio and HTTP: ${checks} checks passed`);
  process.exit(0);
} catch (e) {
  console.error('client.mjs: FAILED:', e);
  process.exit(1);
}
