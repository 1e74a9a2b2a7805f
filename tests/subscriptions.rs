//! Subscriptions with real Socket.IO clients: `auth.subscribe = "explicit"`,
//! `strapi-io:subscribe` / `strapi-io:unsubscribe` and their acks, the plugin 5.x names
//! (`subscribe-entity`, `join-room`), one delivery per socket however many of its rooms an event
//! goes to, a revoked permission dropping the subscription, and `/metrics`.

use serde_json::{Value, json};

use crate::support::bridge::{ALICE, Bridge, EDDIE, StrapiDb, jwt, reqwest_get};
use crate::support::client::{Got, NodeClient, SioClient, marker, node_client_installed};

const CONFIG: &str = "content_types = \"*\"\n[io]\njoinable_rooms = [\"lobby\"]\n";

async fn new_message(db: &StrapiDb<'_>, id: i64) {
    db.sql(&format!(
        "INSERT INTO messages (id, text, created_at, updated_at, published_at) \
         VALUES ({id}, 'message {id}', now(), now(), now())"
    ))
    .await;
}

async fn new_chat(db: &StrapiDb<'_>, id: i64) {
    db.sql(&format!(
        "INSERT INTO chats (id, name, created_at, updated_at) VALUES ({id}, 'chat {id}', now(), now())"
    ))
    .await;
}

fn ok() -> Vec<Value> {
    vec![json!({ "ok": true })]
}

#[tokio::test]
async fn explicit_mode_receives_only_the_subscribed_entry_and_each_event_once() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(CONFIG)).await;
    let explicit = SioClient::connected(
        bridge.addr,
        json!({ "token": jwt(ALICE, false), "subscribe": "explicit" }),
    )
    .await;
    let roles = SioClient::connected(bridge.addr, json!({ "token": jwt(ALICE, false) })).await;
    let sub = json!({ "type": "message", "id": 501 });
    assert_eq!(explicit.ack("strapi-io:subscribe", sub.clone()).await, ok());
    // Also in its role room, which receives the same events: still one delivery.
    assert_eq!(roles.ack("strapi-io:subscribe", sub).await, ok());
    let (mut explicit, mut roles) = (explicit, roles);

    new_message(&db, 500).await;
    new_message(&db, 501).await;
    new_chat(&db, 500).await;
    db.sql("UPDATE messages SET text = 'edited' WHERE id = 501")
        .await;
    marker(&db, 1).await;

    assert_eq!(explicit.event("message:create").await["data"]["id"], 501);
    assert_eq!(explicit.event("message:update").await["data"]["id"], 501);
    explicit.marker(1).await;

    assert_eq!(roles.event("message:create").await["data"]["id"], 500);
    assert_eq!(roles.event("message:create").await["data"]["id"], 501);
    assert_eq!(roles.event("chat:create").await["data"]["id"], 500);
    assert_eq!(roles.event("message:update").await["data"]["id"], 501);
    roles.marker(1).await;

    // A whole-type subscription, then unsubscribing from the entry.
    assert_eq!(
        explicit
            .ack("strapi-io:subscribe", json!({ "type": "api::chat.chat" }))
            .await,
        ok()
    );
    assert_eq!(
        explicit
            .ack(
                "strapi-io:unsubscribe",
                json!({ "type": "message", "id": 501 })
            )
            .await,
        ok()
    );
    db.sql("UPDATE messages SET text = 'again' WHERE id = 501")
        .await;
    new_chat(&db, 501).await;
    marker(&db, 2).await;
    assert_eq!(explicit.event("chat:create").await["data"]["id"], 501);
    explicit.marker(2).await;

    // /metrics counts subscriptions per type (alice's two sockets: message 501 on one, chat
    // on the other).
    let (_, text) = reqwest_get(&bridge.url("/metrics")).await.unwrap();
    assert!(
        text.contains("strapi_io_subscriptions{content_type=\"api::chat.chat\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("strapi_io_subscriptions{content_type=\"api::message.message\"} 1"),
        "{text}"
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_and_forbidden_types_and_bad_requests_are_refused_in_the_ack() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(CONFIG)).await;
    let public = SioClient::connected(bridge.addr, json!({ "subscribe": "explicit" })).await;
    let cases = [
        (json!({ "type": "nope" }), "unknown content type \"nope\""),
        // Public may not read chats.
        (
            json!({ "type": "chat" }),
            "not allowed to read api::chat.chat",
        ),
        (
            json!({ "type": "message", "id": "x" }),
            "id \"x\" is not an entry id (an integer)",
        ),
        (
            json!({ "id": 1 }),
            "expected { type: <content type>, id?: <entry id> }",
        ),
    ];
    for (request, error) in cases {
        assert_eq!(
            public.ack("strapi-io:subscribe", request.clone()).await,
            vec![json!({ "error": error })],
            "{request}"
        );
    }
    // Nothing was subscribed: the explicit Public socket sees only the marker.
    let mut public = public;
    new_chat(&db, 600).await;
    new_message(&db, 600).await;
    marker(&db, 1).await;
    public.marker(1).await;

    // An unknown subscribe mode is refused at the handshake.
    let mut bad = SioClient::connect(bridge.addr, json!({ "subscribe": "all" })).await;
    assert_eq!(
        bad.next().await,
        Got::ConnectError("auth.subscribe must be \"explicit\" or left out".to_owned())
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_revoked_permission_drops_the_subscription() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(CONFIG)).await;
    // Editor: find on chat only.
    let eddie = SioClient::connected(
        bridge.addr,
        json!({ "token": jwt(EDDIE, false), "subscribe": "explicit" }),
    )
    .await;
    assert_eq!(
        eddie
            .ack("strapi-io:subscribe", json!({ "type": "chat" }))
            .await,
        ok()
    );
    let mut eddie = eddie;
    new_chat(&db, 700).await;
    assert_eq!(eddie.event("chat:create").await["data"]["id"], 700);

    db.sql(
        "DELETE FROM up_permissions WHERE action = 'api::chat.chat.find' AND id IN \
         (SELECT permission_id FROM up_permissions_role_links WHERE role_id = 3)",
    )
    .await;
    new_chat(&db, 701).await;
    marker(&db, 1).await;
    eddie
        .expect(
            "strapi-io:unsubscribed",
            json!({ "type": "api::chat.chat", "id": null, "error": "no longer allowed to read api::chat.chat" }),
        )
        .await;
    eddie.marker(1).await;
    // And it cannot subscribe again.
    assert_eq!(
        eddie
            .ack("strapi-io:subscribe", json!({ "type": "chat" }))
            .await,
        vec![json!({ "error": "not allowed to read api::chat.chat" })]
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn plugin_5_event_names_work() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(CONFIG)).await;
    let public = SioClient::connected(bridge.addr, json!({ "subscribe": "explicit" })).await;
    assert_eq!(
        public
            .ack(
                "subscribe-entity",
                json!({ "uid": "api::message.message", "id": 800 })
            )
            .await,
        vec![json!({ "success": true, "room": "sub:api::message.message:800" })]
    );
    assert_eq!(
        public.ack("join-room", json!("lobby")).await,
        vec![json!({ "success": true, "room": "lobby" })]
    );
    assert_eq!(
        public.ack("join-room", json!("Authenticated")).await,
        vec![json!({ "success": false, "error": "room \"Authenticated\" is not joinable" })]
    );
    assert_eq!(
        public
            .ack(
                "subscribe-entity",
                json!({ "uid": "api::chat.chat", "id": 1 })
            )
            .await,
        vec![json!({ "success": false, "error": "not allowed to read api::chat.chat" })]
    );
    let mut public = public;
    new_message(&db, 799).await;
    new_message(&db, 800).await;
    db.sql(
        "SELECT pg_logical_emit_message(true, 'strapi_io', \
         '{\"raw\":\"lobby:news\",\"data\":1,\"room\":\"lobby\"}')",
    )
    .await;
    marker(&db, 1).await;
    assert_eq!(public.event("message:create").await["data"]["id"], 800);
    public.expect("lobby:news", json!(1)).await;
    public.marker(1).await;

    assert_eq!(
        public
            .ack(
                "unsubscribe-entity",
                json!({ "uid": "api::message.message", "id": 800 })
            )
            .await,
        vec![json!({ "success": true, "room": "sub:api::message.message:800" })]
    );
    assert_eq!(
        public.ack("leave-room", json!({ "room": "lobby" })).await,
        vec![json!({ "success": true, "room": "lobby" })]
    );
    db.sql("UPDATE messages SET text = 'edited' WHERE id = 800")
        .await;
    marker(&db, 2).await;
    public.marker(2).await;

    // The npm client, as a ported plugin 5.x client runs it.
    if node_client_installed() {
        let mut node = NodeClient::connected(
            bridge.addr,
            &[
                "--auth-json",
                r#"{"subscribe":"explicit"}"#,
                "--emit",
                r#"subscribe-entity={"uid":"api::message.message","id":801}"#,
                "--until",
                "message:create",
            ],
        )
        .await;
        match node.next().await {
            Got::Other(line) => {
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["ack"], "subscribe-entity");
                assert_eq!(v["data"][0]["success"], true, "{line}");
            }
            other => panic!("expected the ack, got {other:?}"),
        }
        new_message(&db, 801).await;
        assert_eq!(node.event("message:create").await["data"]["id"], 801);
    }
    bridge.stop().await.unwrap();
}
