//! Strapi 5 over the real stream: the transactions a real Strapi 5.54.0 wrote for each REST or
//! admin request (tests/fixtures/strapi5-recorded.json), replayed on the database it laid out
//! (tests/fixtures/strapi5.sql), come out as one event per document with the payload Strapi's
//! content API returned, under REPLICA IDENTITY FULL and under the default identity.

use serde_json::{Value, json};

use crate::support::bridge::{Bridge, FULL_ACCESS_TOKEN5, StrapiDb};
use crate::support::client::{SioClient, marker};

const RECORDED: &str = include_str!("fixtures/strapi5-recorded.json");
const CONTENT_TABLES: [&str; 4] = ["messages", "chats", "homepages", "legacy_articles"];

fn literal(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => panic!("no literal for {other}"),
    }
}

/// `(column, value)` of a recorded row, unchanged TOASTed values left out.
fn columns(row: &Value) -> Vec<(String, Value)> {
    row.as_array()
        .unwrap()
        .iter()
        .filter(|c| c[2].get("unchanged_toast").is_none())
        .map(|c| (c[0].as_str().unwrap().to_owned(), c[2].clone()))
        .collect()
}

fn id_of(row: &Value) -> String {
    let cols = columns(row);
    let (_, id) = cols.iter().find(|(c, _)| c == "id").expect("a recorded id");
    literal(id)
}

/// The SQL of one recorded row change.
fn change_sql(change: &Value) -> String {
    let table = change["table"].as_str().unwrap();
    match change["op"].as_str().unwrap() {
        "insert" => {
            let cols = columns(&change["new"]);
            let names: Vec<String> = cols.iter().map(|(c, _)| format!("\"{c}\"")).collect();
            let values: Vec<String> = cols.iter().map(|(_, v)| literal(v)).collect();
            format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                values.join(", ")
            )
        }
        "update" => {
            let sets: Vec<String> = columns(&change["new"])
                .iter()
                .filter(|(c, _)| c != "id")
                .map(|(c, v)| format!("\"{c}\" = {}", literal(v)))
                .collect();
            format!(
                "UPDATE {table} SET {} WHERE id = {}",
                sets.join(", "),
                id_of(&change["new"])
            )
        }
        "delete" => format!("DELETE FROM {table} WHERE id = {}", id_of(&change["old"])),
        other => panic!("unknown op {other}"),
    }
}

/// What the payload is when the table logs only the key of a deleted row: the ids (and the
/// locale), `publishedAt: null` for an unpublish.
fn key_only(event: &str, payload: &Value) -> Value {
    let data = &payload["data"];
    let mut out = json!({"id": data["id"], "documentId": data["documentId"]});
    if let Some(locale) = data.get("locale") {
        out["locale"] = locale.clone();
    }
    if event.ends_with(":unpublish") {
        out["publishedAt"] = Value::Null;
    }
    json!({"data": out, "meta": {}})
}

async fn replay(full_identity: bool) {
    crate::support::init_tracing();
    let recorded: Value = serde_json::from_str(RECORDED).unwrap();
    let db = StrapiDb::strapi5("").await;
    if !full_identity {
        for table in CONTENT_TABLES {
            db.sql(&format!("ALTER TABLE {table} REPLICA IDENTITY DEFAULT"))
                .await;
        }
    }
    let bridge = Bridge::start(db.config("content_types = \"*\"")).await;
    let mut client = SioClient::connected(
        bridge.addr,
        json!({ "token": FULL_ACCESS_TOKEN5, "strategy": "apiToken" }),
    )
    .await;
    // A first round trip, so the socket is known to be in its rooms before the writes.
    marker(&db, 0).await;
    client.marker(0).await;

    for case in recorded["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        for txn in case["transactions"].as_array().unwrap() {
            let statements: Vec<String> = txn.as_array().unwrap().iter().map(change_sql).collect();
            db.sql(&format!("BEGIN; {}; COMMIT", statements.join("; ")))
                .await;
        }
        for expected in case["events"].as_array().unwrap() {
            let event = expected["event"].as_str().unwrap();
            let payload = client.event(event).await;
            let deleted_row_only =
                !full_identity && (event.ends_with(":delete") || event.ends_with(":unpublish"));
            let want = if deleted_row_only {
                key_only(event, &expected["payload"])
            } else {
                expected["payload"].clone()
            };
            assert_eq!(payload, want, "{name}: {event} payload");
            assert!(
                payload["data"].get("secret").is_none(),
                "{name}: the private attribute left the process"
            );
        }
    }
    // Nothing else came: every transaction above produced exactly the events listed.
    marker(&db, 1).await;
    client.marker(1).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn recorded_strapi5_requests_emit_one_event_per_document_with_the_rest_body() {
    replay(true).await;
}

#[tokio::test]
async fn recorded_strapi5_requests_under_the_default_replica_identity() {
    replay(false).await;
}

#[tokio::test]
async fn check_on_a_strapi5_database_names_the_layout_and_the_jwt_mode() {
    let db = StrapiDb::strapi5("").await;
    let cfg = db.config("content_types = \"*\"\n[auth]\njwt_management = \"refresh\"\n");
    let report = strapi_io_bridge::check::check(&cfg).await;
    let text = report.to_string();
    assert!(report.can_run(), "{text}");
    assert!(text.contains("Strapi 5 layout"), "{text}");
    assert!(text.contains("jwt_management = refresh"), "{text}");
    // setup published the *_lnk tables and made the content tables FULL.
    assert!(
        text.contains("all 23 Strapi tables the bridge reads are published"),
        "{text}"
    );
    assert!(
        text.contains("replica identity FULL on every content-type table"),
        "{text}"
    );
    let message = text
        .lines()
        .find(|l| l.contains("api::message.message"))
        .unwrap_or_else(|| panic!("message not listed:\n{text}"));
    assert!(message.contains("draft & publish"), "{message}");
}

#[tokio::test]
async fn a_strapi5_schema_change_reloads_the_catalog_and_new_document_tables_emit() {
    let db = StrapiDb::strapi5("").await;
    let bridge = Bridge::start(db.config("content_types = \"*\"")).await;
    let mut client = SioClient::connected(
        bridge.addr,
        json!({ "token": FULL_ACCESS_TOKEN5, "strategy": "apiToken" }),
    )
    .await;
    marker(&db, 0).await;
    client.marker(0).await;

    // What Strapi 5 does on boot after a new attribute and a new draft & publish type: DDL
    // (every content table gets document_id, published_at, locale), then the schema row.
    db.sql(
        "ALTER TABLE chats ADD COLUMN topic_line varchar(255); \
         CREATE TABLE notes (id serial PRIMARY KEY, document_id varchar(255), body text, \
           created_at timestamp(6), updated_at timestamp(6), published_at timestamp(6), \
           created_by_id integer, updated_by_id integer, locale varchar(255)); \
         UPDATE strapi_core_store_settings SET value = ( \
           jsonb_set( \
             jsonb_set(value::jsonb, '{api::chat.chat,attributes,topicLine}', '{\"type\":\"string\"}'), \
             '{api::note.note}', \
             '{\"kind\":\"collectionType\",\"collectionName\":\"notes\",\"uid\":\"api::note.note\", \
               \"info\":{\"singularName\":\"note\",\"pluralName\":\"notes\",\"displayName\":\"Note\"}, \
               \"options\":{\"draftAndPublish\":true},\"pluginOptions\":{}, \
               \"attributes\":{\"body\":{\"type\":\"text\"},\"createdAt\":{\"type\":\"datetime\"}, \
                 \"updatedAt\":{\"type\":\"datetime\"},\"publishedAt\":{\"type\":\"datetime\"}, \
                 \"locale\":{\"type\":\"string\",\"private\":true}}}' \
           ))::text \
         WHERE key = 'strapi_content_types_schema'",
    )
    .await;
    marker(&db, 1).await;
    client.marker(1).await;

    db.sql("INSERT INTO chats (id, document_id, name, topic_line, created_at, updated_at, published_at) \
            VALUES (5, 'chat5', 'c', 'new attribute', now(), now(), now())")
        .await;
    let chat = client.event("chat:create").await;
    assert_eq!(chat["data"]["topicLine"], "new attribute");
    assert_eq!(chat["data"]["documentId"], "chat5");

    // The new table was published by the bridge; a draft then its publish, as Strapi 5 writes them.
    db.sql(
        "INSERT INTO notes (document_id, body, created_at, updated_at, published_at) \
            VALUES ('note1', 'first note', now(), now(), NULL)",
    )
    .await;
    let note = client.event("note:create").await;
    assert_eq!(note["data"]["body"], "first note");
    assert_eq!(note["data"]["publishedAt"], Value::Null);
    db.sql("BEGIN; UPDATE notes SET updated_at = now() WHERE document_id = 'note1'; \
            INSERT INTO notes (document_id, body, created_at, updated_at, published_at) \
              SELECT document_id, body, created_at, updated_at, now() FROM notes WHERE document_id = 'note1'; \
            COMMIT")
        .await;
    let published = client.event("note:publish").await;
    assert_eq!(published["data"]["documentId"], "note1");
    assert!(published["data"]["publishedAt"].is_string(), "{published}");
    assert!(published["data"].get("locale").is_none(), "{published}");
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_draft_edit_under_the_default_identity_reads_unchanged_toasted_values_back() {
    let db = StrapiDb::strapi5("").await;
    db.sql(
        "INSERT INTO messages (id, document_id, text, rich, created_at, updated_at, published_at) \
         VALUES (9, 'doc9', 'seeded draft', \
           (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400)), \
           now(), now(), NULL); \
         ALTER TABLE messages REPLICA IDENTITY DEFAULT",
    )
    .await;
    let bridge = Bridge::start(db.config("content_types = \"*\"")).await;
    let mut client = SioClient::connected(
        bridge.addr,
        json!({ "token": FULL_ACCESS_TOKEN5, "strategy": "apiToken" }),
    )
    .await;
    marker(&db, 0).await;
    client.marker(0).await;
    let rich: String = db
        .db
        .client()
        .await
        .query_one("SELECT rich FROM messages WHERE id = 9", &[])
        .await
        .unwrap()
        .get(0);
    assert!(rich.len() > 8000, "rich is big enough to be TOASTed");

    // A `?status=draft` edit: PostgreSQL sends `rich` as unchanged TOAST; the payload has it.
    db.sql("UPDATE messages SET text = 'edited', updated_at = now() WHERE id = 9")
        .await;
    let updated = client.event("message:update").await;
    assert_eq!(updated["data"]["text"], "edited");
    assert_eq!(updated["data"]["rich"], rich);
    // Then a publish (the draft updated, a published copy inserted): the seeded id → document
    // copy and the stream agree.
    db.sql(
        "BEGIN; UPDATE messages SET updated_at = now() WHERE id = 9; \
         INSERT INTO messages (id, document_id, text, rich, created_at, updated_at, published_at) \
           SELECT 10, document_id, text, rich, created_at, updated_at, now() FROM messages WHERE id = 9; \
         COMMIT",
    )
    .await;
    let published = client.event("message:publish").await;
    assert_eq!(published["data"]["id"], 10);
    assert_eq!(published["data"]["rich"], rich);
    // Only the published row's key is logged: the copy says it was doc9's published row.
    db.sql("DELETE FROM messages WHERE id = 10").await;
    let unpublished = client.event("message:unpublish").await;
    assert_eq!(
        unpublished,
        json!({"data": {"id": 10, "documentId": "doc9", "publishedAt": null}, "meta": {}})
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn content_types_select_strapi5_documents_and_actions_as_for_strapi4() {
    let db = StrapiDb::strapi5("").await;
    let bridge = Bridge::start(db.config("[content_types]\nmessage = [\"publish\"]\n")).await;
    let mut client = SioClient::connected(
        bridge.addr,
        json!({ "token": FULL_ACCESS_TOKEN5, "strategy": "apiToken" }),
    )
    .await;
    marker(&db, 0).await;
    client.marker(0).await;
    // Not configured: chats; not selected: the create and the draft edit. Each its own
    // transaction, as Strapi 5 writes them.
    for sql in [
        "INSERT INTO chats (document_id, name, created_at, updated_at, published_at) \
           VALUES ('c1', 'chat', now(), now(), now())",
        "INSERT INTO messages (id, document_id, text, created_at, updated_at, published_at) \
           VALUES (1, 'm1', 'draft', now(), now(), NULL)",
        "UPDATE messages SET text = 'draft v2' WHERE id = 1",
        "BEGIN; UPDATE messages SET updated_at = now() WHERE id = 1; \
           INSERT INTO messages (id, document_id, text, created_at, updated_at, published_at) \
             VALUES (2, 'm1', 'draft v2', now(), now(), now()); COMMIT",
    ] {
        db.sql(sql).await;
    }
    let published = client.event("message:publish").await;
    assert_eq!(published["data"]["id"], 2);
    assert_eq!(published["data"]["text"], "draft v2");
    marker(&db, 1).await;
    client.marker(1).await;
    bridge.stop().await.unwrap();
}
