//! Custom events from outside Strapi: `pg_logical_emit_message` through the real stream (the
//! plugin's `$io.emit` and `$io.raw`), and the HTTP emit API of a running bridge.

use serde_json::json;

use crate::support::bridge::{ALICE, Bridge, EDDIE, StrapiDb, http_client, jwt};
use crate::support::client::SioClient;

const ALL: &str = "content_types = \"*\"";

fn emit_sql(transactional: bool, body: &str) -> String {
    format!(
        "SELECT pg_logical_emit_message({transactional}, 'strapi_io', '{}')",
        body.replace('\'', "''")
    )
}

#[tokio::test]
async fn a_transactional_emit_goes_out_once_after_commit_in_order_and_never_after_rollback() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(ALL)).await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;

    // Rolled back: neither the row nor the message is ever sent.
    db.sql(&format!(
        "BEGIN; INSERT INTO messages (id, text, created_at, updated_at, published_at) \
           VALUES (10, 'rolled back', now(), now(), now()); {}; ROLLBACK",
        emit_sql(true, r#"{"raw":"never","data":1}"#)
    ))
    .await;
    // Committed: data events and the messages around them keep their order.
    db.sql(&format!(
        "BEGIN; \
         INSERT INTO messages (id, text, created_at, updated_at, published_at) VALUES (11, 'a', now(), now(), now()); \
         {}; \
         UPDATE messages SET text = 'b' WHERE id = 11; \
         {}; \
         COMMIT",
        emit_sql(true, r#"{"raw":"between","data":{"x":1}}"#),
        emit_sql(true, r#"{"emit":"api::message.message.someCustomAction","data":{"y":2}}"#),
    ))
    .await;
    let created = public.event("message:create").await;
    assert_eq!(
        created["data"]["id"], 11,
        "the rolled-back insert never arrives"
    );
    public.expect("between", json!({"x": 1})).await;
    public.event("message:update").await;
    public
        .expect("message:someCustomAction", json!({"y": 2}))
        .await;
    db.sql(&emit_sql(true, r#"{"raw":"marker","data":1}"#))
        .await;
    public.expect("marker", json!(1)).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_non_transactional_emit_goes_out_at_once_even_inside_an_open_transaction() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(ALL)).await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    let mut session = db.db.client().await;
    let tx = session.transaction().await.unwrap();
    tx.batch_execute(
        "INSERT INTO messages (id, text, created_at, updated_at, published_at) VALUES (20, 'open', now(), now(), now())",
    )
    .await
    .unwrap();
    tx.batch_execute(&emit_sql(false, r#"{"raw":"now","data":"at once"}"#))
        .await
        .unwrap();
    // Arrives while the transaction is still open.
    public.expect("now", json!("at once")).await;
    tx.rollback().await.unwrap();
    db.sql(&emit_sql(true, r#"{"raw":"marker","data":2}"#))
        .await;
    public.expect("marker", json!(2)).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn emit_follows_the_permission_rule_and_raw_goes_where_it_is_sent() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(ALL)).await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    let mut alice = SioClient::connected(bridge.addr, json!({ "token": jwt(ALICE, false) })).await;
    let mut eddie = SioClient::connected(bridge.addr, json!({ "token": jwt(EDDIE, false) })).await;

    for body in [
        // chat: Authenticated and Editor may read it, Public may not.
        r#"{"emit":"api::chat.chat.typing","data":{"who":"x"}}"#,
        // An unknown content type: a warning in the log, nothing sent.
        r#"{"emit":"api::nothing.nothing.x","data":1}"#,
        // Malformed: a warning naming the LSN, the stream goes on.
        r#"{"emit":"#,
        r#"{"raw":"x","data":1,"unexpected":true}"#,
        // raw to one room, to a list, to everyone.
        r#"{"raw":"editors","data":"e","room":"Editor"}"#,
        r#"{"raw":"two","data":"t","room":["Public","Editor"]}"#,
        r#"{"raw":"all","data":"a"}"#,
    ] {
        db.sql(&emit_sql(true, body)).await;
    }
    // Another prefix is not for the bridge.
    db.sql("SELECT pg_logical_emit_message(true, 'other_app', '{\"raw\":\"not-ours\"}')")
        .await;
    db.sql(&emit_sql(true, r#"{"raw":"marker","data":3}"#))
        .await;

    public.expect("two", json!("t")).await;
    public.expect("all", json!("a")).await;
    public.expect("marker", json!(3)).await;

    alice.expect("chat:typing", json!({"who": "x"})).await;
    alice.expect("all", json!("a")).await;
    alice.expect("marker", json!(3)).await;

    eddie.expect("chat:typing", json!({"who": "x"})).await;
    eddie.expect("editors", json!("e")).await;
    eddie.expect("two", json!("t")).await;
    eddie.expect("all", json!("a")).await;
    eddie.expect("marker", json!(3)).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn the_plugins_action_rule_applies_to_emits_when_configured() {
    let db = StrapiDb::new("").await;
    let bridge =
        Bridge::start(db.config("content_types = \"*\"\n[auth]\npermission_mode = \"action\"\n"))
            .await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    let mut alice = SioClient::connected(bridge.addr, json!({ "token": jwt(ALICE, false) })).await;
    // Under the plugin's rule a create needs the create permission: Authenticated has it on
    // message, Public has only find/findOne.
    db.sql("INSERT INTO messages (id, text, created_at, updated_at, published_at) VALUES (30, 'x', now(), now(), now())")
        .await;
    // A custom action needs exactly that action.
    db.sql(&emit_sql(
        true,
        r#"{"emit":"api::message.message.find","data":"find"}"#,
    ))
    .await;
    db.sql(&emit_sql(true, r#"{"raw":"marker","data":4}"#))
        .await;
    public.expect("message:find", json!("find")).await;
    public.expect("marker", json!(4)).await;
    alice.event("message:create").await;
    alice.expect("message:find", json!("find")).await;
    alice.expect("marker", json!(4)).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn the_http_emit_api_of_a_running_bridge() {
    let db = StrapiDb::new("").await;
    let mut cfg = db.config(ALL);
    cfg.admin_token = Some(strapi_io_bridge::config::Secret::new("s3cret-admin"));
    let bridge = Bridge::start(cfg).await;
    let mut eddie = SioClient::connected(bridge.addr, json!({ "token": jwt(EDDIE, false) })).await;
    let http = http_client().unwrap();
    let post = |path: &str, token: Option<&str>, body: &str| {
        let mut request = http
            .post(bridge.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    assert_eq!(post("/io/raw", None, r#"{"raw":"x"}"#).await.0, 401);
    assert_eq!(
        post("/io/raw", Some("wrong"), r#"{"raw":"x"}"#).await.0,
        401
    );
    let (status, body) = post("/io/emit", Some("s3cret-admin"), r#"{"emit":"nope"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("uid and an action"), "{body}");
    let (status, body) = post(
        "/io/emit",
        Some("s3cret-admin"),
        r#"{"emit":"api::chat.chat.typing","data":{"n":1}}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let targeted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(targeted["targeted"], 1, "only eddie may read chats: {body}");
    eddie.expect("chat:typing", json!({"n": 1})).await;
    let (status, _) = post(
        "/io/raw",
        Some("s3cret-admin"),
        r#"{"raw":"hello","data":[1,2],"room":"Editor"}"#,
    )
    .await;
    assert_eq!(status, 202);
    eddie.expect("hello", json!([1, 2])).await;
    bridge.stop().await.unwrap();
}
