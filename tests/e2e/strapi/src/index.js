'use strict';

/**
 * Bootstrap of the end-to-end test application. Idempotent, runs on every boot:
 *
 * - Public:        find, findOne on message; find on homepage.
 * - Authenticated: find, findOne, create, update, delete on message, chat and article;
 *                  find, update, delete on homepage; upload files.
 * - Users (role Authenticated, confirmed): `alice` (active) and `bob` (blocked).
 *
 * When E2E_FIXTURE_FILE is set, the ids and role names of the users are written there as JSON so
 * that a test can sign tokens for them without asking Strapi.
 */

const fs = require('fs');

const PUBLIC_ACTIONS = [
  'api::message.message.find',
  'api::message.message.findOne',
  'api::homepage.homepage.find',
];

const crud = (uid) => ['find', 'findOne', 'create', 'update', 'delete'].map((a) => `${uid}.${a}`);

const AUTHENTICATED_ACTIONS = [
  ...crud('api::message.message'),
  ...crud('api::chat.chat'),
  ...crud('api::article.article'),
  'api::homepage.homepage.find',
  'api::homepage.homepage.update',
  'api::homepage.homepage.delete',
  'plugin::upload.content-api.upload',
];

const USERS = [
  { username: 'alice', email: 'alice@example.com', password: 'Alice-pass-1', blocked: false },
  { username: 'bob', email: 'bob@example.com', password: 'Bob-pass-1', blocked: true },
];

module.exports = {
  register() {},

  async bootstrap({ strapi }) {
    const roles = strapi.db.query('plugin::users-permissions.role');
    const permissions = strapi.db.query('plugin::users-permissions.permission');
    const users = strapi.db.query('plugin::users-permissions.user');

    const publicRole = await roles.findOne({ where: { type: 'public' } });
    const authenticatedRole = await roles.findOne({ where: { type: 'authenticated' } });

    const grant = async (role, action) => {
      const existing = await permissions.findOne({ where: { action, role: role.id } });
      if (!existing) {
        await permissions.create({ data: { action, role: role.id } });
        strapi.log.info(`[e2e] granted ${action} to ${role.name}`);
      }
    };
    for (const action of PUBLIC_ACTIONS) await grant(publicRole, action);
    for (const action of AUTHENTICATED_ACTIONS) await grant(authenticatedRole, action);

    const userService = strapi.plugin('users-permissions').service('user');
    const fixture = { users: {} };
    for (const u of USERS) {
      let user = await users.findOne({ where: { username: u.username } });
      if (!user) {
        user = await userService.add({
          username: u.username,
          email: u.email,
          password: u.password,
          provider: 'local',
          confirmed: true,
          blocked: u.blocked,
          role: authenticatedRole.id,
        });
        strapi.log.info(`[e2e] created user ${u.username} (id ${user.id})`);
      }
      fixture.users[u.username] = {
        id: user.id,
        email: u.email,
        password: u.password,
        blocked: u.blocked,
        role: authenticatedRole.name,
      };
    }
    fixture.roles = { public: publicRole.name, authenticated: authenticatedRole.name };

    const file = process.env.E2E_FIXTURE_FILE;
    if (file) fs.writeFileSync(file, JSON.stringify(fixture, null, 2));
  },
};
