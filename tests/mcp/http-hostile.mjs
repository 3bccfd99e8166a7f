// tests/mcp/http-hostile.mjs — engram-mcp's Streamable HTTP transport against clients that are slow, broken or
// too many, over raw TCP sockets (node:net, no MCP library): 1,000 idle connections held open while a normal
// client is still served and the server's memory stays bounded; a request sent one byte at a time; two requests
// pipelined in one write; headers that never end and a body shorter than its Content-Length (408 after the
// request timeout); a body over the limit (413); a server full of connections (503 to the newcomer, the others
// unharmed); and a clean exit (status 0) on SIGTERM with all of that going on.
//
// Usage: node tests/mcp/http-hostile.mjs build/engram-mcp      (exits 1 on the first failed assertion)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { resolve } from 'node:path';

const bin = resolve(process.argv[2] ?? 'build/engram-mcp');
const watchdog = setTimeout(() => { console.error('http-hostile.mjs: timed out after 90 s'); process.exit(1); }, 90000);
watchdog.unref();
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
const PING = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' });

async function start(args) {
  const server = spawn(bin, ['--http', '127.0.0.1:0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const closed = new Promise((res) => server.on('close', (code, signal) => res({ code, signal })));
  const port = await new Promise((res, rej) => {
    server.stderr.on('data', (d) => {
      stderr += d;
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)\/mcp/.exec(stderr);
      if (m) res(Number(m[1]));
    });
    server.on('exit', () => rej(new Error(`engram-mcp exited: ${stderr}`)));
  });
  return { server, port, closed, stderr: () => stderr };
}

function request(body, extra = '') {
  return `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;
}

// Connects, writes the chunks (with a pause between them), and collects what comes back until the server closes
// or `until` matches; resolves with the text.
function exchange(port, chunks, { gapMs = 0, until, timeoutMs = 10000 } = {}) {
  return new Promise((res, rej) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => { s.destroy(); rej(new Error(`no answer in ${timeoutMs} ms; got: ${got}`)); }, timeoutMs);
    const done = () => { clearTimeout(timer); s.destroy(); res(got); };
    s.on('data', (d) => { got += d; if (until && until.test(got)) done(); });
    s.on('end', done);
    s.on('close', done);
    s.on('error', (e) => { clearTimeout(timer); rej(e); });
    s.on('connect', async () => {
      for (const c of chunks) {
        if (s.destroyed) return;
        s.write(c);
        if (gapMs) await sleep(gapMs);
      }
    });
  });
}

function openIdle(port, n) {
  return Promise.all(Array.from({ length: n }, () => new Promise((res, rej) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => res(s));
    s.on('error', rej);
  })));
}

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

let checks = 0;
const ok = () => { checks++; };

try {
  // The request timeout leaves room for the one-byte-at-a-time request below (~150 writes 1 ms apart, several
  // times slower on a busy machine: at 400 ms it ran out there and got a 408), and stays short enough for the
  // 408 cases to be quick.
  const { server, port, closed, stderr } = await start(['--request-timeout', '2500', '--max-connections', '1100', '--max-body', '65536']);
  const rss0 = rssKiB(server.pid);

  // 1,000 idle connections
  const idle = await openIdle(port, 1000);
  await sleep(200);
  let r = await fetch(`http://127.0.0.1:${port}/mcp`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: PING });
  assert.equal(r.status, 200, 'served beside 1,000 idle connections'); ok();
  assert.deepEqual(await r.json(), { jsonrpc: '2.0', id: 1, result: {} }); ok();
  const rss1 = rssKiB(server.pid);
  assert.ok(rss1 - rss0 < 64 * 1024, `1,000 idle connections cost ${rss1 - rss0} KiB`); ok();

  // one byte at a time
  const whole = request(PING);
  let got = await exchange(port, [...whole].map((ch) => ch), { gapMs: 1, until: /"result":\{\}\}/ });
  assert.match(got, /^HTTP\/1\.1 200 /); assert.match(got, /"result":\{\}\}/); ok();

  // two requests pipelined in one write: two answers, in order
  got = await exchange(port, [request(JSON.stringify({ jsonrpc: '2.0', id: 'a', method: 'ping' })) +
    request(JSON.stringify({ jsonrpc: '2.0', id: 'b', method: 'ping' }))], { until: /"id":"b"/ });
  assert.ok(got.indexOf('"id":"a"') > 0 && got.indexOf('"id":"a"') < got.indexOf('"id":"b"'), got); ok();

  // headers that never end; a body shorter than announced: 408 after the request timeout, then close
  const t0 = Date.now();
  got = await exchange(port, ['POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ']);
  assert.match(got, /^HTTP\/1\.1 408 /); assert.ok(Date.now() - t0 >= 2400 && Date.now() - t0 < 10000, `408 after ${Date.now() - t0} ms`); ok();
  got = await exchange(port, ['POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"jsonrpc"']);
  assert.match(got, /^HTTP\/1\.1 408 /); ok();

  // a body over --max-body, announced: refused before it is sent
  got = await exchange(port, ['POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n']);
  assert.match(got, /^HTTP\/1\.1 413 /); ok();
  // not HTTP at all
  got = await exchange(port, ['\x16\x03\x01 hello\r\n\r\n']);
  assert.match(got, /^HTTP\/1\.1 400 /); ok();

  // the idle connections are still there and usable
  got = await new Promise((res) => {
    const s = idle[500];
    let text = '';
    s.on('data', (d) => { text += d; if (/"result"/.test(text)) res(text); });
    s.write(request(PING));
  });
  assert.match(got, /^HTTP\/1\.1 200 /); ok();
  for (const s of idle) s.destroy();
  await sleep(300);

  // SIGTERM with connections open: exit 0
  const lingering = await openIdle(port, 10);
  server.kill('SIGTERM');
  const { code } = await closed;
  for (const s of lingering) s.destroy();
  assert.equal(code, 0, `exit status ${code}: ${stderr()}`); ok();
  assert.doesNotMatch(stderr(), /Sanitizer|runtime error:/, stderr()); ok();

  // a full server: the newcomer gets 503, the others are served
  const small = await start(['--max-connections', '5']);
  const five = await openIdle(small.port, 5);
  await sleep(100);
  got = await exchange(small.port, [request(PING)]);
  assert.match(got, /^HTTP\/1\.1 503 /); ok();
  got = await new Promise((res) => {
    let text = '';
    five[0].on('data', (d) => { text += d; if (/"result"/.test(text)) res(text); });
    five[0].write(request(PING));
  });
  assert.match(got, /^HTTP\/1\.1 200 /); ok();
  for (const s of five) s.destroy();
  await sleep(100);
  got = await exchange(small.port, [request(PING)], { until: /"result"/ });
  assert.match(got, /^HTTP\/1\.1 200 /, 'a slot frees when a client leaves'); ok();
  small.server.kill('SIGTERM');
  assert.equal((await small.closed).code, 0); ok();
  assert.doesNotMatch(small.stderr(), /Sanitizer|runtime error:/, small.stderr()); ok();

  console.log(`http-hostile.mjs: ${checks} checks passed (1,000 idle connections: +${rss1 - rss0} KiB RSS)`);
  process.exit(0);
} catch (e) {
  console.error('http-hostile.mjs: FAILED:', e);
  process.exit(1);
}
