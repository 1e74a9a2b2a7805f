// End-to-end test: content changed through a real Strapi 4's REST API reaches socket.io clients of
// strapi-io-bridge as `<singularName>:<action>` events whose payload equals what the same REST call
// returned. Run by tests/e2e/run.sh, which provides:
//
//   STRAPI_URL          the running Strapi (app: tests/e2e/strapi)
//   BRIDGE_URL          the running bridge; empty = only the Strapi fixture checks run
//   E2E_FIXTURE_FILE    JSON written by the app's bootstrap (users, their ids and roles)
//   E2E_JWT_SECRET      the app's JWT_SECRET, to sign tokens Strapi would not issue (expired,
//                       for a blocked user)
//   E2E_EVENT_TIMEOUT_MS  how long to wait for one event (default 15000)

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Client, expectEvent } from './e2e-client.mjs';

const STRAPI_URL = mustEnv('STRAPI_URL').replace(/\/$/, '');
const BRIDGE_URL = (process.env.BRIDGE_URL ?? '').replace(/\/$/, '');
const FIXTURE = JSON.parse(readFileSync(mustEnv('E2E_FIXTURE_FILE'), 'utf8'));
const JWT_SECRET = mustEnv('E2E_JWT_SECRET');
const EVENT_TIMEOUT_MS = Number(process.env.E2E_EVENT_TIMEOUT_MS ?? 15000);
const REQUEST_TIMEOUT_MS = 15000;

function mustEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; run this test through tests/e2e/run.sh`);
  return value;
}

// ---------------------------------------------------------------------------------------------
// Strapi REST

async function rest(method, path, { token, body, base = STRAPI_URL } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(`${base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (err) {
    throw new Error(`${method} ${path}: request failed: ${err.message}`);
  }
  const text = await res.text();
  let json;
  try {
    json = text === '' ? null : JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, body: json };
}

async function expectStatus(status, method, path, opts) {
  const res = await rest(method, path, opts);
  assert.equal(res.status, status, `${method} ${path} as ${opts?.token ? 'a user' : 'Public'}: expected ${status}, got ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

// The role may do it: 200, or 404 when the entry does not exist (403 would mean no permission).
async function expectAllowed(method, path, opts) {
  const res = await rest(method, path, opts);
  assert.ok([200, 404].includes(res.status), `${method} ${path} as ${opts?.token ? 'a user' : 'Public'}: expected 200 or 404, got ${res.status} ${JSON.stringify(res.body)}`);
}

// A successful write through REST: returns the response body `{data:{id,attributes}, meta:{}}`.
async function write(method, path, token, body) {
  const res = await expectStatus(200, method, path, { token, body });
  assert.ok(res?.data?.id !== undefined && res.data.attributes, `${method} ${path}: unexpected body ${JSON.stringify(res)}`);
  assert.deepEqual(res.meta, {}, `${method} ${path}: meta`);
  return res;
}

async function login(identifier, password) {
  const res = await rest('POST', '/api/auth/local', { body: { identifier, password } });
  assert.equal(res.status, 200, `login ${identifier}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

// HS256 JWT as users-permissions signs it: the secret's UTF-8 bytes are the key.
function signJwt(payload, secret = JWT_SECRET) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(payload)}`;
  const signature = createHmac('sha256', Buffer.from(secret, 'utf8')).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

// The socket.io clients (Client, expectEvent) are in ./e2e-client.mjs, shared with the other
// end-to-end suite.

// ---------------------------------------------------------------------------------------------

const alice = FIXTURE.users.alice;
const bob = FIXTURE.users.bob;
let aliceJwt;

before(async () => {
  const res = await login(alice.email, alice.password);
  assert.equal(res.user.id, alice.id, 'login returned another user than the bootstrap created');
  aliceJwt = res.jwt;
});

describe('Strapi fixture (tests/e2e/strapi)', () => {
  test('Public may read messages and the homepage, nothing else', async () => {
    await expectStatus(200, 'GET', '/api/messages');
    await expectAllowed('GET', '/api/homepage'); // 404 while there is no entry
    await expectStatus(403, 'GET', '/api/chats');
    await expectStatus(403, 'GET', '/api/articles');
    await expectStatus(403, 'POST', '/api/messages', { body: { data: { text: 'no' } } });
    await expectStatus(403, 'PUT', '/api/homepage', { body: { data: { title: 'no' } } });
  });

  test('Authenticated may read and write messages, chats, articles and the homepage', async () => {
    const token = aliceJwt;
    for (const path of ['/api/messages', '/api/chats', '/api/articles']) {
      await expectStatus(200, 'GET', path, { token });
    }
    await expectAllowed('GET', '/api/homepage', { token });
    // Allowed (404 for a missing entry, not 403).
    await expectStatus(404, 'DELETE', '/api/messages/999999', { token });
    await expectStatus(404, 'DELETE', '/api/chats/999999', { token });
    await expectStatus(404, 'PUT', '/api/articles/999999', { token, body: { data: { title: 'x' } } });
  });

  test('the blocked user cannot log in; a bad token is refused', async () => {
    const res = await rest('POST', '/api/auth/local', { body: { identifier: bob.email, password: bob.password } });
    assert.equal(res.status, 400, JSON.stringify(res.body));
    await expectStatus(401, 'GET', '/api/messages', { token: 'not-a-jwt' });
    await expectStatus(401, 'GET', '/api/messages', { token: signJwt({ id: bob.id, iat: nowSeconds() }) });
  });
});

describe('bridge: events for REST changes', { skip: BRIDGE_URL ? false : 'BRIDGE_URL not set (run.sh --without-bridge)' }, () => {
  let pub;
  let auth;
  const clients = [];
  const make = (name, token) => {
    const c = new Client(name, token);
    clients.push(c);
    return c;
  };

  before(async () => {
    pub = make('Public');
    auth = make('Authenticated', aliceJwt);
    await Promise.all([pub.connected(), auth.connected()]);
  });

  after(() => {
    for (const c of clients) c.close();
  });

  test('handshake: invalid, expired and foreign tokens are refused with "Invalid token."', async () => {
    const cases = {
      garbage: 'not-a-jwt',
      expired: signJwt({ id: alice.id, iat: nowSeconds() - 3600, exp: nowSeconds() - 60 }),
      'wrong secret': signJwt({ id: alice.id, iat: nowSeconds() }, 'some-other-secret'),
    };
    for (const [what, token] of Object.entries(cases)) {
      const c = make(`token ${what}`, token);
      assert.equal(await c.refusal(), 'Invalid token.', `token ${what}`);
      c.close();
    }
  });

  test('handshake: a blocked user is refused with "Invalid credentials"', async () => {
    const c = make('blocked bob', signJwt({ id: bob.id, iat: nowSeconds() }));
    assert.equal(await c.refusal(), 'Invalid credentials');
    c.close();
  });

  test('handshake: a token Strapi did not issue but signed with JWT_SECRET is accepted', async () => {
    const c = make('self-signed alice', signJwt({ id: alice.id, iat: nowSeconds(), exp: nowSeconds() + 600 }));
    await c.connected();
    c.close();
  });

  test('collection and single types: create, update, publish, unpublish, delete', async () => {
    const token = aliceJwt;
    const both = [pub, auth];
    // Performs a REST write and checks that exactly the listed clients get `event` with the
    // response as payload. A client not listed must not get it: every later expectEvent on that
    // client would see it first and fail.
    const step = async (what, event, to, method, path, body) => {
      const res = await write(method, path, token, body);
      for (const c of to) await expectEvent(c, event, { data: res.data, meta: {} }, what);
      return res;
    };

    const chat = await step('create chat', 'chat:create', [auth], 'POST', '/api/chats', { data: { name: 'general' } });

    const full = await step('create published message', 'message:create', both, 'POST', '/api/messages', {
      data: {
        text: 'Hello world',
        secret: 'top-secret',
        likes: 42,
        score: 12.345,
        meta: { n: 1, tags: ['a', 'b'], nested: { x: true } },
        flag: true,
        when: '2024-01-01T10:00:00.000Z',
        day: '2024-01-01',
        big: '9007199254740993',
        rich: '# Title\n\n**bold**',
        mood: 'happy',
        displayTitle: 'Camel Case Title',
        body: 'long text',
        ratio: 0.5,
        at: '12:34:56.000',
        slug: `hello-world-${Date.now().toString(36)}`, // unique: the test may run again on the same database
        contact: 'c@example.com',
        blocks: [{ type: 'paragraph', children: [{ type: 'text', text: 'hi' }] }],
        chat: chat.data.id,
        seo: { metaTitle: 'SEO title', metaDescription: 'SEO description' },
      },
    });
    assert.ok(full.data.attributes.publishedAt, 'a REST create publishes by default');
    assert.ok(!('secret' in full.data.attributes), 'REST hides the private attribute');

    const draft = await step('create draft', 'message:create', both, 'POST', '/api/messages', {
      data: { text: 'Draft', likes: 1, publishedAt: null, chat: chat.data.id },
    });
    assert.equal(draft.data.attributes.publishedAt, null);
    const d = `/api/messages/${draft.data.id}`;
    const m = `/api/messages/${full.data.id}`;

    await step('update message', 'message:update', both, 'PUT', m, { data: { text: 'Hello world (edited)', likes: 43 } });
    await step('update draft', 'message:update', both, 'PUT', d, { data: { text: 'Draft (edited)' } });
    await step('publish draft', 'message:publish', both, 'PUT', d, { data: { publishedAt: '2024-06-01T12:00:00.000Z' } });
    await step('unpublish', 'message:unpublish', both, 'PUT', d, { data: { publishedAt: null } });
    await step('delete message', 'message:delete', both, 'DELETE', d);

    await step('update chat', 'chat:update', [auth], 'PUT', `/api/chats/${chat.data.id}`, { data: { name: 'general (renamed)' } });
    await step('create article (table legacy_articles)', 'article:create', [auth], 'POST', '/api/articles', {
      data: { title: 'Legacy', headlineText: 'Headline' },
    });

    await step('homepage first PUT', 'homepage:createOrUpdate', both, 'PUT', '/api/homepage', { data: { title: 'Welcome' } });
    await step('homepage second PUT', 'homepage:createOrUpdate', both, 'PUT', '/api/homepage', { data: { title: 'Welcome v2' } });
    await step('homepage unpublish', 'homepage:unpublish', both, 'PUT', '/api/homepage', { data: { publishedAt: null } });
    await step('homepage publish', 'homepage:publish', both, 'PUT', '/api/homepage', { data: { publishedAt: '2024-06-01T12:00:00.000Z' } });
    await step('homepage delete', 'homepage:delete', both, 'DELETE', '/api/homepage');

    await step('delete chat', 'chat:delete', [auth], 'DELETE', `/api/chats/${chat.data.id}`);

    // Several writes before looking at any event: each arrives, in commit order.
    const burst = [];
    for (let likes = 100; likes < 105; likes += 1) burst.push(await write('PUT', m, token, { data: { likes } }));
    for (const [i, res] of burst.entries()) {
      for (const c of both) await expectEvent(c, 'message:update', { data: res.data, meta: {} }, `burst update ${i + 1} of ${burst.length}`);
    }

    for (const c of both) {
      assert.deepEqual(c.events.map((e) => e.event), [], `${c.name} received events no write accounts for`);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The bridge as a reverse proxy in front of Strapi ([proxy] upstream, set by run.sh)

// A raw request: status, headers and body bytes exactly as received.
async function raw(base, method, path, { token, headers = {}, body } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  const res = await fetch(`${base}${path}`, { method, headers: h, body, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

// Headers a proxy legitimately changes: per-hop framing, and values that differ per request.
const PER_REQUEST_HEADERS = new Set(['date', 'connection', 'keep-alive', 'transfer-encoding', 'x-response-time']);

function comparable(res) {
  const headers = {};
  for (const [k, v] of res.headers) if (!PER_REQUEST_HEADERS.has(k)) headers[k] = v;
  return { status: res.status, headers, body: res.body.toString('base64') };
}

// What a read event carries: the response with populated relations, media and components
// removed (every attribute that is not a plain value of the entry).
function stripped(body, populated) {
  const entry = (e) => ({ id: e.id, attributes: Object.fromEntries(Object.entries(e.attributes).filter(([k]) => !populated.includes(k))) });
  return { data: Array.isArray(body.data) ? body.data.map(entry) : entry(body.data), meta: body.meta };
}

describe('bridge: reverse proxy to Strapi and read events', { skip: BRIDGE_URL ? false : 'BRIDGE_URL not set (run.sh --without-bridge)' }, () => {
  let pub;
  let auth;
  let message;
  const clients = [];
  const viaProxy = { base: BRIDGE_URL };

  before(async () => {
    pub = new Client('Public');
    auth = new Client('Authenticated', aliceJwt);
    clients.push(pub, auth);
    await Promise.all([pub.connected(), auth.connected()]);
    // An entry to read, with a relation and a component to populate.
    const chat = await write('POST', '/api/chats', aliceJwt, { data: { name: 'proxy chat' } });
    await expectEvent(auth, 'chat:create', { data: chat.data, meta: {} }, 'create chat');
    message = await write('POST', '/api/messages', aliceJwt, {
      data: { text: 'read me', likes: 7, secret: 's', chat: chat.data.id, seo: { metaTitle: 'T', metaDescription: 'D' } },
    });
    for (const c of clients) await expectEvent(c, 'message:create', { data: message.data, meta: {} }, 'create message');
  });

  after(() => {
    for (const c of clients) c.close();
  });

  test('proxied responses equal direct ones (status, headers, body)', async () => {
    const cases = [
      ['GET', '/api/messages', undefined],
      ['GET', `/api/messages/${message.data.id}`, undefined],
      ['GET', `/api/messages/${message.data.id}?populate=*`, aliceJwt],
      ['GET', '/api/messages?fields[0]=text&pagination[pageSize]=1', undefined],
      ['GET', '/api/messages/999999', aliceJwt],
      ['GET', '/api/chats', undefined],
      ['GET', '/api/chats', aliceJwt],
      ['GET', '/api/messages', 'not-a-jwt'],
      ['GET', '/_health', undefined],
      ['GET', '/no/such/route', undefined],
      ['DELETE', '/api/messages/999999', aliceJwt],
    ];
    for (const [method, path, token] of cases) {
      const direct = comparable(await raw(STRAPI_URL, method, path, { token }));
      const proxied = comparable(await raw(BRIDGE_URL, method, path, { token }));
      assert.deepStrictEqual(proxied, direct, `${method} ${path}`);
    }
    // The successful reads through the proxy emitted, in request order (the payloads are
    // checked in the read-event test below).
    const reads = ['message:find', 'message:findOne', 'message:findOne', 'message:find'];
    for (const [c, expected] of [[pub, reads], [auth, [...reads, 'chat:find']]]) {
      const got = [];
      for (const e of expected) got.push((await c.next(e)).event);
      assert.deepEqual(got, expected, `${c.name}: read events of the comparison requests`);
    }
  });

  test('uploads and large bodies pass through', async () => {
    // A large JSON body (700 kB of text) in and out.
    const long = 'x'.repeat(700 * 1024);
    const res = await rest('POST', '/api/messages', { token: aliceJwt, body: { data: { text: 'large', body: long } }, ...viaProxy });
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 300));
    assert.equal(res.body.data.attributes.body, long);
    for (const c of clients) await expectEvent(c, 'message:create', { data: res.body.data, meta: {} }, 'create large message');

    // A 3 MB multipart upload through the proxy, then the file downloaded through it.
    const file = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < file.length; i += 1) file[i] = i % 251;
    const form = new FormData();
    form.append('files', new Blob([file], { type: 'application/octet-stream' }), 'proxy-upload.bin');
    const up = await fetch(`${BRIDGE_URL}/api/upload`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${aliceJwt}` },
      body: form,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const uploaded = await up.json();
    assert.equal(up.status, 200, JSON.stringify(uploaded));
    assert.equal(uploaded[0].size, Math.round((file.length / 1000) * 100) / 100, 'Strapi saw the whole file (size in kB)');
    const down = await raw(BRIDGE_URL, 'GET', uploaded[0].url);
    assert.equal(down.status, 200);
    assert.ok(down.body.equals(file), 'the downloaded file equals the uploaded one');
    const direct = await raw(STRAPI_URL, 'GET', uploaded[0].url);
    assert.ok(direct.body.equals(down.body));
  });

  test('reads through the proxy emit find/findOne to the roles holding that action', async () => {
    const id = message.data.id;
    // Straight to Strapi: nothing. Errors emit nothing.
    await expectStatus(200, 'GET', '/api/messages');
    await expectStatus(200, 'GET', `/api/messages/${id}`);
    await rest('GET', '/api/messages/999999', viaProxy);
    await rest('GET', '/api/chats', viaProxy); // 403 for Public

    const list = await expectStatus(200, 'GET', '/api/messages', viaProxy);
    // Read events leave in request order: this is the first event each client sees.
    for (const c of clients) await expectEvent(c, 'message:find', list, 'GET /api/messages through the proxy');

    const one = await expectStatus(200, 'GET', `/api/messages/${id}`, viaProxy);
    for (const c of clients) await expectEvent(c, 'message:findOne', one, `GET /api/messages/${id} through the proxy`);

    // Public may not find chats: only Authenticated gets chat:find, Public's next event is
    // the following message read.
    const chats = await expectStatus(200, 'GET', '/api/chats', { token: aliceJwt, ...viaProxy });
    await expectEvent(auth, 'chat:find', chats, 'GET /api/chats through the proxy');

    // Populated relation and component are not in the event.
    const populated = await expectStatus(200, 'GET', `/api/messages/${id}?populate=*`, { token: aliceJwt, ...viaProxy });
    assert.ok(populated.data.attributes.chat?.data, 'populate returned the relation');
    assert.ok(populated.data.attributes.seo, 'populate returned the component');
    const event = stripped(populated, ['chat', 'seo', 'watchChats', 'author', 'image', 'gallery']);
    assert.ok(!('chat' in event.data.attributes));
    for (const c of clients) await expectEvent(c, 'message:findOne', event, 'GET with populate through the proxy');

    for (const c of clients) {
      assert.deepEqual(c.events.map((e) => e.event), [], `${c.name} received events no read accounts for`);
    }
  });
});
