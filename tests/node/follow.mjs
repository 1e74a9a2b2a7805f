#!/usr/bin/env node
// A client following entries across reconnections, exactly as the README's subscriptions section
// tells users to write it (auth.subscriptions and auth.offset from an auth callback), for
// tests/subscriptions.rs.
//
//   node follow.mjs --url URL --subscriptions JSON [--token T]
//
// stdin, one command a line: "disconnect" closes the connection (socket.io-client does not
// reconnect after that by itself); "connect" opens it again, with the current offset and
// subscriptions, as its automatic reconnection does after a network drop.
// stdout, one line per fact:
//   connect                                                  each (re)connection
//   {"event":"<name>","data":<first argument>,"offset":"<last string argument or null>"}
//   disconnect <reason>
// It runs until stdin closes or it is killed.

import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { io } from 'socket.io-client';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string' },
    token: { type: 'string' },
    subscriptions: { type: 'string' },
  },
});
if (!opts.url || !opts.subscriptions) {
  process.stderr.write('follow.mjs: --url and --subscriptions are required\n');
  process.exit(1);
}
const url = opts.url;
const token = opts.token;

const line = (text) => process.stdout.write(`${text}\n`);
process.stdout.on('error', () => process.exit(0));

// The README's client, word for word (the list comes from the command line).
let offset;
const subscriptions = JSON.parse(opts.subscriptions);
const socket = io(url, {
  auth: (cb) => cb({ token, subscribe: "explicit", subscriptions, offset }),
});
socket.onAny((...args) => { const last = args[args.length - 1]; if (typeof last === "string") offset = last; });
socket.on("strapi-io:unsubscribed", ({ type, id }) => {
  const i = subscriptions.findIndex((s) => s.type === type && (s.id ?? null) === id);
  if (i >= 0) subscriptions.splice(i, 1);
});

socket.on('connect', () => line('connect'));
socket.on('disconnect', (reason) => line(`disconnect ${reason}`));
socket.on('connect_error', (err) => process.stderr.write(`follow.mjs: connect_error ${err?.message}\n`));
socket.onAny((event, ...args) => {
  const last = args[args.length - 1];
  line(JSON.stringify({ event, data: args.length > 0 ? args[0] : null, offset: typeof last === 'string' ? last : null }));
});

const commands = createInterface({ input: process.stdin });
commands.on('line', (command) => {
  if (command === 'disconnect') socket.disconnect();
  else if (command === 'connect') socket.connect();
  else process.stderr.write(`follow.mjs: unknown command ${command}\n`);
});
commands.on('close', () => {
  socket.disconnect();
  process.exit(0);
});
