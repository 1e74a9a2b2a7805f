// Records tests/fixtures/strapi5-recorded.json and tests/fixtures/strapi5.sql from a running
// Strapi 5 (as `tests/e2e/run.sh --strapi 5 --keep --without-bridge` leaves it):
//
//   node tests/e2e/record5.mjs WORK_FOLDER
//
// 1. Signs in (alice; an admin is registered), creates the `fr` locale and two API tokens
//    (full access, and custom with `find` on messages), and dumps the database: the fixture
//    the recorded writes are replayed on (tests/fixtures/strapi5.sql).
// 2. Creates a test_decoding slot, then changes content through Strapi's REST and admin
//    routes. After each request it reads the slot: the row changes of the content tables, per
//    transaction, in the text form pgoutput sends, next to the REST body the event's payload
//    must equal.
//
// The fixtures carry the run's random secrets: after recording, copy JWT_SECRET,
// API_TOKEN_SALT and the two API tokens from strapi5.sql's header into
// tests/support/bridge.rs (…5 constants) and src/demo.rs (JWT_SECRET5, API_TOKEN_SALT5); the
// tests check that they match.
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const work = process.argv[2];
if (!work) throw new Error('usage: node tests/e2e/record5.mjs WORK_FOLDER');
const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const app = path.join(work, 'app');
const env = Object.fromEntries(
  fs.readFileSync(path.join(app, '.env'), 'utf8').split('\n').filter((l) => l.includes('='))
    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
);
const require = createRequire(path.join(app, 'package.json'));
const pg = require('pg');
const sock = path.join(work, 'pg/sock');
const db = new pg.Client({ host: sock, port: Number(env.DATABASE_PORT), user: 'postgres', database: 'strapi' });
await db.connect();
const STRAPI = `http://127.0.0.1:${env.PORT}`;
const TABLES = ['messages', 'chats', 'homepages', 'legacy_articles'];

async function call(method, url, { token, body } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(STRAPI + url, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  if (res.status >= 400) throw new Error(`${method} ${url}: ${res.status} ${text}`);
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

// ---- set-up, then the fixture dump -------------------------------------------------------
const alice = (await call('POST', '/api/auth/local', {
  body: { identifier: 'alice@example.com', password: 'Alice-pass-1' },
})).body.jwt;
const admin = (await call('POST', '/admin/register-admin', {
  body: { email: 'admin@example.com', password: 'Admin-pass-1', firstname: 'Ada', lastname: 'Admin' },
})).body.data.token;
await call('POST', '/i18n/locales', { token: admin, body: { name: 'French (fr)', code: 'fr', isDefault: false } });
const full = (await call('POST', '/admin/api-tokens', {
  token: admin, body: { name: 'bridge full access', type: 'full-access', lifespan: null },
})).body.data.accessKey;
const custom = (await call('POST', '/admin/api-tokens', {
  token: admin,
  body: { name: 'bridge custom', type: 'custom', lifespan: null, permissions: ['api::message.message.find'] },
})).body.data.accessKey;
for (const t of TABLES) await db.query(`ALTER TABLE ${t} REPLICA IDENTITY FULL`);

const dump = execFileSync(
  path.join(process.env.PG_BIN || '/usr/lib/postgresql/15/bin', 'pg_dump'),
  ['-h', sock, '-p', env.DATABASE_PORT, '-U', 'postgres', '--no-owner', '--no-privileges', '--no-comments', '--inserts', '--rows-per-insert=50', 'strapi'],
  { maxBuffer: 64 << 20 },
).toString()
  // Loads into whatever schema is first on search_path, on any PostgreSQL 13+.
  .split('\n')
  .filter((l) => !/^(SET |SELECT pg_catalog.set_config|\\restrict|\\unrestrict|--)/.test(l))
  .join('\n')
  .replace(/public\./g, '')
  .replace(/\n{3,}/g, '\n\n');
const header = `-- A Strapi 5 database, as Strapi 5.54.0 laid it out on PostgreSQL, dumped (pg_dump, owner,
-- privileges and schema names removed) by tests/e2e/record5.mjs from the end-to-end app
-- (tests/e2e/strapi5) after its first boot: the tests replay the writes recorded in
-- strapi5-recorded.json on it. Replica identity: FULL on messages, chats, homepages and
-- legacy_articles (what the bridge's setup sets), DEFAULT elsewhere.
--
-- Content types: api::message.message (messages, draft & publish, private \`secret\`),
-- api::chat.chat (chats, no draft & publish), api::homepage.homepage (homepages, single type,
-- draft & publish), api::article.article (legacy_articles, i18n: locales en and fr).
-- Users-permissions: Public reads messages (find, findOne) and the homepage (find);
-- Authenticated may do everything on messages, chats and articles and find/update/delete the
-- homepage. Users 1 alice (Authenticated), 2 bob (Authenticated, blocked).
--
-- Secrets the rows assume:
--   JWT_SECRET     = ${env.JWT_SECRET}
--   API_TOKEN_SALT = ${env.API_TOKEN_SALT}
-- API tokens in clear: full access ${full}
--                      custom (find on messages) ${custom}
`;
fs.writeFileSync(path.join(repo, 'tests/fixtures/strapi5.sql'), `${header}\n${dump}`);

// ---- recording ---------------------------------------------------------------------------
await db.query("SELECT pg_create_logical_replication_slot('rec', 'test_decoding')");

/** Parses test_decoding's `name[type]:value ...` list into [[name, type, text-or-null]]. */
function parseColumns(s) {
  const out = [];
  let i = 0;
  while (i < s.length) {
    while (s[i] === ' ') i++;
    if (i >= s.length) break;
    let name = '';
    if (s[i] === '"') {
      i++;
      while (!(s[i] === '"' && s[i + 1] !== '"')) { if (s[i] === '"') i++; name += s[i++]; }
      i++;
    } else {
      while (s[i] !== '[') name += s[i++];
    }
    i++; // [
    let type = '';
    let depth = 1;
    while (depth > 0) { if (s[i] === '[') depth++; if (s[i] === ']') depth--; if (depth > 0) type += s[i]; i++; }
    i++; // :
    let value;
    if (s[i] === "'") {
      i++;
      value = '';
      for (;;) {
        if (s[i] === "'" && s[i + 1] === "'") { value += "'"; i += 2; } else if (s[i] === "'") { i++; break; } else value += s[i++];
      }
    } else {
      let raw = '';
      while (i < s.length && s[i] !== ' ') raw += s[i++];
      value = raw === 'null' ? null : raw === 'unchanged-toast-datum' ? { unchanged_toast: true } : raw;
      if (type === 'boolean' && value !== null) value = value === 'true' ? 't' : 'f';
    }
    out.push([name, type, value]);
  }
  return out;
}

async function drain() {
  // The cluster runs with synchronous_commit = off: a commit that waits for the WAL flush makes
  // every earlier commit visible to logical decoding.
  await db.query('BEGIN');
  await db.query('SET LOCAL synchronous_commit = on');
  await db.query("SELECT pg_logical_emit_message(true, 'record5-flush', '')");
  await db.query('COMMIT');
  const { rows } = await db.query(
    "SELECT data FROM pg_logical_slot_get_changes('rec', NULL, NULL, 'include-xids', '0', 'skip-empty-xacts', '1')",
  );
  const txns = [];
  let current = null;
  for (const { data } of rows) {
    if (data === 'BEGIN') { current = []; continue; }
    if (data === 'COMMIT') { if (current.length) txns.push(current); current = null; continue; }
    const m = /^table public\.([^:]+): (INSERT|UPDATE|DELETE): (.*)$/s.exec(data);
    if (!m || !TABLES.includes(m[1])) continue;
    const [, table, op, rest] = m;
    if (op === 'INSERT') current.push({ table, op: 'insert', new: parseColumns(rest) });
    else if (op === 'DELETE') current.push({ table, op: 'delete', old: parseColumns(rest) });
    else {
      const k = /^old-key: (.*) new-tuple: (.*)$/s.exec(rest);
      if (k) current.push({ table, op: 'update', old: parseColumns(k[1]), new: parseColumns(k[2]) });
      else current.push({ table, op: 'update', new: parseColumns(rest) });
    }
  }
  return txns;
}

const cases = [];
/** Runs a request and records its transactions with the events they must produce. */
async function record(name, method, url, opts, events) {
  await drain();
  const res = await call(method, url, opts);
  const transactions = await drain();
  const expected = typeof events === 'function' ? await events(res) : events;
  cases.push({ name, request: `${method} ${url}`, status: res.status, transactions, events: expected });
  console.log(`${name}: ${transactions.length} transaction(s), ${transactions.flat().length} row change(s) -> ${expected.map((e) => e.event).join(', ')}`);
  return res;
}
const get = async (url) => (await call('GET', url, { token: alice })).body;
const unpublished = (body) => ({ ...body, data: { ...body.data, publishedAt: null } });
const same = (event) => (res) => [{ event, payload: res.body }];

const chat = await record('REST create chat (no draft & publish)', 'POST', '/api/chats',
  { token: alice, body: { data: { name: 'general' } } }, same('chat:create'));
const chatDoc = chat.body.data.documentId;
const msg = await record('REST create message (published by default)', 'POST', '/api/messages', {
  token: alice,
  body: {
    data: {
      text: 'Hello world', secret: 'top-secret', likes: 42, score: 12.345, meta: { n: 1, tags: ['a', 'b'], nested: { x: true } },
      flag: true, when: '2024-01-01T10:00:00.000Z', day: '2024-01-01', big: '9007199254740993', rich: '# Title\n\n**bold**',
      mood: 'happy', displayTitle: 'Camel Case Title', body: 'long text', ratio: 0.5, at: '12:34:56', slug: 'hello-world',
      contact: 'c@example.com', blocks: [{ type: 'paragraph', children: [{ type: 'text', text: 'hi' }] }],
      chat: chatDoc, seo: { metaTitle: 'SEO', metaDescription: 'd' },
    },
  },
}, same('message:create'));
const doc = msg.body.data.documentId;
const draft = await record('REST create draft (status=draft)', 'POST', '/api/messages?status=draft',
  { token: alice, body: { data: { text: 'Draft msg', likes: 2 } } }, same('message:create'));
const draftDoc = draft.body.data.documentId;
await record('REST update a published message (new published row)', 'PUT', `/api/messages/${doc}`,
  { token: alice, body: { data: { text: 'Hello world (edited)', likes: 43 } } }, same('message:update'));
await record('REST edit the draft only (status=draft)', 'PUT', `/api/messages/${doc}?status=draft`,
  { token: alice, body: { data: { text: 'Draft edit of a published message' } } }, same('message:update'));
await record('REST PUT on a draft-only message publishes it', 'PUT', `/api/messages/${draftDoc}`,
  { token: alice, body: { data: { likes: 3 } } }, same('message:publish'));
const beforeUnpublish = await get(`/api/messages/${draftDoc}`);
await record('admin unpublish', 'POST',
  `/content-manager/collection-types/api::message.message/${draftDoc}/actions/unpublish`,
  { token: admin, body: {} }, [{ event: 'message:unpublish', payload: unpublished(beforeUnpublish) }]);
await record('admin publish', 'POST',
  `/content-manager/collection-types/api::message.message/${draftDoc}/actions/publish`,
  { token: admin, body: {} }, async () => [{ event: 'message:publish', payload: await get(`/api/messages/${draftDoc}`) }]);
const beforeDelete = await get(`/api/messages/${draftDoc}`);
await record('REST delete a published message (both rows)', 'DELETE', `/api/messages/${draftDoc}`,
  { token: alice }, [{ event: 'message:delete', payload: beforeDelete }]);
const draft2 = (await record('REST create a second draft', 'POST', '/api/messages?status=draft',
  { token: alice, body: { data: { text: 'Draft 2' } } }, same('message:create'))).body;
await record('REST delete a draft-only message', 'DELETE', `/api/messages/${draft2.data.documentId}`,
  { token: alice }, [{ event: 'message:delete', payload: draft2 }]);
await record('REST first PUT of the single type (draft and published rows)', 'PUT', '/api/homepage',
  { token: alice, body: { data: { title: 'Welcome' } } }, same('homepage:createOrUpdate'));
await record('REST second PUT of the single type', 'PUT', '/api/homepage',
  { token: alice, body: { data: { title: 'Welcome v2' } } }, same('homepage:createOrUpdate'));
const homeBefore = await get('/api/homepage');
await record('admin unpublish of the single type', 'POST',
  '/content-manager/single-types/api::homepage.homepage/actions/unpublish',
  { token: admin, body: {} }, [{ event: 'homepage:unpublish', payload: unpublished(homeBefore) }]);
const homeDraft = await get('/api/homepage?status=draft');
await record('REST delete of the single type', 'DELETE', '/api/homepage',
  { token: alice }, [{ event: 'homepage:delete', payload: homeDraft }]);
const en = await record('REST create article (i18n, default locale en)', 'POST', '/api/articles',
  { token: alice, body: { data: { title: 'Hello', headlineText: 'Shared headline' } } }, same('article:create'));
const artDoc = en.body.data.documentId;
await record('REST create the fr locale of the article', 'PUT', `/api/articles/${artDoc}?locale=fr`,
  { token: alice, body: { data: { title: 'Bonjour' } } }, same('article:create'));
await record('REST update the en article', 'PUT', `/api/articles/${artDoc}?locale=en`,
  { token: alice, body: { data: { title: 'Hello v2' } } }, same('article:update'));
const frBefore = await get(`/api/articles/${artDoc}?locale=fr`);
await record('REST delete the fr locale only', 'DELETE', `/api/articles/${artDoc}?locale=fr`,
  { token: alice }, [{ event: 'article:delete', payload: frBefore }]);
await record('REST update chat', 'PUT', `/api/chats/${chatDoc}`,
  { token: alice, body: { data: { name: 'general (renamed)' } } }, same('chat:update'));
const chatBefore = await get(`/api/chats/${chatDoc}`);
await record('REST delete chat', 'DELETE', `/api/chats/${chatDoc}`,
  { token: alice }, [{ event: 'chat:delete', payload: chatBefore }]);
await db.query("SELECT pg_drop_replication_slot('rec')");

const recorded = {
  about: 'Recorded from a real Strapi 5.54.0 on PostgreSQL 15 by tests/e2e/record5.mjs: each case is one '
    + 'REST or admin request, the row changes of the content tables it wrote (per transaction, as test_decoding '
    + 'showed them with REPLICA IDENTITY FULL: [column, type, value in the text form pgoutput sends] with booleans '
    + 't/f, null = SQL NULL, {"unchanged_toast":true} = an unchanged TOASTed value), and the events a client '
    + 'must receive, each payload being the body Strapi\'s content API returned for that version (unpublish: the '
    + 'version unpublished with publishedAt null; delete: the version last seen). Replayed on strapi5.sql.',
  cases,
};
fs.writeFileSync(path.join(repo, 'tests/fixtures/strapi5-recorded.json'), `${JSON.stringify(recorded, null, 1)}\n`);
await db.end();
console.log(`recorded ${cases.length} cases`);
