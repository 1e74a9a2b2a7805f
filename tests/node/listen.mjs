#!/usr/bin/env node
// A Socket.IO client on the command line, for tests written in other languages.
//
// It connects the way the plugin's README tells users to (`io(url, { auth: { token } })`), prints
// what happens as one line each on stdout, and exits when it has seen what it was asked to wait
// for, or when the deadline passes.
//
//   node listen.mjs --url URL [--token T] [--strategy apiToken] [--events N] [--until EVENT]
//                   [--timeout MS] [--path /socket.io] [--transports polling,websocket]
//                   [--auth-json JSON] [--emit EVENT[=JSON]]... [--retry]
//
// stdout, one line per fact, in the order they happen:
//   connect                              the handshake succeeded (rooms are joined by then)
//   connect_error <message>              the server refused the handshake (or could not be reached)
//   {"event":"<name>","data":<first argument>}           an event; "args" is added when the
//                                                        server sent more than one argument
//   {"ack":"<name>","data":[<ack arguments>]}            the server's ack of an --emit
//   disconnect <reason>                  the server or transport closed the connection
//   timeout                              the deadline passed first
// Diagnostics go to stderr.
//
// Exit status: 0 done (connected, N events seen if --events, --until seen if given, every --emit
// acknowledged),
// 1 bad usage, 2 timeout, 3 connect_error, 4 disconnected before done.

import { parseArgs } from 'node:util';
import { io } from 'socket.io-client';

const USAGE = `usage: node listen.mjs --url URL [--token T] [--strategy apiToken] [--events N]
       [--until EVENT] [--timeout MS] [--path P] [--transports LIST] [--auth-json JSON]
       [--emit EVENT[=JSON]]... [--retry]`;

export const EXIT = Object.freeze({ ok: 0, usage: 1, timeout: 2, connectError: 3, disconnect: 4 });

function usage(message) {
  process.stderr.write(`listen.mjs: ${message}\n${USAGE}\n`);
  process.exit(EXIT.usage);
}

function parse(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      options: {
        url: { type: 'string' },
        token: { type: 'string' },
        strategy: { type: 'string' },
        events: { type: 'string' },
        until: { type: 'string' },
        timeout: { type: 'string', default: '10000' },
        path: { type: 'string', default: '/socket.io' },
        transports: { type: 'string' },
        'auth-json': { type: 'string' },
        emit: { type: 'string', multiple: true, default: [] },
        retry: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values;
  } catch (err) {
    usage(err.message);
  }
  if (parsed.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(EXIT.ok);
  }
  if (!parsed.url) usage('--url is required');

  const nonNegative = (name, text) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 0) usage(`--${name} must be a non-negative integer, got ${JSON.stringify(text)}`);
    return n;
  };
  const timeout = nonNegative('timeout', parsed.timeout);
  const events = parsed.events === undefined ? undefined : nonNegative('events', parsed.events);

  let auth = {};
  if (parsed['auth-json'] !== undefined) {
    try {
      auth = JSON.parse(parsed['auth-json']);
    } catch (err) {
      usage(`--auth-json is not JSON: ${err.message}`);
    }
    if (auth === null || typeof auth !== 'object' || Array.isArray(auth)) usage('--auth-json must be a JSON object');
  }
  if (parsed.token !== undefined) auth.token = parsed.token;
  if (parsed.strategy !== undefined) auth.strategy = parsed.strategy;

  const emits = parsed.emit.map((spec) => {
    const eq = spec.indexOf('=');
    if (eq < 0) return { event: spec, args: [] };
    const event = spec.slice(0, eq);
    try {
      return { event, args: [JSON.parse(spec.slice(eq + 1))] };
    } catch (err) {
      return usage(`--emit ${event}: argument is not JSON: ${err.message}`);
    }
  });
  for (const e of emits) if (!e.event) usage('--emit needs an event name');

  const transports = parsed.transports?.split(',').map((t) => t.trim()).filter(Boolean);
  return { url: parsed.url, auth, events, until: parsed.until, timeout, path: parsed.path, transports, emits, retry: parsed.retry };
}

function line(text) {
  // Writes to pipes and files are synchronous on Linux: a line is out before the next one and
  // before any exit.
  process.stdout.write(`${text}\n`);
}

// The reader went away (EPIPE): nobody is left to tell anything.
process.stdout.on('error', () => process.exit(process.exitCode ?? EXIT.ok));

function main() {
  const opts = parse(process.argv.slice(2));
  const started = Date.now();
  let socket;
  let received = 0;
  let finished = false;

  const finish = (code, why) => {
    if (finished) return;
    finished = true;
    if (why) process.stderr.write(`listen.mjs: ${why}\n`);
    clearTimeout(timer);
    clearTimeout(retryTimer);
    process.exitCode = code;
    if (socket) {
      socket.offAny();
      socket.removeAllListeners();
      socket.io.removeAllListeners();
      // Close cleanly so the server sees the transport close at once (a process killed
      // mid-connection leaves the server waiting for its close timeout), then leave when the
      // connection is gone, or after a short grace period.
      socket.close();
    }
    setTimeout(() => process.exit(code), 1000).unref();
  };

  let connected = false;
  let pendingAcks = opts.emits.length;
  let untilSeen = false;
  // Done when what was asked for has been seen and every --emit has been acknowledged.
  const check = () => {
    const eventsDone = opts.events === undefined || received >= opts.events;
    const untilDone = opts.until === undefined || untilSeen;
    if (eventsDone && untilDone && pendingAcks === 0) finish(EXIT.ok);
  };

  let retryTimer;
  const timer = setTimeout(() => {
    line('timeout');
    const waited = [];
    if (!connected) waited.push('connect');
    if (opts.events !== undefined && received < opts.events) waited.push(`${opts.events} event(s)`);
    if (opts.until !== undefined && !untilSeen) waited.push(`event ${opts.until}`);
    if (pendingAcks > 0) waited.push(`${pendingAcks} ack(s)`);
    finish(EXIT.timeout, `timeout after ${opts.timeout} ms waiting for ${waited.join(', ')}; received ${received} event(s)`);
  }, opts.timeout);

  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      if (finished) process.exit(process.exitCode);
      finish(128 + (signal === 'SIGINT' ? 2 : 15), `stopped by ${signal}`);
    });
  }

  const connect = () => {
    socket = io(opts.url, {
      auth: opts.auth,
      path: opts.path,
      reconnection: false,
      forceNew: true,
      ...(opts.transports ? { transports: opts.transports } : {}),
    });

    socket.on('connect', () => {
      connected = true;
      line('connect');
      for (const { event, args } of opts.emits) {
        socket.emit(event, ...args, (...ack) => {
          line(JSON.stringify({ ack: event, data: ack }));
          pendingAcks -= 1;
          check();
        });
      }
      check();
    });

    socket.on('connect_error', (err) => {
      // A refused handshake (server middleware error) has no `type`; a transport failure has
      // type "TransportError" and is retried with --retry until the deadline.
      if (opts.retry && err?.type === 'TransportError' && Date.now() - started < opts.timeout) {
        process.stderr.write(`listen.mjs: retrying after connect_error ${err.message}\n`);
        socket.removeAllListeners();
        socket.close();
        retryTimer = setTimeout(connect, 100);
        return;
      }
      const message = err?.message ?? String(err);
      line(`connect_error ${message}`);
      finish(EXIT.connectError, err?.data !== undefined ? `connect_error data: ${JSON.stringify(err.data)}` : undefined);
    });

    socket.on('disconnect', (reason) => {
      line(`disconnect ${reason}`);
      finish(EXIT.disconnect, `disconnected (${reason}) after ${received} event(s)`);
    });

    socket.onAny((event, ...args) => {
      const record = { event, data: args.length > 0 ? args[0] : null };
      if (args.length > 1) record.args = args;
      line(JSON.stringify(record));
      received += 1;
      if (event === opts.until) untilSeen = true;
      check();
    });
  };

  connect();
}

main();
