// A webhook target that verifies X-Strapi-IO-Signature exactly as the README's Strapi route
// does, over the raw body. Prints `listening <port>`, then one JSON line per request:
// {"verified": true|false, "body": <the parsed body or null>}. Answers {"ok": verified}.
// Usage: node verify-webhook.mjs <secret>
import crypto from 'node:crypto';
import http from 'node:http';

const secret = process.argv[2];

function verify(ts, sig, raw) {
  const want = 'sha256=' + crypto.createHmac('sha256', secret).update(`${ts}.${raw}`).digest('hex');
  const fresh = Math.abs(Date.now() / 1000 - Number(ts)) < 300;
  return fresh && typeof sig === 'string' && sig.length === want.length
    && crypto.timingSafeEqual(Buffer.from(sig), Buffer.from(want));
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks).toString('utf8');
    const verified = verify(req.headers['x-strapi-io-timestamp'], req.headers['x-strapi-io-signature'], raw);
    let body = null;
    try { body = JSON.parse(raw); } catch { body = null; }
    console.log(JSON.stringify({ verified, body }));
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ ok: verified }));
  });
});
server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
