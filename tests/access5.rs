//! Access on a Strapi 5 database (tests/fixtures/strapi5.sql): roles, users and API tokens
//! through the `*_lnk` link tables, Strapi 5's JWT shapes under both `jwt_management` modes,
//! live permission changes, and the writes Strapi 5 makes on every login and token use.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::bridge::{Bridge, CUSTOM_TOKEN5, FULL_ACCESS_TOKEN5, JWT_SECRET5, StrapiDb};
use crate::support::client::{Got, SioClient, marker};

/// A users-permissions JWT with these claims, signed with the fixture's secret.
fn sign(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET5.as_bytes()),
    )
    .unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What Strapi 5 issues in refresh mode: a ten-minute session access token.
fn access_token(user: &str) -> String {
    sign(
        json!({"userId": user, "sessionId": "25f1184e67c5c7d07c17aad4747ef0f0",
        "type": "access", "iat": now(), "exp": now() + 600}),
    )
}

/// Strapi 4's shape, still issued by Strapi 5 in legacy-support mode.
fn legacy_token(user: i64) -> String {
    sign(json!({"id": user, "iat": now(), "exp": now() + 3600}))
}

async fn refused(bridge: &Bridge, auth: Value, message: &str) {
    let mut client = SioClient::connect(bridge.addr, auth.clone()).await;
    match client.next().await {
        Got::ConnectError(m) => assert_eq!(m, message, "{auth}"),
        other => panic!("{auth}: expected connect_error {message:?}, got {other:?}"),
    }
}

const INSERT_CHAT: &str = "INSERT INTO chats (id, document_id, name, created_at, updated_at, published_at) \
    VALUES ($ID, 'chat$ID', 'c', now(), now(), now())";
const INSERT_MESSAGE: &str = "INSERT INTO messages (id, document_id, text, created_at, updated_at, published_at) \
    VALUES ($ID, 'msg$ID', 'm', now(), now(), NULL)";

async fn write(db: &StrapiDb<'_>, template: &str, id: i64) {
    db.sql(&template.replace("$ID", &id.to_string())).await;
}

#[tokio::test]
async fn roles_users_and_tokens_work_through_the_lnk_tables_in_legacy_support_mode() {
    crate::support::init_tracing();
    let db = StrapiDb::strapi5("").await;
    let bridge = Bridge::start(db.config("content_types = \"*\"")).await;

    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    let mut alice = SioClient::connected(bridge.addr, json!({"token": access_token("1")})).await;
    let mut alice_legacy =
        SioClient::connected(bridge.addr, json!({"token": legacy_token(1)})).await;
    let mut custom = SioClient::connected(
        bridge.addr,
        json!({"token": CUSTOM_TOKEN5, "strategy": "apiToken"}),
    )
    .await;
    let mut full = SioClient::connected(
        bridge.addr,
        json!({"token": FULL_ACCESS_TOKEN5, "strategy": "apiToken"}),
    )
    .await;
    // A refresh token is signed with the same secret but is no access token.
    refused(
        &bridge,
        json!({"token": sign(json!({"userId": "1", "sessionId": "s", "type": "refresh", "exp": now() + 600}))}),
        "Invalid token.",
    )
    .await;
    // bob is blocked (up_users_role_lnk still links him).
    refused(
        &bridge,
        json!({"token": access_token("2")}),
        "Invalid credentials",
    )
    .await;
    marker(&db, 0).await;
    for c in [
        &mut public,
        &mut alice,
        &mut alice_legacy,
        &mut custom,
        &mut full,
    ] {
        c.marker(0).await;
    }

    // Public and the custom token read messages only; alice (Authenticated) and the
    // full-access token read chats too.
    write(&db, INSERT_CHAT, 1).await;
    write(&db, INSERT_MESSAGE, 1).await;
    for c in [&mut alice, &mut alice_legacy, &mut full] {
        assert_eq!(c.event("chat:create").await["data"]["documentId"], "chat1");
    }
    for c in [
        &mut public,
        &mut alice,
        &mut alice_legacy,
        &mut custom,
        &mut full,
    ] {
        assert_eq!(
            c.event("message:create").await["data"]["documentId"],
            "msg1"
        );
    }

    // A login (strapi_sessions) and an API-token use (last_used_at) change nothing.
    db.sql(
        "INSERT INTO strapi_sessions (document_id, user_id, session_id, origin, status, type, created_at, updated_at) \
           VALUES ('sess1', '1', 'abc', 'users-permissions', 'active', 'refresh', now(), now()); \
         UPDATE strapi_api_tokens SET last_used_at = now() WHERE id IN (3, 4)",
    )
    .await;

    // Revoking find/findOne from Public (permission row and its up_permissions_role_lnk
    // row, as the admin panel does) and find from the custom token
    // (strapi_api_token_permissions_token_lnk) stops their message events at once.
    db.sql(
        "DELETE FROM up_permissions_role_lnk WHERE permission_id IN \
           (SELECT id FROM up_permissions WHERE action IN ('api::message.message.find', 'api::message.message.findOne') \
              AND id IN (SELECT permission_id FROM up_permissions_role_lnk WHERE role_id = 2)); \
         DELETE FROM strapi_api_token_permissions_token_lnk WHERE api_token_id = 4",
    )
    .await;
    write(&db, INSERT_MESSAGE, 2).await;
    for c in [&mut alice, &mut alice_legacy, &mut full] {
        assert_eq!(
            c.event("message:create").await["data"]["documentId"],
            "msg2"
        );
    }
    // Moving alice to the Public role (her up_users_role_lnk row) takes chats away from her.
    db.sql("UPDATE up_users_role_lnk SET role_id = 2 WHERE user_id = 1")
        .await;
    write(&db, INSERT_CHAT, 2).await;
    assert_eq!(
        full.event("chat:create").await["data"]["documentId"],
        "chat2"
    );
    marker(&db, 1).await;
    for c in [
        &mut public,
        &mut alice,
        &mut alice_legacy,
        &mut custom,
        &mut full,
    ] {
        c.marker(1).await;
    }
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn refresh_mode_refuses_the_legacy_shape() {
    let db = StrapiDb::strapi5("").await;
    let bridge =
        Bridge::start(db.config("content_types = \"*\"\n[auth]\njwt_management = \"refresh\"\n"))
            .await;
    refused(&bridge, json!({"token": legacy_token(1)}), "Invalid token.").await;
    let mut alice = SioClient::connected(bridge.addr, json!({"token": access_token("1")})).await;
    marker(&db, 0).await;
    alice.marker(0).await;
    write(&db, INSERT_CHAT, 1).await;
    alice.event("chat:create").await;
    bridge.stop().await.unwrap();
}
