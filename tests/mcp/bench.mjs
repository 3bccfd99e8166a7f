// tests/mcp/bench.mjs — engram-mcp's speed, the two figures issue 14 names: tools/call of memory_retrieve over
// stdio with one call in flight (round-trip p50 / p99, measured from this Node.js client, so the figure includes
// the client's own pipe handling), and over Streamable HTTP with keep-alive from 32 connections (calls/s; wrk is
// used when installed, else this script's own keep-alive client, which is slower than the server).
// It prints figures and checks nothing: `make mcp-bench` runs it; tests live in the other files of tests/mcp.
//
// Usage: node tests/mcp/bench.mjs build/engram-mcp [seconds per HTTP run, default 5]
import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const bin = resolve(process.argv[2] ?? 'build/engram-mcp');
const seconds = Number(process.argv[3] ?? 5);
const STORE = { jsonrpc: '2.0', id: 0, method: 'tools/call', params: { name: 'memory_store', arguments: { key: 'bench', value: 'a short remembered fact' } } };
const RETRIEVE = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'memory_retrieve', arguments: { key: 'bench' } } });

async function stdio() {
  const p = spawn(bin, [], { stdio: ['pipe', 'pipe', 'inherit'] });
  let buf = '', waiter = null;
  p.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) { const line = buf.slice(0, nl); buf = buf.slice(nl + 1); waiter?.(line); }
  });
  const call = (text) => new Promise((res) => { waiter = res; p.stdin.write(text + '\n'); });
  await call(JSON.stringify(STORE));
  for (let i = 0; i < 2000; i++) await call(RETRIEVE); // warm-up
  const n = 20000, t = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await call(RETRIEVE);
    t[i] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  p.stdin.end();
  t.sort();
  console.log(`stdio, one call in flight: memory_retrieve round trip p50 ${t[n >> 1].toFixed(1)} µs, p99 ${t[Math.floor(n * 0.99)].toFixed(1)} µs (${n} calls)`);
}

async function httpRuns() {
  const p = spawn(bin, ['--http', '127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const url = await new Promise((res) => {
    let err = '';
    p.stderr.on('data', (d) => { err += d; const m = /listening on (\S+)/.exec(err); if (m) res(m[1]); });
  });
  await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(STORE) });
  let wrk = false;
  try { execFileSync('wrk', ['--version'], { stdio: 'ignore' }); wrk = true; } catch (e) { wrk = e.status === 1; }
  if (wrk) {
    const script = join(tmpdir(), `engram-mcp-bench-${process.pid}.lua`);
    writeFileSync(script, `wrk.method = "POST"\nwrk.body = '${RETRIEVE}'\nwrk.headers["Content-Type"] = "application/json"\n`);
    const out = execFileSync('wrk', ['-t1', '-c32', `-d${seconds}s`, '-s', script, url], { encoding: 'utf8' });
    const rps = /Requests\/sec:\s+([\d.]+)/.exec(out)?.[1];
    const lat = /Latency\s+(\S+)/.exec(out)?.[1];
    console.log(`http keep-alive, 32 connections (wrk): memory_retrieve ${Math.round(Number(rps))} calls/s, mean latency ${lat}`);
  } else {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
    const end = Date.now() + seconds * 1000;
    let done = 0;
    const one = () => new Promise((res, rej) => {
      const req = http.request(url, { method: 'POST', agent, headers: { 'Content-Type': 'application/json' } }, (r) => { r.resume(); r.on('end', res); });
      req.on('error', rej);
      req.end(RETRIEVE);
    });
    await Promise.all(Array.from({ length: 32 }, async () => { while (Date.now() < end) { await one(); done++; } }));
    console.log(`http keep-alive, 32 connections (node client; wrk not installed): memory_retrieve ${Math.round(done / seconds)} calls/s`);
    agent.destroy();
  }
  p.kill('SIGTERM');
}

await stdio();
await httpRuns();
