//! The Strapi model over the real stream: the statement sequences Strapi issues, replayed on a
//! Strapi-4-shaped database, come out as exactly the events and REST payloads Strapi gives.

use serde_json::{Value, json};

use crate::support::bridge::{Bridge, FULL_ACCESS_TOKEN, StrapiDb};
use crate::support::client::{SioClient, marker};

const RECORDED: &str = include_str!("fixtures/strapi4-recorded.json");

/// Empties the content tables before set-up, so only the replayed writes exist.
const EMPTY_CONTENT: &str = "TRUNCATE messages, chats, homepages, legacy_articles, \
    messages_chat_links, messages_watch_chats_links, messages_author_links, messages_components, \
    components_shared_seos, legacy_articles_localizations_links, files_related_morphs";

/// A SQL literal for a recorded text value (`null` → NULL).
fn literal(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => panic!("no literal for {other}"),
    }
}

fn is_unchanged_toast(value: &Value) -> bool {
    value.get("unchanged_toast").is_some()
}

/// The INSERT that writes `values` (in the recorded column order) into `table`.
fn insert_sql(table: &str, columns: &[String], values: &[Value]) -> String {
    let names: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
    let values: Vec<String> = values.iter().map(literal).collect();
    format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names.join(", "),
        values.join(", ")
    )
}

/// The UPDATE that sets every recorded column except unchanged TOASTed ones.
fn update_sql(table: &str, columns: &[String], values: &[Value]) -> String {
    let id = literal(&values[0]);
    let sets: Vec<String> = columns
        .iter()
        .zip(values)
        .skip(1)
        .filter(|(_, v)| !is_unchanged_toast(v))
        .map(|(c, v)| format!("\"{c}\" = {}", literal(v)))
        .collect();
    format!("UPDATE {table} SET {} WHERE id = {id}", sets.join(", "))
}

/// A client that may read every content type (a full-access API token).
async fn reader(bridge: &Bridge) -> SioClient {
    SioClient::connected(
        bridge.addr,
        json!({ "token": FULL_ACCESS_TOKEN, "strategy": "apiToken" }),
    )
    .await
}

fn singular(table: &str) -> &'static str {
    match table {
        "messages" => "message",
        "homepages" => "homepage",
        "legacy_articles" => "article",
        "chats" => "chat",
        other => panic!("no content type for {other}"),
    }
}

/// The recorded REST body, with attributes the fixture's table has in addition to the
/// recorded one (`extraNote`, added to `messages` after those recordings) set to null.
fn expected_body(rest: &Value, table: &str) -> Value {
    let mut rest = rest.clone();
    if table == "messages" {
        rest["data"]["attributes"]["extraNote"] = Value::Null;
    }
    rest
}

#[tokio::test]
async fn recorded_strapi_writes_come_out_as_the_rest_payloads() {
    crate::support::init_tracing();
    let recorded: Value = serde_json::from_str(RECORDED).unwrap();
    let db = StrapiDb::new(EMPTY_CONTENT).await;
    let bridge = Bridge::start(db.config("content_types = \"*\"")).await;
    let mut client = reader(&bridge).await;

    for case in recorded["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let table = case["table"].as_str().unwrap();
        let columns: Vec<String> = recorded["columns"][table]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c[0].as_str().unwrap().to_owned())
            .collect();
        let action = case["action"].as_str().unwrap();
        let sql = match case["op"].as_str().unwrap() {
            "insert" => insert_sql(table, &columns, case["new"].as_array().unwrap()),
            "update" => {
                if name.starts_with("75") {
                    // The entry the TOAST case updates: created with the recorded old row.
                    db.sql(&insert_sql(
                        table,
                        &columns,
                        case["old"].as_array().unwrap(),
                    ))
                    .await;
                    client.event("message:create").await;
                }
                update_sql(table, &columns, case["new"].as_array().unwrap())
            }
            "delete" => {
                // The row as it was just before the delete (the lab edited it in between).
                db.sql(&update_sql(
                    table,
                    &columns,
                    case["old"].as_array().unwrap(),
                ))
                .await;
                client.event(&format!("{}:update", singular(table))).await;
                format!(
                    "DELETE FROM {table} WHERE id = {}",
                    literal(&case["old"][0])
                )
            }
            other => panic!("{name}: unknown op {other}"),
        };
        if name.starts_with("84") {
            // Strapi deleted the single type's row before creating it again.
            db.sql("DELETE FROM homepages").await;
            client.event("homepage:delete").await;
        }
        db.sql(&sql).await;
        let event = format!("{}:{action}", singular(table));
        let payload = client.event(&event).await;
        assert_eq!(
            payload,
            expected_body(&case["rest"], table),
            "{name}: payload differs from Strapi's REST response"
        );
        assert!(
            payload["data"]["attributes"].get("secret").is_none(),
            "{name}: the private attribute left the process"
        );
    }
    marker(&db, 1).await;
    client.marker(1).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_strapi_create_spanning_three_transactions_emits_one_event() {
    let db = StrapiDb::new(EMPTY_CONTENT).await;
    let bridge = Bridge::start(db.config("content_types = \"*\"")).await;
    let mut client = reader(&bridge).await;
    db.sql(
        "INSERT INTO chats (id, name, created_at, updated_at) VALUES (1, 'general', now(), now())",
    )
    .await;
    client.event("chat:create").await;

    // wal/06: component row, main row, then every link row, each in its own transaction.
    db.sql("INSERT INTO components_shared_seos (id, meta_title) VALUES (1, 'SEO')")
        .await;
    db.sql(
        "INSERT INTO messages (id, text, secret, created_at, updated_at, published_at) \
         VALUES (1, 'Hello', 'top-secret', now(), now(), now())",
    )
    .await;
    db.sql(
        "BEGIN; \
         INSERT INTO messages_chat_links (message_id, chat_id, message_order) VALUES (1, 1, 1); \
         INSERT INTO messages_watch_chats_links (message_id, chat_id, chat_order) VALUES (1, 1, 1); \
         INSERT INTO messages_components (entity_id, component_id, component_type, field) \
           VALUES (1, 1, 'shared.seo', 'seo'); \
         COMMIT",
    )
    .await;
    let created = client.event("message:create").await;
    assert_eq!(created["data"]["id"], 1);
    assert_eq!(created["data"]["attributes"]["text"], "Hello");
    assert!(created["data"]["attributes"].get("secret").is_none());
    assert!(created["data"]["attributes"].get("chat").is_none());
    assert!(created["data"]["attributes"].get("seo").is_none());

    // A delete cascades to the link tables in the same transaction: still one event.
    db.sql("DELETE FROM messages WHERE id = 1").await;
    let deleted = client.event("message:delete").await;
    assert_eq!(deleted["data"]["attributes"]["text"], "Hello");
    db.sql("DELETE FROM components_shared_seos WHERE id = 1")
        .await;
    marker(&db, 1).await;
    client.marker(1).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_draft_created_unpublished_then_published_and_a_single_type() {
    let db = StrapiDb::new(EMPTY_CONTENT).await;
    let bridge = Bridge::start(db.config("content_types = \"*\"")).await;
    let mut client = reader(&bridge).await;

    db.sql("INSERT INTO messages (id, text, created_at, updated_at, published_at) VALUES (7, 'draft', now(), now(), NULL)")
        .await;
    let draft = client.event("message:create").await;
    assert_eq!(draft["data"]["attributes"]["publishedAt"], Value::Null);
    db.sql("UPDATE messages SET text = 'draft v2', updated_at = now() WHERE id = 7")
        .await;
    client.event("message:update").await;
    db.sql("UPDATE messages SET published_at = '2026-01-02 03:04:05.678', updated_at = now() WHERE id = 7")
        .await;
    let published = client.event("message:publish").await;
    assert_eq!(
        published["data"]["attributes"]["publishedAt"],
        "2026-01-02T03:04:05.678Z"
    );
    db.sql("UPDATE messages SET text = 'edited while published', updated_at = now() WHERE id = 7")
        .await;
    client.event("message:update").await;
    db.sql("UPDATE messages SET published_at = NULL WHERE id = 7")
        .await;
    client.event("message:unpublish").await;

    // A single type: INSERT and UPDATE are createOrUpdate, publish transitions stay themselves.
    db.sql("INSERT INTO homepages (id, title, created_at, updated_at, published_at) VALUES (1, 'Welcome', now(), now(), now())")
        .await;
    client.event("homepage:createOrUpdate").await;
    db.sql("UPDATE homepages SET title = 'Welcome v2' WHERE id = 1")
        .await;
    let updated = client.event("homepage:createOrUpdate").await;
    assert_eq!(updated["data"]["attributes"]["title"], "Welcome v2");
    db.sql("UPDATE homepages SET published_at = NULL WHERE id = 1")
        .await;
    client.event("homepage:unpublish").await;
    db.sql("DELETE FROM homepages WHERE id = 1").await;
    client.event("homepage:delete").await;

    // collectionName differs from the plural name: legacy_articles holds `article`.
    db.sql("INSERT INTO legacy_articles (id, title, headline_text, locale, created_at, updated_at) VALUES (3, 'Bonjour', 'Titre', 'fr', now(), now())")
        .await;
    let article = client.event("article:create").await;
    assert_eq!(article["data"]["attributes"]["locale"], "fr");
    assert_eq!(article["data"]["attributes"]["headlineText"], "Titre");
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn without_full_replica_identity_publish_and_toast_still_come_out_right() {
    // The state set-up leaves messages in, then taken back to DEFAULT identity.
    let db = StrapiDb::new(EMPTY_CONTENT).await;
    db.sql(
        "INSERT INTO messages (id, text, rich, created_at, updated_at, published_at) \
         VALUES (9, 'seeded draft', \
           (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400)), \
           now(), now(), NULL); \
         ALTER TABLE messages REPLICA IDENTITY DEFAULT",
    )
    .await;
    let bridge = Bridge::start(db.config("content_types = \"*\"")).await;
    let mut client = reader(&bridge).await;
    let rich: String = db
        .db
        .client()
        .await
        .query_one("SELECT rich FROM messages WHERE id = 9", &[])
        .await
        .unwrap()
        .get(0);
    assert!(rich.len() > 8000, "rich is big enough to be TOASTed");

    // Publish is told from the state seeded at start: no old row under DEFAULT identity.
    db.sql("UPDATE messages SET published_at = now() WHERE id = 9")
        .await;
    let published = client.event("message:publish").await;
    // rich was not sent (unchanged TOAST): the bridge re-read it, never a placeholder.
    assert_eq!(published["data"]["attributes"]["rich"], rich);
    db.sql("UPDATE messages SET published_at = NULL WHERE id = 9")
        .await;
    client.event("message:unpublish").await;
    // A delete under DEFAULT identity carries only the key.
    db.sql("DELETE FROM messages WHERE id = 9").await;
    let deleted = client.event("message:delete").await;
    assert_eq!(
        deleted,
        json!({"data": {"id": 9, "attributes": {}}, "meta": {}})
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn only_configured_types_and_actions_go_out() {
    let db = StrapiDb::new(EMPTY_CONTENT).await;
    let bridge = Bridge::start(db.config("[content_types]\nchat = [\"create\"]\n")).await;
    let mut client = reader(&bridge).await;
    db.sql("INSERT INTO messages (id, text, created_at, updated_at) VALUES (1, 'not configured', now(), now())")
        .await;
    db.sql("INSERT INTO chats (id, name, created_at, updated_at) VALUES (1, 'a', now(), now())")
        .await;
    db.sql("UPDATE chats SET name = 'b' WHERE id = 1").await;
    db.sql("TRUNCATE chats CASCADE").await;
    marker(&db, 1).await;
    assert_eq!(
        client.event("chat:create").await["data"]["attributes"]["name"],
        "a"
    );
    client.marker(1).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn an_unknown_content_type_key_stops_the_start_listing_the_known_ones() {
    let db = StrapiDb::new("").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = strapi_io_bridge::pipeline::run(
        db.config("[content_types]\nmesage = \"*\"\n"),
        listener,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("an unknown key must stop the start");
    let text = format!("{err:#}");
    assert!(text.contains("\"mesage\""), "{text}");
    assert!(text.contains("message (api::message.message)"), "{text}");
}

#[tokio::test]
async fn a_schema_change_reloads_the_catalog_and_publishes_new_tables() {
    let db = StrapiDb::new(EMPTY_CONTENT).await;
    let bridge = Bridge::start(db.config("content_types = \"*\"")).await;
    let mut client = reader(&bridge).await;

    // What Strapi does on boot after a new attribute and a new content type: DDL first, then
    // it rewrites the schema row.
    db.sql(
        "ALTER TABLE chats ADD COLUMN topic_line varchar(255); \
         CREATE TABLE notes (id serial PRIMARY KEY, body text, created_at timestamp(6), \
           updated_at timestamp(6), published_at timestamp(6), created_by_id integer, updated_by_id integer); \
         UPDATE strapi_core_store_settings SET value = ( \
           jsonb_set( \
             jsonb_set(value::jsonb, '{api::chat.chat,attributes,topicLine}', '{\"type\":\"string\"}'), \
             '{api::note.note}', \
             '{\"kind\":\"collectionType\",\"collectionName\":\"notes\",\"uid\":\"api::note.note\", \
               \"info\":{\"singularName\":\"note\",\"pluralName\":\"notes\",\"displayName\":\"Note\"}, \
               \"options\":{\"draftAndPublish\":true},\"pluginOptions\":{}, \
               \"attributes\":{\"body\":{\"type\":\"text\"},\"createdAt\":{\"type\":\"datetime\"}, \
                 \"updatedAt\":{\"type\":\"datetime\"},\"publishedAt\":{\"type\":\"datetime\"}}}' \
           ))::text \
         WHERE key = 'strapi_content_types_schema'",
    )
    .await;
    marker(&db, 1).await;
    client.marker(1).await;

    db.sql("INSERT INTO chats (id, name, topic_line, created_at, updated_at) VALUES (5, 'c', 'new attribute', now(), now())")
        .await;
    let chat = client.event("chat:create").await;
    assert_eq!(chat["data"]["attributes"]["topicLine"], "new attribute");

    // The new table was added to the publication by the bridge (it owns it here).
    db.sql("INSERT INTO notes (body, created_at, updated_at, published_at) VALUES ('first note', now(), now(), NULL)")
        .await;
    let note = client.event("note:create").await;
    assert_eq!(note["data"]["attributes"]["body"], "first note");
    db.sql("UPDATE notes SET published_at = now()").await;
    client.event("note:publish").await;
    let identity: String = db
        .db
        .client()
        .await
        .query_one(
            "SELECT relreplident::text FROM pg_class WHERE relname = 'notes'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        identity, "f",
        "the new content table got REPLICA IDENTITY FULL"
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn check_lists_each_content_type_with_its_table_kind_and_actions() {
    let db = StrapiDb::new("").await;
    let cfg = db.config("[content_types]\nmessage = \"*\"\nchat = [\"create\"]\n");
    let report = strapi_io_bridge::check::check(&cfg).await;
    let text = report.to_string();
    assert!(report.can_run(), "{text}");
    let line = |uid: &str| {
        text.lines()
            .find(|l| l.contains(uid))
            .unwrap_or_else(|| panic!("{uid} not listed:\n{text}"))
            .to_owned()
    };
    let message = line("api::message.message");
    assert!(message.contains("table messages"), "{message}");
    assert!(message.contains("collection"), "{message}");
    assert!(message.contains("draft & publish"), "{message}");
    assert!(
        message.contains("create, update, delete, publish, unpublish, createOrUpdate"),
        "{message}"
    );
    let chat = line("api::chat.chat");
    assert!(
        chat.contains("no draft & publish") && chat.contains("events: create"),
        "{chat}"
    );
    let article = line("api::article.article");
    assert!(
        article.contains("table legacy_articles") && article.contains("no events"),
        "{article}"
    );
    let homepage = line("api::homepage.homepage");
    assert!(homepage.contains("single"), "{homepage}");
}
