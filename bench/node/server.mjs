// The benchmark's baseline: a minimal socket.io 4.8 server with default options.
//
// Every client that connects to the default namespace joins one room (the role room the bridge
// would put it in). A control connection (plain TCP, one command per line) tells it what to
// broadcast, so the load tool drives this server and the bridge with the same clients and the
// same payloads:
//   payload <event> <json>   the event name and payload to broadcast from now on
//   emit <id>                set payload.data.id = <id> and broadcast it to the room
//   burst <id> <n>           n broadcasts in one go, ids id, id+1, … (answers "ok" when queued)
//   count                    answers "count <connected clients>"
//
// Usage: node server.mjs --port 40001 --control-port 40002 [--room Public]
//   [--ping-interval MS --ping-timeout MS]   (socket.io's pingInterval / pingTimeout)
// Prints "ready" on stdout once both ports listen. Everything listens on 127.0.0.1.

import http from 'node:http';
import net from 'node:net';
import { Server } from 'socket.io';

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i === -1) {
    if (fallback === undefined) {
      console.error(`server.mjs: --${name} is required`);
      process.exit(2);
    }
    return fallback;
  }
  return process.argv[i + 1];
}

const port = Number(option('port'));
const controlPort = Number(option('control-port'));
const room = option('room', 'Public');

const httpServer = http.createServer();
const pingInterval = Number(option('ping-interval', '25000'));
const pingTimeout = Number(option('ping-timeout', '20000'));
const io = new Server(httpServer, { pingInterval, pingTimeout });
io.on('connection', (socket) => {
  socket.join(room);
});

let event = 'message:create';
let payload = { data: { id: 0, attributes: {} }, meta: {} };

function command(line, reply) {
  if (line.startsWith('emit ')) {
    payload.data.id = Number(line.slice(5));
    io.to(room).emit(event, payload);
  } else if (line.startsWith('burst ')) {
    const [first, n] = line.slice(6).split(' ').map(Number);
    for (let k = 0; k < n; k++) {
      payload.data.id = first + k;
      io.to(room).emit(event, payload);
    }
    reply('ok');
  } else if (line.startsWith('payload ')) {
    const rest = line.slice(8);
    const space = rest.indexOf(' ');
    event = rest.slice(0, space);
    payload = JSON.parse(rest.slice(space + 1));
    reply('ok');
  } else if (line === 'count') {
    reply(`count ${io.engine.clientsCount}`);
  } else if (line.length > 0) {
    reply(`error unknown command`);
  }
}

const control = net.createServer((conn) => {
  conn.setNoDelay(true);
  let buffered = '';
  const reply = (text) => conn.write(`${text}\n`);
  conn.on('data', (chunk) => {
    buffered += chunk.toString('utf8');
    let nl;
    while ((nl = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      try {
        command(line, reply);
      } catch (e) {
        reply(`error ${String(e).replaceAll('\n', ' ')}`);
      }
    }
  });
  conn.on('error', () => {});
});

httpServer.listen(port, '127.0.0.1', () => {
  control.listen(controlPort, '127.0.0.1', () => {
    console.log('ready');
  });
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    io.close();
    control.close();
    process.exit(0);
  });
}
