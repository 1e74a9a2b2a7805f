//! The whole bridge with real Socket.IO clients (the `rust_socketio` crate and the npm
//! `socket.io-client`): who connects, which room they land in, what each role receives, and
//! access changes applied live from the stream.

use serde_json::{Value, json};

use crate::support::bridge::{
    ALICE, BOB, Bridge, CUSTOM_TOKEN, EDDIE, FULL_ACCESS_TOKEN, READ_ONLY_TOKEN, StrapiDb, jwt,
};
use crate::support::client::{Got, NodeClient, SioClient, marker};

const ALL: &str = "content_types = \"*\"";

async fn new_message(db: &StrapiDb<'_>, id: i64) {
    db.sql(&format!(
        "INSERT INTO messages (id, text, secret, created_at, updated_at, published_at) \
         VALUES ({id}, 'message {id}', 'private', now(), now(), now())"
    ))
    .await;
}

async fn new_chat(db: &StrapiDb<'_>, id: i64) {
    db.sql(&format!(
        "INSERT INTO chats (id, name, created_at, updated_at) VALUES ({id}, 'chat {id}', now(), now())"
    ))
    .await;
}

async fn new_homepage_title(db: &StrapiDb<'_>, title: &str) {
    db.sql(&format!("UPDATE homepages SET title = '{title}'"))
        .await;
}

#[tokio::test]
async fn each_role_receives_what_it_may_read_and_nothing_else() {
    crate::support::init_tracing();
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(ALL)).await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    let mut alice = SioClient::connected(bridge.addr, json!({ "token": jwt(ALICE, false) })).await;
    let mut eddie = SioClient::connected(bridge.addr, json!({ "token": jwt(EDDIE, false) })).await;

    new_message(&db, 100).await;
    new_chat(&db, 100).await;
    new_homepage_title(&db, "Hello").await;
    marker(&db, 1).await;

    // Public: find/findOne on message, find on homepage; not chat.
    let m = public.event("message:create").await;
    assert_eq!(m["data"]["id"], 100);
    assert!(m["data"]["attributes"].get("secret").is_none());
    public.event("homepage:createOrUpdate").await;
    public.marker(1).await;
    // Authenticated: message, chat and homepage.
    alice.event("message:create").await;
    alice.event("chat:create").await;
    alice.event("homepage:createOrUpdate").await;
    alice.marker(1).await;
    // Editor (a custom role): chat only.
    eddie.event("chat:create").await;
    eddie.marker(1).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn refused_handshakes_carry_strapis_messages_and_are_never_public() {
    let db = StrapiDb::new("UPDATE up_users SET blocked = true WHERE id = 3").await;
    let bridge = Bridge::start(db.config(ALL)).await;

    let other_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"id": ALICE, "iat": 1, "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"not the secret"),
    )
    .unwrap();
    // alg: none, with a valid-looking payload.
    let alg_none = {
        use base64_url as b64;
        format!(
            "{}.{}.",
            b64::encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64::encode(r#"{"id":1,"iat":1,"exp":4000000000}"#)
        )
    };
    let cases = [
        (json!({ "token": jwt(ALICE, true) }), "Invalid token."),
        (json!({ "token": other_secret }), "Invalid token."),
        (json!({ "token": alg_none }), "Invalid token."),
        (json!({ "token": "garbage" }), "Invalid token."),
        (json!({ "token": "a.b.c" }), "Invalid token."),
        (json!({ "token": jwt(BOB, false) }), "Invalid credentials"),
        (json!({ "token": jwt(999, false) }), "Invalid token."),
        (
            json!({ "token": "unknown-api-token", "strategy": "apiToken" }),
            "Invalid token.",
        ),
    ];
    for (auth, message) in cases {
        let mut client = SioClient::connect(bridge.addr, auth.clone()).await;
        match client.next().await {
            Got::ConnectError(m) => assert_eq!(m, message, "{auth}"),
            other => panic!("{auth}: expected connect_error {message:?}, got {other:?}"),
        }
    }
    // The same through the npm client, as Strapi users run it (a missing client fails).
    let expired = jwt(ALICE, true);
    let mut node = NodeClient::connect(bridge.addr, &["--token", &expired]);
    assert_eq!(
        node.next().await,
        Got::ConnectError("Invalid token.".to_owned())
    );
    let blocked = jwt(BOB, false);
    let mut node = NodeClient::connect(bridge.addr, &["--token", &blocked]);
    assert_eq!(
        node.next().await,
        Got::ConnectError("Invalid credentials".to_owned())
    );
    // No refused socket stayed connected.
    let url = bridge.url("/metrics");
    crate::support::wait::until(
        "no socket connected",
        crate::support::wait::DEFAULT_TIMEOUT,
        || {
            let url = url.clone();
            async move {
                crate::support::bridge::reqwest_get(&url)
                    .await
                    .is_some_and(|(_, text)| text.contains("\nstrapi_io_sockets_connected 0\n"))
            }
        },
    )
    .await;
    // Nothing was joined: a Public client still sees only its own traffic.
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    marker(&db, 7).await;
    public.marker(7).await;
    bridge.stop().await.unwrap();
}

/// base64url without padding, for hand-built tokens.
mod base64_url {
    pub fn encode(s: &str) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

#[tokio::test]
async fn api_tokens_of_each_type_read_what_they_may() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(ALL)).await;
    let token = |t: &str| json!({ "token": t, "strategy": "apiToken" });
    let mut read_only = SioClient::connected(bridge.addr, token(READ_ONLY_TOKEN)).await;
    let mut full = SioClient::connected(bridge.addr, token(FULL_ACCESS_TOKEN)).await;
    // A token that is not JWT-shaped is taken as an API token even without the strategy.
    let mut custom = SioClient::connected(bridge.addr, json!({ "token": CUSTOM_TOKEN })).await;

    new_message(&db, 200).await;
    new_homepage_title(&db, "tokens").await;
    new_chat(&db, 200).await;
    marker(&db, 1).await;
    for client in [&mut read_only, &mut full] {
        client.event("message:create").await;
        client.event("homepage:createOrUpdate").await;
        client.event("chat:create").await;
        client.marker(1).await;
    }
    // custom: find on message and chat, nothing on homepage.
    custom.event("message:create").await;
    custom.event("chat:create").await;
    custom.marker(1).await;

    // Revoking the custom token's chat permission applies before the next event.
    db.sql(
        "DELETE FROM strapi_api_token_permissions WHERE action = 'api::chat.chat.find' \
         AND id IN (SELECT api_token_permission_id FROM strapi_api_token_permissions_token_links \
                    WHERE api_token_id = 3)",
    )
    .await;
    new_chat(&db, 201).await;
    marker(&db, 2).await;
    custom.marker(2).await;
    for client in [&mut read_only, &mut full] {
        client.event("chat:create").await;
        client.marker(2).await;
    }
    // Deleting a token disconnects its sockets.
    db.sql("DELETE FROM strapi_api_tokens WHERE id = 1").await;
    assert_eq!(read_only.next().await, Got::Closed);
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_revoked_permission_stops_events_committed_after_it() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(ALL)).await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    new_message(&db, 300).await;
    public.event("message:create").await;

    // What the admin panel does (wal/34): delete the permission rows (links cascade). The
    // event is committed right after, in another transaction.
    db.sql(
        "DELETE FROM up_permissions WHERE id IN ( \
           SELECT p.id FROM up_permissions p \
           JOIN up_permissions_role_links l ON l.permission_id = p.id \
           JOIN up_roles r ON r.id = l.role_id \
           WHERE r.type = 'public' AND p.action IN ('api::message.message.find', 'api::message.message.findOne'))",
    )
    .await;
    new_message(&db, 301).await;
    marker(&db, 1).await;
    public.marker(1).await;

    // Granting it again (three transactions, as Strapi does) brings the events back.
    db.sql("INSERT INTO up_permissions (id, action, created_at, updated_at) VALUES (900, 'api::message.message.find', now(), now())")
        .await;
    db.sql("INSERT INTO up_permissions_role_links (permission_id, role_id, permission_order) VALUES (900, 2, 1)")
        .await;
    new_message(&db, 302).await;
    assert_eq!(public.event("message:create").await["data"]["id"], 302);
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_user_whose_role_changes_follows_the_new_role_and_a_blocked_user_is_dropped() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(ALL)).await;
    let mut bob = SioClient::connected(bridge.addr, json!({ "token": jwt(BOB, false) })).await;
    let mut alice = SioClient::connected(bridge.addr, json!({ "token": jwt(ALICE, false) })).await;

    new_message(&db, 400).await;
    bob.event("message:create").await;
    alice.event("message:create").await;

    // wal/57: the admin moves bob from Authenticated to Editor.
    db.sql("UPDATE up_users SET updated_at = now() WHERE id = 3")
        .await;
    db.sql(
        "BEGIN; \
         DELETE FROM up_users_role_links WHERE user_id = 3; \
         INSERT INTO up_users_role_links (user_id, role_id, user_order) VALUES (3, 3, 1); \
         COMMIT",
    )
    .await;
    new_message(&db, 401).await;
    new_chat(&db, 401).await;
    marker(&db, 1).await;
    // bob, now an Editor, gets the chat and not the message.
    bob.event("chat:create").await;
    bob.marker(1).await;
    alice.event("message:create").await;
    alice.event("chat:create").await;
    alice.marker(1).await;

    // wal/55: blocking a user disconnects their sockets; new handshakes are refused.
    db.sql("UPDATE up_users SET blocked = true WHERE id = 3")
        .await;
    assert_eq!(bob.next().await, Got::Closed);
    let mut again = SioClient::connect(bridge.addr, json!({ "token": jwt(BOB, false) })).await;
    assert_eq!(
        again.next().await,
        Got::ConnectError("Invalid credentials".to_owned())
    );
    // Deleting a user disconnects them too.
    db.sql("DELETE FROM up_users WHERE id = 1").await;
    assert_eq!(alice.next().await, Got::Closed);
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn the_npm_client_receives_events_exactly_as_the_plugin_readme_shows() {
    if !crate::support::client::node_client_installed() {
        panic!(
            "the npm socket.io-client is not installed: run `npm ci` in tests/node (.ci/run does)"
        );
    }
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(ALL)).await;
    let token = jwt(ALICE, false);
    let mut public = NodeClient::connected(bridge.addr, &["--events", "2"]).await;
    let mut authenticated =
        NodeClient::connected(bridge.addr, &["--token", &token, "--events", "3"]).await;

    new_chat(&db, 500).await;
    new_message(&db, 500).await;
    db.sql("UPDATE messages SET published_at = NULL WHERE id = 500")
        .await;

    let created = public.event("message:create").await;
    assert_eq!(created["data"]["id"], 500);
    assert_eq!(created["data"]["attributes"]["text"], "message 500");
    assert!(created["data"]["attributes"].get("secret").is_none());
    assert_eq!(created["meta"], json!({}));
    let unpublished = public.event("message:unpublish").await;
    assert_eq!(
        unpublished["data"]["attributes"]["publishedAt"],
        Value::Null
    );

    assert_eq!(
        authenticated.event("chat:create").await["data"]["attributes"]["name"],
        "chat 500"
    );
    authenticated.event("message:create").await;
    authenticated.event("message:unpublish").await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn health_readiness_and_metrics_describe_the_running_bridge() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(ALL)).await;
    let _public = SioClient::connected(bridge.addr, json!({})).await;
    new_message(&db, 600).await;
    let get = |path: &str| {
        let url = bridge.url(path);
        async move { crate::support::bridge::reqwest_get(&url).await }
    };
    assert_eq!(get("/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(get("/readyz").await.map(|r| r.0), Some(200));
    crate::support::wait::until(
        "the emitted event to be counted",
        crate::support::wait::DEFAULT_TIMEOUT,
        || async {
            get("/metrics").await.is_some_and(|(_, text)| {
                text.lines().any(|l| {
                    l.starts_with("strapi_io_events_emitted_total")
                        && l.contains("message")
                        && l.contains("create")
                })
            })
        },
    )
    .await;
    let (_, metrics) = get("/metrics").await.unwrap();
    for family in [
        "strapi_io_sockets_connected",
        "strapi_io_replication_lag_bytes",
        "strapi_io_replication_lag_seconds",
        "strapi_io_confirmed_lsn",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    assert!(
        metrics.contains("room=\"Public\""),
        "sockets per room:\n{metrics}"
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_bridge_started_before_postgresql_waits_for_it() {
    let cluster =
        crate::support::pg::TempCluster::new(crate::support::pg::ClusterOptions::default());
    let db = StrapiDb::on(&cluster, "").await;
    let cfg = db.config(ALL);
    cluster.stop();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(strapi_io_bridge::pipeline::run(
        cfg,
        listener,
        shutdown.clone(),
    ));
    // Nothing listens yet: the bridge retries instead of exiting.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert!(
        !task.is_finished(),
        "the bridge gave up while PostgreSQL was down"
    );
    cluster.start();
    let url = format!("http://{addr}/readyz");
    crate::support::wait::until(
        "ready once PostgreSQL is up",
        crate::support::wait::DEFAULT_TIMEOUT,
        || {
            let url = url.clone();
            async move {
                crate::support::bridge::reqwest_get(&url)
                    .await
                    .is_some_and(|r| r.0 == 200)
            }
        },
    )
    .await;
    let mut public = SioClient::connected(addr, json!({})).await;
    new_message(&db, 700).await;
    public.event("message:create").await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
