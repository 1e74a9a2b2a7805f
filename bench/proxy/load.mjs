// HTTP load for bench/proxy: C keep-alive connections, each sending GET requests back to back
// for D seconds (after a warm-up); prints one JSON line: requests/s and latency percentiles (ms).
//
//   node bench/proxy/load.mjs --url http://127.0.0.1:1337/api/messages [--connections 16]
//        [--duration 10] [--warmup 2] [--token JWT]
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    connections: { type: 'string', default: '16' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    token: { type: 'string' },
  },
});
if (!opt.url) {
  console.error('load.mjs: --url is required');
  process.exit(1);
}
const url = new URL(opt.url);
const connections = Number(opt.connections);
const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
const headers = opt.token ? { authorization: `Bearer ${opt.token}` } : {};

function get() {
  return new Promise((resolve) => {
    const start = process.hrtime.bigint();
    const req = http.get(url, { agent, headers }, (res) => {
      res.on('data', () => {});
      res.on('end', () => resolve({ ok: res.statusCode === 200, ns: process.hrtime.bigint() - start }));
    });
    req.on('error', () => resolve({ ok: false, ns: process.hrtime.bigint() - start }));
  });
}

async function run(seconds, record) {
  const end = Date.now() + seconds * 1000;
  const worker = async () => {
    while (Date.now() < end) {
      const r = await get();
      record?.(r);
    }
  };
  await Promise.all(Array.from({ length: connections }, worker));
}

await run(Number(opt.warmup));
const latencies = [];
let errors = 0;
const started = process.hrtime.bigint();
await run(Number(opt.duration), (r) => {
  if (r.ok) latencies.push(Number(r.ns) / 1e6);
  else errors += 1;
});
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
latencies.sort((a, b) => a - b);
const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] : null);
console.log(JSON.stringify({
  url: opt.url,
  connections,
  seconds: Number(seconds.toFixed(2)),
  requests: latencies.length,
  errors,
  rps: Number((latencies.length / seconds).toFixed(1)),
  p50_ms: pct(50),
  p90_ms: pct(90),
  p99_ms: pct(99),
  max_ms: latencies.at(-1) ?? null,
}));
agent.destroy();
