// The socket.io client both end-to-end suites (Strapi 4 and Strapi 5) listen with, made the way
// the plugin's README shows (io(url) or io(url, {auth: {token}})), and the check of one event
// against the REST body it must equal. BRIDGE_URL and E2E_EVENT_TIMEOUT_MS as the suites get them.

import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

const BRIDGE_URL = (process.env.BRIDGE_URL ?? '').replace(/\/$/, '');
const EVENT_TIMEOUT_MS = Number(process.env.E2E_EVENT_TIMEOUT_MS ?? 15000);

export class Client {
  constructor(name, token, strategy) {
    this.name = name;
    this.events = [];
    this.waiter = null;
    const auth = strategy ? { token, strategy } : { token };
    this.socket = token === undefined ? io(BRIDGE_URL) : io(BRIDGE_URL, { auth });
    this.socket.onAny((event, ...args) => {
      this.events.push({ event, args });
      this.wake();
    });
    this.socket.on('disconnect', (reason) => {
      this.disconnected = reason;
      this.wake();
    });
  }

  wake() {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  // Resolves on connect; rejects with the server's connect_error message.
  connected(timeoutMs = EVENT_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${this.name}: not connected to ${BRIDGE_URL} within ${timeoutMs} ms`));
      }, timeoutMs);
      const onConnect = () => {
        cleanup();
        resolve();
      };
      const onError = (err) => {
        cleanup();
        reject(Object.assign(new Error(`${this.name}: connect_error ${err.message}`), { serverMessage: err.message }));
      };
      const cleanup = () => {
        clearTimeout(timer);
        this.socket.off('connect', onConnect);
        this.socket.off('connect_error', onError);
      };
      if (this.socket.connected) return onConnect();
      this.socket.on('connect', onConnect);
      this.socket.on('connect_error', onError);
    });
  }

  // The connect_error message the server answers the handshake with.
  async refusal(timeoutMs = EVENT_TIMEOUT_MS) {
    try {
      await this.connected(timeoutMs);
    } catch (err) {
      if (err.serverMessage !== undefined) return err.serverMessage;
      throw err;
    }
    throw new Error(`${this.name}: connected, but the handshake should have been refused`);
  }

  // The next event not yet taken, waiting up to timeoutMs for it.
  async next(expecting, timeoutMs = EVENT_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    while (this.events.length === 0) {
      if (this.disconnected) throw new Error(`${this.name}: disconnected (${this.disconnected}) while waiting for ${expecting}`);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`${this.name}: no event within ${timeoutMs} ms while waiting for ${expecting}`);
      }
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.events.shift();
  }

  close() {
    this.socket.close();
  }
}

// Takes the client's next event and checks its name and payload.
export async function expectEvent(client, event, payload, after) {
  const got = await client.next(`${event} after ${after}`);
  assert.equal(got.event, event, `${client.name} after ${after}: expected event ${event}, got ${got.event} ${JSON.stringify(got.args)}`);
  // The payload, then the event's offset (the commit LSN and the position in its
  // transaction), which grows from one event to the next.
  assert.equal(got.args.length, 2, `${client.name} ${event} after ${after}: expected the payload and an offset, got ${got.args.length} arguments`);
  assert.deepStrictEqual(got.args[0], payload, `${client.name} ${event} after ${after}: payload differs from the REST response`);
  const offset = got.args[1];
  assert.match(String(offset), /^[0-9A-F]{16}-[0-9A-F]{8}$/, `${client.name} ${event} after ${after}: not an offset: ${JSON.stringify(offset)}`);
  if (client.lastOffset !== undefined) {
    assert.ok(offset > client.lastOffset, `${client.name} ${event} after ${after}: offset ${offset} does not follow ${client.lastOffset}`);
  }
  client.lastOffset = offset;
}
