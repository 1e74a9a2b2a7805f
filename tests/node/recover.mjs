#!/usr/bin/env node
// A reconnecting Socket.IO client that resumes with the bridge's offsets, exactly as the README
// tells users to write it (automatic reconnection, polling first then WebSocket, the browser
// default), for the delivery tests.
//
//   node recover.mjs --url URL [--token T] [--offset O]
//
// stdout, one line per fact:
//   connect                                                  each (re)connection
//   {"event":"<name>","data":<first argument>,"offset":"<last string argument or null>"}
//   disconnect <reason>
// It runs until killed.

import { parseArgs } from 'node:util';
import { io } from 'socket.io-client';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string' },
    token: { type: 'string' },
    offset: { type: 'string' },
  },
});
if (!opts.url) {
  process.stderr.write('recover.mjs: --url is required\n');
  process.exit(1);
}
const url = opts.url;
const token = opts.token;

// The README's client, word for word.
let offset;
const socket = io(url, { auth: (cb) => cb({ token, offset }) });
socket.onAny((...args) => { const last = args[args.length - 1]; if (typeof last === "string") offset = last; });

if (opts.offset !== undefined) offset = opts.offset;

const line = (text) => process.stdout.write(`${text}\n`);
process.stdout.on('error', () => process.exit(0));

socket.on('connect', () => line('connect'));
socket.on('disconnect', (reason) => line(`disconnect ${reason}`));
socket.on('connect_error', (err) => process.stderr.write(`recover.mjs: connect_error ${err?.message}\n`));
socket.onAny((event, ...args) => {
  const last = args[args.length - 1];
  line(JSON.stringify({ event, data: args.length > 0 ? args[0] : null, offset: typeof last === 'string' ? last : null }));
});
