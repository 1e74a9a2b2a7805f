// Checks listen.mjs, the command-line Socket.IO client that tests in other languages drive,
// against a real socket.io 4.8 server started here: what it prints, when it exits, and with which
// status. Run: node --test tests/node/client.test.mjs

import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { Server } from 'socket.io';

const LISTEN = fileURLToPath(new URL('./listen.mjs', import.meta.url));

let http;
let ioServer;
let url;
// What the server does with a connected socket; set by each test.
let onConnection = () => {};
// Handshake check; set by each test (null = accept).
let handshake = null;

function startServer(port = 0) {
  return new Promise((resolve) => {
    const h = createServer();
    const s = new Server(h);
    s.use((socket, next) => (handshake ? handshake(socket, next) : next()));
    s.on('connection', (socket) => onConnection(socket));
    h.listen(port, '127.0.0.1', () => resolve({ h, s, port: h.address().port }));
  });
}

function stopServer(h, s) {
  return new Promise((resolve) => {
    s.close(() => resolve());
    h.closeAllConnections?.();
  });
}

before(async () => {
  const started = await startServer();
  http = started.h;
  ioServer = started.s;
  url = `http://127.0.0.1:${started.port}`;
});

after(() => stopServer(http, ioServer));

beforeEach(() => {
  onConnection = () => {};
  handshake = null;
});

// Runs listen.mjs; `onLine(line, child)` sees each stdout line as it arrives.
function listen(args, onLine = () => {}, { deadlineMs = 15000, onStderr = () => {} } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [LISTEN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines = [];
    let stderr = '';
    let buffered = '';
    const killer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`listen.mjs ${args.join(' ')} did not exit within ${deadlineMs} ms; stdout: ${lines.join('\n')}`));
    }, deadlineMs);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        lines.push(line);
        onLine(line, child);
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
      onStderr(stderr);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(killer);
      resolve({ code, lines, stderr, partial: buffered });
    });
  });
}

test('prints connect, then one JSON line per event, and exits 0 after --events N', async () => {
  onConnection = (socket) => {
    socket.emit('message:create', { data: { id: 1, attributes: { text: 'a' } }, meta: {} });
    socket.emit('two:args', 'x', { y: 1 });
    socket.emit('not:awaited', 3);
  };
  const r = await listen(['--url', url, '--events', '2', '--timeout', '5000']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.partial, '', 'every line ends with a newline');
  assert.equal(r.lines[0], 'connect');
  assert.deepEqual(JSON.parse(r.lines[1]), { event: 'message:create', data: { data: { id: 1, attributes: { text: 'a' } }, meta: {} } });
  assert.deepEqual(JSON.parse(r.lines[2]), { event: 'two:args', data: 'x', args: ['x', { y: 1 }] });
  assert.equal(r.lines.length, 3, `stops after 2 events: ${r.lines}`);
});

test('sends the token (and strategy) in the handshake auth, as io(url, {auth:{token}}) does', async () => {
  let seen;
  handshake = (socket, next) => {
    seen = socket.handshake.auth;
    next();
  };
  let r = await listen(['--url', url, '--token', 'abc.def.ghi']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.lines, ['connect'], 'without --events it exits once connected');
  assert.deepEqual(seen, { token: 'abc.def.ghi' });

  r = await listen(['--url', url, '--token', 'k', '--strategy', 'apiToken']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(seen, { token: 'k', strategy: 'apiToken' });

  r = await listen(['--url', url, '--auth-json', '{"token":7,"extra":[1]}']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(seen, { token: 7, extra: [1] });

  r = await listen(['--url', url]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(seen, {}, 'no token: empty auth, as io(url)');
});

test('a refused handshake prints connect_error <message> and exits 3', async () => {
  handshake = (socket, next) => next(new Error('Invalid token.'));
  const r = await listen(['--url', url, '--token', 'bad', '--events', '1']);
  assert.equal(r.code, 3, r.stderr);
  assert.deepEqual(r.lines, ['connect_error Invalid token.']);
});

test('an unreachable server is a connect_error (exit 3), or a timeout with --retry (exit 2)', async () => {
  const { h, s, port } = await startServer();
  await stopServer(h, s);
  const dead = `http://127.0.0.1:${port}`;
  let r = await listen(['--url', dead, '--timeout', '3000']);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.lines[0], /^connect_error /);

  r = await listen(['--url', dead, '--timeout', '700', '--retry']);
  assert.equal(r.code, 2, r.stderr);
  assert.deepEqual(r.lines, ['timeout']);
  assert.match(r.stderr, /waiting for connect/);
});

test('--retry connects once the server is up', async () => {
  const { h, s, port } = await startServer();
  await stopServer(h, s);
  let failedOnce;
  const firstFailure = new Promise((resolve) => {
    failedOnce = resolve;
  });
  const run = listen(['--url', `http://127.0.0.1:${port}`, '--retry', '--timeout', '10000', '--events', '1'], undefined, {
    onStderr: (text) => text.includes('retrying after connect_error') && failedOnce(),
  });
  await firstFailure; // the server comes up only after the client has failed once
  const restarted = await startServer(port);
  restarted.s.on('connection', (socket) => socket.emit('hello', 1));
  const r = await run;
  await stopServer(restarted.h, restarted.s);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.lines, ['connect', '{"event":"hello","data":1}']);
  assert.match(r.stderr, /retrying after connect_error/);
});

test('exits 2 with a timeout line when fewer events than asked arrive', async () => {
  onConnection = (socket) => socket.emit('only:one', {});
  const r = await listen(['--url', url, '--events', '2', '--timeout', '800']);
  assert.equal(r.code, 2, r.stderr);
  assert.deepEqual(r.lines, ['connect', '{"event":"only:one","data":{}}', 'timeout']);
  assert.match(r.stderr, /waiting for 2 event\(s\); received 1/);
});

test('--until waits for a named event, printing everything before it', async () => {
  onConnection = (socket) => {
    socket.emit('a', 1);
    socket.emit('b', 2);
    socket.emit('sentinel', 3);
    socket.emit('c', 4);
  };
  const r = await listen(['--url', url, '--until', 'sentinel', '--timeout', '5000']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.lines.map((l) => (l.startsWith('{') ? JSON.parse(l).event : l)), ['connect', 'a', 'b', 'sentinel']);
});

test('--emit sends an event after connect and prints the ack', async () => {
  onConnection = (socket) => {
    socket.on('ping:me', (arg, ack) => ack({ got: arg }, 'second'));
    socket.on('no:arg', (ack) => ack('ok'));
  };
  const r = await listen(['--url', url, '--emit', 'ping:me={"n":1}', '--emit', 'no:arg', '--timeout', '5000']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.lines[0], 'connect');
  assert.deepEqual(r.lines.slice(1).map((l) => JSON.parse(l)).sort((x, y) => x.ack.localeCompare(y.ack)), [
    { ack: 'no:arg', data: ['ok'] },
    { ack: 'ping:me', data: [{ got: { n: 1 } }, 'second'] },
  ]);
});

test('a server-side disconnect prints disconnect <reason> and exits 4', async () => {
  onConnection = (socket) => {
    socket.emit('bye', null);
    socket.disconnect(true);
  };
  // websocket only: a polling transport closed by the server waits up to 30 s for the client's
  // next poll, which would keep this test process alive that long.
  const r = await listen(['--url', url, '--transports', 'websocket', '--events', '5', '--timeout', '5000']);
  assert.equal(r.code, 4, r.stderr);
  assert.deepEqual(r.lines, ['connect', '{"event":"bye","data":null}', 'disconnect io server disconnect']);
});

test('websocket-only transport works', async () => {
  let transport;
  onConnection = (socket) => {
    transport = socket.conn.transport.name;
    socket.emit('x', 1);
  };
  const r = await listen(['--url', url, '--transports', 'websocket', '--events', '1']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(transport, 'websocket');
});

test('bad usage exits 1 with a message', async () => {
  for (const args of [[], ['--url', url, '--events', '-1'], ['--url', url, '--bogus'], ['--url', url, '--auth-json', '[1]'], ['--url', url, '--emit', 'e={']]) {
    const r = await listen(args);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /usage: node listen\.mjs/);
  }
});
