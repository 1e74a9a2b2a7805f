//! Loading Strapi's access tables from a real PostgreSQL: every table, missing ones
//! tolerated, a schema whose name needs quoting, and a lost connection.

use strapi_io_bridge::access::{
    Access, AccessConfig, AccessSnapshot, ApiToken, AuthError, Role, TokenKind, User,
};
use strapi_io_bridge::config::{PermissionMode, Secret};
use strapi_io_bridge::pg::quote_ident;
use strapi_io_bridge::strapi::Action;
use tokio_postgres::Client;

use crate::support::pg::{TempCluster, TestDb};

/// A Strapi 4 schema cut down to what access reads, with the lab's rows. Deliberately
/// incomplete: `up_roles` has no `type` column and the API-token permission tables are
/// missing (a Strapi without custom tokens, an older schema).
const SCHEMA_SQL: &str = r#"
CREATE TABLE up_roles (id serial PRIMARY KEY, name varchar(255), description varchar(255),
  created_at timestamp(6));
CREATE TABLE up_permissions (id serial PRIMARY KEY, action varchar(255), created_at timestamp(6));
CREATE TABLE up_permissions_role_links (id serial PRIMARY KEY, permission_id integer,
  role_id integer, permission_order double precision);
CREATE TABLE up_users (id serial PRIMARY KEY, username varchar(255), password varchar(255),
  confirmed boolean, blocked boolean);
CREATE TABLE up_users_role_links (id serial PRIMARY KEY, user_id integer, role_id integer,
  user_order double precision);
CREATE TABLE strapi_api_tokens (id serial PRIMARY KEY, name varchar(255), description varchar(255),
  type varchar(255), access_key varchar(255), last_used_at timestamp(6), expires_at timestamp(6),
  lifespan bigint);
CREATE TABLE strapi_core_store_settings (id serial PRIMARY KEY, key varchar(255), value text,
  type varchar(255), environment varchar(255), tag varchar(255));

INSERT INTO up_roles (id, name) VALUES (1, 'Authenticated'), (2, 'Public'), (3, 'Editor "E"');
INSERT INTO up_permissions (id, action) VALUES
  (10, 'api::message.message.find'), (13, 'api::message.message.find'),
  (15, 'api::message.message.create'), (23, 'api::chat.chat.find'), (30, NULL);
INSERT INTO up_permissions_role_links (id, permission_id, role_id) VALUES
  (10, 10, 2), (13, 13, 1), (15, 15, 1), (23, 23, 3), (30, 30, 3);
INSERT INTO up_users (id, username, password, confirmed, blocked) VALUES
  (1, 'alice', '$2a$10$x', true, false), (2, 'eddie', '$2a$10$y', false, false),
  (3, 'bob', '$2a$10$z', true, true), (4, 'nulls', NULL, NULL, NULL);
INSERT INTO up_users_role_links (id, user_id, role_id) VALUES (1, 1, 1), (2, 2, 3), (4, 3, 1);
INSERT INTO strapi_api_tokens (id, name, type, access_key, expires_at, lifespan) VALUES
  (1, 'lab-ro', 'read-only', 'C72AD5FBA3186CE48C08A19855D4C59CF5F9D05ED3130271014A364D4FB546EE6BFCAAA0CC787580B3D4ECD45E041E382659F12994F4B0EF55812B82BAB40F8B', NULL, NULL),
  (2, 'old', 'full-access', 'ab', '2000-01-01 00:00:00.5', 1000),
  (3, 'far', 'custom', 'cd', '2999-12-31 23:59:59.123456', NULL);
INSERT INTO strapi_core_store_settings (key, value, type) VALUES
  ('plugin_users-permissions_advanced',
   '{"unique_email":true,"allow_register":true,"email_confirmation":true,"default_role":"authenticated"}',
   'object');
"#;

/// A users-permissions JWT for user 1 without `exp`, signed with `JWT_SECRET` below (by
/// Python's `hmac`): valid whatever today's date.
const USER_1_NO_EXP: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzfQ.eYVVcApiAnx01iiIfpsSfZJVoCdzVyie5-oLg7FfouU";
const JWT_SECRET: &str = "j9skLpTvMt6nUUQMqNMjAg==";
const LAB_RO: &str = "30b14af979b15677995281242a0abe535606e30a71f6b8be72ea5d8e8d411a205bf5a23d2d422e9e79c20df74ee490eea2304280c76cd02632ec47c4a92da1f22ed3f463bdf69171f20d8e1ada5784b2e06964d6a68a7a46d873fd055fd3f8db73cf5e76513ca2a2eb1683406dea98a564baaf4900c7ffb13b9435577e4eef63";

fn config() -> AccessConfig {
    AccessConfig {
        public_role_name: "Public".to_owned(),
        permission_mode: PermissionMode::Read,
        jwt_secret: Some(Secret::new(JWT_SECRET)),
        jwt_management: Default::default(),
        api_token_salt: Some(Secret::new("7hOJwW+vNX8lRL0c0cedWA==")),
    }
}

/// A schema of its own, dropped at the end (also on failure, best effort).
struct TempSchema<'a> {
    client: &'a Client,
    name: String,
}

impl TempSchema<'_> {
    async fn create<'a>(client: &'a Client, sql: &str) -> TempSchema<'a> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        // A name that needs quoting.
        let name = format!("access load \"{}\" {nanos}", std::process::id());
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {q}; SET search_path TO {q}; {sql}; RESET search_path",
                q = quote_ident(&name)
            ))
            .await
            .unwrap_or_else(|e| panic!("creating the schema: {e}"));
        TempSchema { client, name }
    }

    async fn drop(self) {
        self.client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", quote_ident(&self.name)))
            .await
            .unwrap_or_else(|e| panic!("dropping the schema: {e}"));
    }
}

#[tokio::test]
async fn load_reads_every_access_table_and_tolerates_missing_ones() {
    let db = TestDb::new(TempCluster::shared());
    let client = db.client().await;
    let schema = TempSchema::create(&client, SCHEMA_SQL).await;
    let loaded = Access::load(&client, &schema.name, config()).await;
    schema.drop().await;
    let access = loaded.unwrap_or_else(|e| panic!("load: {e}"));
    let handle = access.handle();
    assert!(handle.is_loaded());

    let role = |id, name: &str| Role {
        id,
        name: name.to_owned(),
        kind: String::new(),
    };
    let user = |id, blocked, confirmed| User {
        id,
        blocked,
        confirmed,
    };
    let token = |id, name: &str, kind, key: &str, expires| ApiToken {
        id,
        name: name.to_owned(),
        kind,
        access_key: key.to_owned(),
        expires_at_unix_micros: expires,
    };
    assert_eq!(
        handle.snapshot(),
        AccessSnapshot {
            roles: vec![
                role(1, "Authenticated"),
                role(2, "Public"),
                role(3, "Editor \"E\"")
            ],
            role_permissions: vec![
                (1, "api::message.message.create".to_owned()),
                (1, "api::message.message.find".to_owned()),
                (2, "api::message.message.find".to_owned()),
                (3, "api::chat.chat.find".to_owned()),
            ],
            users: vec![
                user(1, false, true),
                user(2, false, false),
                user(3, true, true),
                user(4, false, false),
            ],
            user_roles: vec![(1, 1), (2, 3), (3, 1)],
            api_tokens: vec![
                token(
                    1,
                    "lab-ro",
                    TokenKind::ReadOnly,
                    "c72ad5fba3186ce48c08a19855d4c59cf5f9d05ed3130271014a364d4fb546ee6bfcaaa0cc787580b3d4ecd45e041e382659f12994f4b0ef55812b82bab40f8b",
                    None
                ),
                // 2000-01-01 00:00:00.5 UTC
                token(
                    2,
                    "old",
                    TokenKind::FullAccess,
                    "ab",
                    Some(946_684_800_500_000)
                ),
                // 2999-12-31 23:59:59.123456 UTC (`date -u -d … +%s`)
                token(
                    3,
                    "far",
                    TokenKind::Custom,
                    "cd",
                    Some(32_503_680_000_000_000 - 876_544)
                ),
            ],
            token_permissions: vec![],
            email_confirmation: true,
        }
    );

    assert_eq!(
        handle
            .authenticate(Some(USER_1_NO_EXP), None)
            .map(|p| p.rooms),
        Ok(vec!["Authenticated".to_owned()])
    );
    assert_eq!(
        handle.authenticate(Some(LAB_RO), None).map(|p| p.rooms),
        Ok(vec!["api-token:1".to_owned()])
    );
    assert_eq!(
        handle.refresh(&strapi_io_bridge::access::Identity::User { id: 2 }),
        Err(AuthError::InvalidCredentials),
        "unconfirmed while email confirmation is on"
    );
    assert_eq!(
        handle.refresh(&strapi_io_bridge::access::Identity::ApiToken { id: 2 }),
        Err(AuthError::TokenExpired)
    );
    assert_eq!(
        handle
            .rooms_for("api::message.message", &Action::Update)
            .to_vec(),
        // `far` is custom and its permission tables are missing: it reaches nothing.
        ["Authenticated", "Public", "api-token:1"]
            .map(str::to_owned)
            .to_vec()
    );
    assert_eq!(
        handle.role_names(),
        ["Authenticated", "Public", "Editor \"E\""].map(str::to_owned)
    );
}

#[tokio::test]
async fn load_of_a_schema_without_strapi_is_empty_but_loaded() {
    let db = TestDb::new(TempCluster::shared());
    let client = db.client().await;
    let schema = TempSchema::create(&client, "SELECT 1").await;
    let loaded = Access::load(&client, &schema.name, config()).await;
    schema.drop().await;
    let handle = loaded.unwrap_or_else(|e| panic!("load: {e}")).handle();
    assert!(handle.is_loaded());
    assert_eq!(handle.snapshot(), AccessSnapshot::default());
    assert_eq!(
        handle.authenticate(None, None).map(|p| p.rooms),
        Ok(vec!["Public".to_owned()])
    );
}

#[tokio::test]
async fn a_closed_connection_is_a_retryable_error() {
    let db = TestDb::new(TempCluster::shared());
    let client = db.client().await;
    db.psql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        db.name()
    ));
    crate::support::wait::until(
        "the session to be closed",
        crate::support::wait::DEFAULT_TIMEOUT,
        || async { client.simple_query("SELECT 1").await.is_err() },
    )
    .await;
    let err = Access::load(&client, "public", config())
        .await
        .err()
        .unwrap_or_else(|| panic!("load over a closed connection succeeded"));
    assert!(err.is_retryable(), "{err}");
}
