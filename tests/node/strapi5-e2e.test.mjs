// End-to-end test against a real Strapi 5: content changed through Strapi's REST and admin
// routes reaches socket.io clients of strapi-io-bridge as `<singularName>:<action>` events, one
// per document and operation, whose payload equals Strapi 5's REST body for that version. Run
// by `tests/e2e/run.sh --strapi 5`, which provides:
//
//   STRAPI_URL          the running Strapi 5 (app: tests/e2e/strapi5, jwtManagement 'refresh')
//   BRIDGE_URL          the running bridge; empty = only the Strapi fixture checks run
//   E2E_FIXTURE_FILE    JSON written by the app's bootstrap (users, their ids and roles)
//   E2E_JWT_SECRET      the app's JWT_SECRET, to sign tokens Strapi would not issue
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
  if (!value) throw new Error(`${name} is not set; run this test through tests/e2e/run.sh --strapi 5`);
  return value;
}

// ---------------------------------------------------------------------------------------------
// Strapi REST

async function rest(method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(`${STRAPI_URL}${path}`, {
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
  return { status: res.status, body: json, cookies: res.headers.getSetCookie?.() ?? [] };
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

// A successful write through REST: returns Strapi 5's flat body `{data:{id,documentId,...}, meta:{}}`.
async function write(method, path, token, body, status = 200) {
  const res = await expectStatus(status, method, path, { token, body });
  assert.ok(res?.data?.id !== undefined && res.data.documentId && !res.data.attributes, `${method} ${path}: unexpected body ${JSON.stringify(res)}`);
  assert.deepEqual(res.meta, {}, `${method} ${path}: meta`);
  return res;
}

// A GET that must succeed: the entry as the content API returns it.
async function read(path, token) {
  return expectStatus(200, 'GET', path, { token });
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
let aliceRefresh;
let admin;

const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
const accessToken = (userId, { iat = nowSeconds(), exp = iat + 600, secret } = {}) =>
  signJwt({ userId: String(userId), sessionId: 'e2e-session', type: 'access', iat, exp }, secret);

// Admin routes (the content manager's publish/unpublish, roles, API tokens) as the admin.
const adminCall = (method, path, body) => expectStatus(200, method, path, { token: admin, body });
const unpublished = (body) => ({ data: { ...body.data, publishedAt: null }, meta: {} });

before(async () => {
  const res = await rest('POST', '/api/auth/local', { body: { identifier: alice.email, password: alice.password } });
  assert.equal(res.status, 200, `login alice: ${res.status} ${JSON.stringify(res.body)}`);
  assert.equal(res.body.user.id, alice.id, 'login returned another user than the bootstrap created');
  aliceJwt = res.body.jwt;
  aliceRefresh = res.cookies.map((c) => /^strapi_up_refresh=([^;]+)/.exec(c)?.[1]).find(Boolean);
  const reg = await rest('POST', '/admin/register-admin', {
    body: { email: 'admin@example.com', password: 'Admin-pass-1', firstname: 'Ada', lastname: 'Admin' },
  });
  assert.ok([200, 201].includes(reg.status), `register admin: ${reg.status} ${JSON.stringify(reg.body)}`);
  admin = reg.body.data.token;
  const fr = await rest('POST', '/i18n/locales', { token: admin, body: { name: 'French (fr)', code: 'fr', isDefault: false } });
  assert.ok([200, 201].includes(fr.status), `create locale fr: ${fr.status} ${JSON.stringify(fr.body)}`);
});

describe('Strapi 5 fixture (tests/e2e/strapi5)', () => {
  test('login issues a refresh-mode session access token (jwtManagement: refresh)', () => {
    const claims = claimsOf(aliceJwt);
    assert.equal(claims.type, 'access');
    assert.equal(claims.userId, String(alice.id));
    assert.ok(claims.sessionId, 'session id');
    assert.equal(claims.exp - claims.iat, 600, 'ten-minute access token');
    assert.ok(aliceRefresh, 'refresh token cookie');
    assert.equal(claimsOf(aliceRefresh).type, 'refresh');
  });

  test('Public may read messages and the homepage, nothing else', async () => {
    await expectStatus(200, 'GET', '/api/messages');
    await expectAllowed('GET', '/api/homepage');
    await expectStatus(403, 'GET', '/api/chats');
    await expectStatus(403, 'GET', '/api/articles');
  });

  test('Strapi refuses the legacy {id} shape in refresh mode', async () => {
    await expectStatus(401, 'GET', '/api/chats', { token: signJwt({ id: alice.id, iat: nowSeconds(), exp: nowSeconds() + 600 }) });
    await expectStatus(200, 'GET', '/api/chats', { token: accessToken(alice.id) });
  });
});

describe('bridge: events for Strapi 5 REST and admin changes', { skip: BRIDGE_URL ? false : 'BRIDGE_URL not set (run.sh --without-bridge)' }, () => {
  let pub;
  let auth;
  let tok;
  let tokenId;
  const clients = [];
  const make = (name, token, strategy) => {
    const c = new Client(name, token, strategy);
    clients.push(c);
    return c;
  };

  before(async () => {
    // An API token reading messages and chats, as the admin panel creates it.
    const created = await expectStatus(201, 'POST', '/admin/api-tokens', {
      token: admin,
      body: { name: 'e2e custom', type: 'custom', lifespan: null, permissions: ['api::message.message.find', 'api::chat.chat.find'] },
    });
    tokenId = created.data.id;
    pub = make('Public');
    auth = make('alice (refresh-mode JWT)', aliceJwt);
    await Promise.all([pub.connected(), auth.connected()]);
    // The bridge learns a new token from the replication stream, a moment after Strapi
    // committed it: until then the handshake is refused. Retry within the event timeout.
    const deadline = Date.now() + EVENT_TIMEOUT_MS;
    for (;;) {
      tok = new Client('API token', created.data.accessKey, 'apiToken');
      try {
        await tok.connected();
        clients.push(tok);
        break;
      } catch (err) {
        tok.close();
        if (err.serverMessage !== 'Invalid token.' || Date.now() > deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  });

  after(() => {
    for (const c of clients) c.close();
  });

  test('handshake: refresh tokens, the legacy shape (refresh mode), expired and foreign tokens get "Invalid token."', async () => {
    const cases = {
      'refresh token': aliceRefresh,
      'legacy {id} shape': signJwt({ id: alice.id, iat: nowSeconds(), exp: nowSeconds() + 600 }),
      expired: accessToken(alice.id, { iat: nowSeconds() - 1200 }),
      'wrong secret': accessToken(alice.id, { secret: 'some-other-secret' }),
      garbage: 'not-a-jwt',
    };
    for (const [what, token] of Object.entries(cases)) {
      const c = make(`token ${what}`, token);
      assert.equal(await c.refusal(), 'Invalid token.', `token ${what}`);
      c.close();
    }
  });

  test('handshake: a blocked user is refused with "Invalid credentials"', async () => {
    const c = make('blocked bob', accessToken(bob.id));
    assert.equal(await c.refusal(), 'Invalid credentials');
    c.close();
  });

  test('documents: create, update, draft edit, publish, unpublish, delete, i18n, single type; revoking find', async () => {
    const token = aliceJwt;
    const all = [pub, auth, tok];
    const readers = [auth, tok]; // chats: not Public
    // Expects `event` with `payload` on exactly the listed clients (a client not listed that
    // got it would fail its next expectEvent or the final emptiness check).
    const expectOn = async (what, event, to, payload) => {
      for (const c of to) await expectEvent(c, event, payload, what);
    };
    const step = async (what, event, to, method, path, body, status) => {
      const res = await write(method, path, token, body, status);
      await expectOn(what, event, to, { data: res.data, meta: {} });
      return res;
    };

    const chat = await step('create chat', 'chat:create', readers, 'POST', '/api/chats', { data: { name: 'general' } }, 201);
    const full = await step('create message (published)', 'message:create', all, 'POST', '/api/messages', {
      data: {
        text: 'Hello world', secret: 'top-secret', likes: 42, score: 12.345,
        meta: { n: 1, tags: ['a', 'b'], nested: { x: true } }, flag: true, when: '2024-01-01T10:00:00.000Z',
        day: '2024-01-01', big: '9007199254740993', rich: '# Title\n\n**bold**', mood: 'happy',
        displayTitle: 'Camel Case Title', body: 'long text', ratio: 0.5, at: '12:34:56',
        slug: `hello-world-${Date.now().toString(36)}`, contact: 'c@example.com',
        blocks: [{ type: 'paragraph', children: [{ type: 'text', text: 'hi' }] }],
        chat: chat.data.documentId, seo: { metaTitle: 'SEO title', metaDescription: 'SEO description' },
      },
    }, 201);
    assert.ok(full.data.publishedAt, 'a REST create publishes by default');
    assert.ok(!('secret' in full.data), 'REST hides the private attribute');
    const draft = await step('create draft', 'message:create', all, 'POST', '/api/messages?status=draft',
      { data: { text: 'Draft', likes: 1 } }, 201);
    assert.equal(draft.data.publishedAt, null);
    const m = `/api/messages/${full.data.documentId}`;
    const d = `/api/messages/${draft.data.documentId}`;

    await step('update the published message', 'message:update', all, 'PUT', m, { data: { text: 'Hello world (edited)', likes: 43 } });
    await step('edit its draft only', 'message:update', all, 'PUT', `${m}?status=draft`, { data: { text: 'Next version (draft)' } });
    await step('PUT on the draft-only message publishes it', 'message:publish', all, 'PUT', d, { data: { text: 'Draft (published)' } });

    const base = '/content-manager/collection-types/api::message.message';
    const beforeUnpublish = await read(d, token);
    await adminCall('POST', `${base}/${draft.data.documentId}/actions/unpublish`, {});
    await expectOn('admin unpublish', 'message:unpublish', all, unpublished(beforeUnpublish));
    await adminCall('POST', `${base}/${draft.data.documentId}/actions/publish`, {});
    await expectOn('admin publish', 'message:publish', all, { ...(await read(d, token)), meta: {} });
    const beforeDelete = await read(d, token);
    await expectStatus(204, 'DELETE', d, { token });
    await expectOn('delete message', 'message:delete', all, { data: beforeDelete.data, meta: {} });

    await step('update chat', 'chat:update', readers, 'PUT', `/api/chats/${chat.data.documentId}`, { data: { name: 'general (renamed)' } });
    const en = await step('create article (i18n, en)', 'article:create', [auth], 'POST', '/api/articles',
      { data: { title: 'Hello', headlineText: 'Headline' } }, 201);
    await step('create its fr locale', 'article:create', [auth], 'PUT', `/api/articles/${en.data.documentId}?locale=fr`, { data: { title: 'Bonjour' } });

    await step('homepage first PUT', 'homepage:createOrUpdate', [pub, auth], 'PUT', '/api/homepage', { data: { title: 'Welcome' } });
    await step('homepage second PUT', 'homepage:createOrUpdate', [pub, auth], 'PUT', '/api/homepage', { data: { title: 'Welcome v2' } });
    const home = await read('/api/homepage', token);
    await adminCall('POST', '/content-manager/single-types/api::homepage.homepage/actions/unpublish', {});
    await expectOn('homepage admin unpublish', 'homepage:unpublish', [pub, auth], unpublished(home));
    const homeDraft = await read('/api/homepage?status=draft', token);
    await expectStatus(204, 'DELETE', '/api/homepage', { token });
    await expectOn('homepage delete', 'homepage:delete', [pub, auth], { data: homeDraft.data, meta: {} });

    const chatBefore = await read(`/api/chats/${chat.data.documentId}`, token);
    await expectStatus(204, 'DELETE', `/api/chats/${chat.data.documentId}`, { token });
    await expectOn('delete chat', 'chat:delete', readers, { data: chatBefore.data, meta: {} });

    // Revoking find: Public's find/findOne on messages (users-permissions role, admin route)
    // and the API token's message find (admin route). Only alice keeps message events.
    const roles = await expectStatus(200, 'GET', '/users-permissions/roles', { token: admin });
    const publicRole = roles.roles.find((r) => r.type === 'public');
    const role = (await expectStatus(200, 'GET', `/users-permissions/roles/${publicRole.id}`, { token: admin })).role;
    for (const action of ['find', 'findOne']) role.permissions['api::message'].controllers.message[action].enabled = false;
    await adminCall('PUT', `/users-permissions/roles/${publicRole.id}`, {
      name: role.name, description: role.description, permissions: role.permissions,
    });
    await adminCall('PUT', `/admin/api-tokens/${tokenId}`, { permissions: ['api::chat.chat.find'] });
    await expectStatus(403, 'GET', '/api/messages');

    // Several writes before looking at any event: each arrives, in commit order.
    const burst = [];
    for (let likes = 100; likes < 105; likes += 1) burst.push(await write('PUT', m, token, { data: { likes } }));
    for (const [i, res] of burst.entries()) {
      await expectEvent(auth, 'message:update', { data: res.data, meta: {} }, `burst update ${i + 1} of ${burst.length} (after revoking find)`);
    }
    // The token still reads chats.
    await step('create chat after the revocation', 'chat:create', readers, 'POST', '/api/chats', { data: { name: 'later' } }, 201);
    // Public still reads the homepage: its next event proves no message event was left behind.
    await step('homepage after the revocation', 'homepage:createOrUpdate', [pub, auth], 'PUT', '/api/homepage', { data: { title: 'Back' } });

    for (const c of all) {
      assert.deepEqual(c.events.map((e) => e.event), [], `${c.name} received events no write accounts for`);
    }
  });
});
