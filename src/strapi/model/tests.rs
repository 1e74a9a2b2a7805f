//! Model tests that need no database: recorded Strapi rows against the REST responses Strapi
//! gave for them, the action table, filtering, routing of access rows, core-store reloads and
//! custom messages. The database paths (seeding published ids, reading TOAST values back,
//! publication upkeep) are exercised against a real PostgreSQL by the integration tests.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value as Json, json};

use super::*;
use crate::config::ActionFilter;
use crate::pgoutput::PgTimestamp;

const RECORDED: &str = include_str!("../../../tests/fixtures/strapi4-recorded.json");
const REFERENCE_SCHEMA: &str =
    include_str!("../../../tests/fixtures/strapi4-content-types-schema.json");
const FIXTURE_SQL: &str = include_str!("../../../tests/fixtures/strapi4.sql");

fn reference_catalog() -> Catalog {
    parse_schema(REFERENCE_SCHEMA).unwrap_or_else(|e| panic!("reference schema: {e}"))
}

fn cfg(content_types: ContentTypesConfig) -> ModelConfig {
    ModelConfig {
        content_types,
        message_prefix: "strapi-io".to_owned(),
        allow_data_actions: false,
        schema: "public".to_owned(),
        publication: "strapi_io".to_owned(),
    }
}

fn model_with(content_types: ContentTypesConfig, catalog: Catalog) -> Model {
    Model::new(cfg(content_types), CatalogHandle::new(catalog))
        .unwrap_or_else(|e| panic!("model: {e}"))
}

fn model(content_types: ContentTypesConfig) -> Model {
    model_with(content_types, reference_catalog())
}

fn only(pairs: &[(&str, &[&str])]) -> ContentTypesConfig {
    ContentTypesConfig::Some(
        pairs
            .iter()
            .map(|(k, actions)| {
                let filter = if actions.is_empty() {
                    ActionFilter::All
                } else {
                    ActionFilter::Only(actions.iter().map(|a| (*a).to_owned()).collect())
                };
                ((*k).to_owned(), filter)
            })
            .collect(),
    )
}

/// Marks `table` as tracked with these published ids (what `load` reads from the table).
fn track(m: &mut Model, table: &str, published: &[i64]) {
    m.published
        .insert(table.to_owned(), published.iter().copied().collect());
}

fn relation(
    id: u32,
    table: &str,
    columns: &[(&str, u32)],
    identity: ReplicaIdentity,
) -> Arc<Relation> {
    Arc::new(Relation::described(
        RelationId(id),
        "public",
        table,
        identity,
        columns,
    ))
}

fn text(s: &str) -> Value {
    Value::Text(Bytes::copy_from_slice(s.as_bytes()))
}

/// A tuple from JSON: strings are text values, null is NULL, `{"unchanged_toast":true}` is an
/// unchanged TOAST value.
fn tuple(values: &[Json]) -> Tuple {
    values
        .iter()
        .map(|v| match v {
            Json::Null => Value::Null,
            Json::String(s) => text(s),
            Json::Object(o) if o.contains_key("unchanged_toast") => Value::UnchangedToast,
            other => panic!("unexpected tuple value {other}"),
        })
        .collect()
}

fn row(relation: &Arc<Relation>, op: RowOp) -> Change {
    Change::Row {
        relation: relation.clone(),
        op,
    }
}

/// Steps a change that must need no database.
fn step(m: &mut Model, change: Change) -> Vec<ModelOutput> {
    let mut out = Vec::new();
    match m.step(change, &mut out) {
        Step::Done => out,
        other => panic!("unexpected {other:?}"),
    }
}

fn events(out: &[ModelOutput]) -> Vec<&StrapiEvent> {
    out.iter()
        .filter_map(|o| match o {
            ModelOutput::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn one_event(out: &[ModelOutput]) -> &StrapiEvent {
    match events(out).as_slice() {
        [e] => e,
        other => panic!("expected one event, got {other:?}"),
    }
}

// ---- chats, homepages, messages: small synthetic tables --------------------------------------

const CHATS: &[(&str, u32)] = &[
    ("id", 23),
    ("name", 1043),
    ("created_at", 1114),
    ("updated_at", 1114),
    ("created_by_id", 23),
    ("updated_by_id", 23),
];

const HOMEPAGES: &[(&str, u32)] = &[
    ("id", 23),
    ("title", 1043),
    ("created_at", 1114),
    ("updated_at", 1114),
    ("published_at", 1114),
    ("created_by_id", 23),
    ("updated_by_id", 23),
];

fn chat_row(id: &str, name: &str) -> Tuple {
    tuple(&[
        json!(id),
        json!(name),
        json!("2026-11-26 16:31:49.301"),
        json!("2026-11-26 16:31:49.301"),
        Json::Null,
        Json::Null,
    ])
}

fn homepage_row(id: &str, published_at: Option<&str>) -> Tuple {
    tuple(&[
        json!(id),
        json!("Welcome"),
        json!("2026-11-26 16:32:21.19"),
        json!("2026-11-26 16:32:21.948"),
        published_at.map_or(Json::Null, |p| json!(p)),
        Json::Null,
        Json::Null,
    ])
}

fn messages_columns() -> Vec<(String, u32)> {
    let v: Json = serde_json::from_str(RECORDED).unwrap_or(Json::Null);
    v["columns"]["messages"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .map(|c| {
                    (
                        c[0].as_str().unwrap_or_default().to_owned(),
                        c[1].as_u64().unwrap_or_default() as u32,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn messages_relation(identity: ReplicaIdentity) -> Arc<Relation> {
    let cols = messages_columns();
    let cols: Vec<(&str, u32)> = cols.iter().map(|(n, o)| (n.as_str(), *o)).collect();
    relation(30, "messages", &cols, identity)
}

/// A messages row: id, text, published_at; every other column NULL.
fn message_row(id: &str, text_value: &str, published_at: Option<&str>) -> Tuple {
    messages_columns()
        .iter()
        .map(|(name, _)| match name.as_str() {
            "id" => text(id),
            "text" => text(text_value),
            "secret" => text("top-secret"),
            "published_at" => published_at.map_or(Value::Null, text),
            "created_at" | "updated_at" => text("2026-11-26 16:32:04.317"),
            _ => Value::Null,
        })
        .collect()
}

fn set_column(t: &mut Tuple, name: &str, v: Value) {
    let i = messages_columns()
        .iter()
        .position(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    t[i] = v;
}

// ---- recorded pairs ---------------------------------------------------------------------------

#[test]
fn recorded_rows_give_the_payloads_strapi_returned_over_rest() {
    let recorded: Json = serde_json::from_str(RECORDED).unwrap_or_else(|e| panic!("{e}"));
    let mut m = model(ContentTypesConfig::All);
    // The lab's slot was created before any content was written.
    track(&mut m, "messages", &[]);
    track(&mut m, "homepages", &[]);
    let cases = recorded["cases"].as_array().cloned().unwrap_or_default();
    assert_eq!(cases.len(), 15);
    for (n, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().unwrap_or_default();
        let table = case["table"].as_str().unwrap_or_default();
        let cols: Vec<(String, u32)> = recorded["columns"][table]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| {
                        (
                            c[0].as_str().unwrap_or_default().to_owned(),
                            c[1].as_u64().unwrap_or_default() as u32,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cols: Vec<(&str, u32)> = cols.iter().map(|(c, o)| (c.as_str(), *o)).collect();
        let values = |key: &str| case[key].as_array().map(|v| tuple(v));
        let identity = if case.get("old").is_some() {
            ReplicaIdentity::Full
        } else {
            ReplicaIdentity::Default
        };
        let rel = relation(100 + n as u32, table, &cols, identity);
        let op = match case["op"].as_str() {
            Some("insert") => RowOp::Insert {
                new: values("new").unwrap_or_default(),
            },
            Some("update") => RowOp::Update {
                old: values("old").map(OldRow::Full),
                new: values("new").unwrap_or_default(),
            },
            Some("delete") => RowOp::Delete {
                old: OldRow::Full(values("old").unwrap_or_default()),
            },
            other => panic!("{name}: op {other:?}"),
        };
        let out = step(&mut m, row(&rel, op));
        let event = one_event(&out);
        assert_eq!(
            event.action.as_str(),
            case["action"].as_str().unwrap_or_default(),
            "{name}: action"
        );
        assert_eq!(event.payload.to_value(), case["rest"], "{name}: payload");
        assert_eq!(
            event.entry_id,
            case["rest"]["data"]["id"].as_i64(),
            "{name}: id"
        );
    }
}

#[test]
fn event_names_use_the_singular_name_not_the_table() {
    let mut m = model(ContentTypesConfig::All);
    let cols = [
        ("id", 23),
        ("title", 1043),
        ("headline_text", 1043),
        ("created_at", 1114),
        ("updated_at", 1114),
        ("created_by_id", 23),
        ("updated_by_id", 23),
        ("locale", 1043),
    ];
    let rel = relation(7, "legacy_articles", &cols, ReplicaIdentity::Default);
    let new = tuple(&[
        json!("3"),
        json!("Bonjour"),
        json!("Shared headline"),
        json!("2026-11-26 16:33:43.696"),
        json!("2026-11-26 16:33:43.696"),
        json!("1"),
        json!("1"),
        json!("fr"),
    ]);
    let out = step(&mut m, row(&rel, RowOp::Insert { new }));
    let e = one_event(&out);
    assert_eq!(e.event_name(), "article:create");
    assert_eq!(e.content_type.uid, "api::article.article");
    assert_eq!(e.payload.to_value()["data"]["attributes"]["locale"], "fr");
    assert_eq!(
        e.payload.to_value()["data"]["attributes"]["headlineText"],
        "Shared headline"
    );
}

// ---- the action table -------------------------------------------------------------------------

fn update(rel: &Arc<Relation>, old: Option<OldRow>, new: Tuple) -> Change {
    row(rel, RowOp::Update { old, new })
}

fn action_of(out: &[ModelOutput]) -> String {
    one_event(out).action.as_str().to_owned()
}

#[test]
fn inserts_are_create_for_collections_and_create_or_update_for_single_types() {
    let mut m = model(ContentTypesConfig::All);
    let chats = relation(1, "chats", CHATS, ReplicaIdentity::Default);
    let homepages = relation(2, "homepages", HOMEPAGES, ReplicaIdentity::Default);
    let messages = messages_relation(ReplicaIdentity::Default);
    let out = step(
        &mut m,
        row(
            &chats,
            RowOp::Insert {
                new: chat_row("1", "general"),
            },
        ),
    );
    assert_eq!(action_of(&out), "create");
    let out = step(
        &mut m,
        row(
            &messages,
            RowOp::Insert {
                new: message_row("1", "hi", None),
            },
        ),
    );
    assert_eq!(action_of(&out), "create");
    let out = step(
        &mut m,
        row(
            &homepages,
            RowOp::Insert {
                new: homepage_row("1", Some("2026-11-26 16:32:21.189")),
            },
        ),
    );
    assert_eq!(action_of(&out), "createOrUpdate");
}

#[test]
fn updates_with_the_old_row_tell_publish_unpublish_and_update_apart() {
    let published = Some("2026-11-26 16:33:00");
    // (old published_at, new published_at, collection action, single-type action)
    let table = [
        (None, published, "publish", "publish"),
        (published, None, "unpublish", "unpublish"),
        (
            published,
            Some("2026-11-26 17:00:00"),
            "update",
            "createOrUpdate",
        ),
        (None, None, "update", "createOrUpdate"),
    ];
    for (old_pub, new_pub, collection, single) in table {
        let mut m = model(ContentTypesConfig::All);
        let messages = messages_relation(ReplicaIdentity::Full);
        let homepages = relation(2, "homepages", HOMEPAGES, ReplicaIdentity::Full);
        let out = step(
            &mut m,
            update(
                &messages,
                Some(OldRow::Full(message_row("4", "x", old_pub))),
                message_row("4", "x", new_pub),
            ),
        );
        assert_eq!(action_of(&out), collection, "{old_pub:?} -> {new_pub:?}");
        let out = step(
            &mut m,
            update(
                &homepages,
                Some(OldRow::Full(homepage_row("1", old_pub))),
                homepage_row("1", new_pub),
            ),
        );
        assert_eq!(action_of(&out), single, "single {old_pub:?} -> {new_pub:?}");
    }
}

#[test]
fn updates_without_the_old_row_use_the_published_copy_and_keep_it_current() {
    let mut m = model(ContentTypesConfig::All);
    let messages = messages_relation(ReplicaIdentity::Default);
    let homepages = relation(2, "homepages", HOMEPAGES, ReplicaIdentity::Default);
    // As read at load: message 1 published, 2 a draft; the homepage published.
    track(&mut m, "messages", &[1]);
    track(&mut m, "homepages", &[1]);
    let p = Some("2026-11-26 16:33:00");
    let steps: [(&Arc<Relation>, Tuple, &str); 9] = [
        (&messages, message_row("1", "edited", p), "update"),
        (&messages, message_row("2", "draft", p), "publish"),
        (&messages, message_row("2", "draft", p), "update"),
        (&messages, message_row("2", "draft", None), "unpublish"),
        (&messages, message_row("2", "draft again", None), "update"),
        (&homepages, homepage_row("1", p), "createOrUpdate"),
        (&homepages, homepage_row("1", None), "unpublish"),
        (&homepages, homepage_row("1", None), "createOrUpdate"),
        (&homepages, homepage_row("1", p), "publish"),
    ];
    for (n, (rel, new, want)) in steps.into_iter().enumerate() {
        let out = step(&mut m, update(rel, None, new));
        assert_eq!(action_of(&out), want, "step {n}");
    }
    // Inserts and deletes keep the copy current too.
    let out = step(
        &mut m,
        row(
            &messages,
            RowOp::Insert {
                new: message_row("5", "new", p),
            },
        ),
    );
    assert_eq!(action_of(&out), "create");
    assert!(m.published["messages"].contains(&5));
    let out = step(
        &mut m,
        row(
            &messages,
            RowOp::Delete {
                old: OldRow::Key(message_row("5", "new", None)),
            },
        ),
    );
    assert_eq!(action_of(&out), "delete");
    assert!(!m.published["messages"].contains(&5));
    // A key-only old row (id changed) says nothing about published_at either.
    let out = step(
        &mut m,
        update(
            &messages,
            Some(OldRow::Key(message_row("1", "", None))),
            message_row("1", "again", None),
        ),
    );
    assert_eq!(action_of(&out), "unpublish");
}

#[test]
fn without_old_row_or_copy_an_update_stays_an_update() {
    let mut m = model(ContentTypesConfig::All);
    let messages = messages_relation(ReplicaIdentity::Default);
    let out = step(
        &mut m,
        update(
            &messages,
            None,
            message_row("1", "x", Some("2026-11-26 16:33:00")),
        ),
    );
    assert_eq!(action_of(&out), "update");
}

#[test]
fn types_without_draft_and_publish_never_publish() {
    let mut m = model(ContentTypesConfig::All);
    let chats = relation(1, "chats", CHATS, ReplicaIdentity::Full);
    let out = step(
        &mut m,
        update(
            &chats,
            Some(OldRow::Full(chat_row("1", "general"))),
            chat_row("1", "general 2"),
        ),
    );
    assert_eq!(action_of(&out), "update");
    assert_eq!(
        one_event(&out).payload.to_value()["data"]["attributes"],
        json!({"name":"general 2","createdAt":"2026-11-26T16:31:49.301Z","updatedAt":"2026-11-26T16:31:49.301Z"})
    );
}

#[test]
fn deletes_carry_the_old_row_or_only_the_id() {
    let mut m = model(ContentTypesConfig::All);
    let homepages_full = relation(2, "homepages", HOMEPAGES, ReplicaIdentity::Full);
    let homepages_key = relation(3, "homepages", HOMEPAGES, ReplicaIdentity::Default);
    let out = step(
        &mut m,
        row(
            &homepages_full,
            RowOp::Delete {
                old: OldRow::Full(homepage_row("1", None)),
            },
        ),
    );
    let e = one_event(&out);
    assert_eq!(e.event_name(), "homepage:delete");
    assert_eq!(
        e.payload.to_value(),
        json!({"data":{"id":1,"attributes":{"title":"Welcome","createdAt":"2026-11-26T16:32:21.190Z","updatedAt":"2026-11-26T16:32:21.948Z","publishedAt":null}},"meta":{}})
    );
    let mut key = vec![Value::Null; HOMEPAGES.len()];
    key[0] = text("2");
    let out = step(
        &mut m,
        row(
            &homepages_key,
            RowOp::Delete {
                old: OldRow::Key(key),
            },
        ),
    );
    assert_eq!(
        one_event(&out).payload.as_str(),
        r#"{"data":{"id":2,"attributes":{}},"meta":{}}"#
    );
}

// ---- payload details --------------------------------------------------------------------------

#[test]
fn private_and_password_attributes_never_leave() {
    let mut m = model(only(&[("plugin::users-permissions.user", &[])]));
    let cols = [
        ("id", 23),
        ("username", 1043),
        ("email", 1043),
        ("provider", 1043),
        ("password", 1043),
        ("reset_password_token", 1043),
        ("confirmation_token", 1043),
        ("confirmed", 16),
        ("blocked", 16),
        ("created_at", 1114),
        ("updated_at", 1114),
        ("created_by_id", 23),
        ("updated_by_id", 23),
    ];
    let rel = relation(9, "up_users", &cols, ReplicaIdentity::Default);
    let new = tuple(&[
        json!("3"),
        json!("bob"),
        json!("bob@example.com"),
        json!("local"),
        json!("$2a$10$hash"),
        json!("reset"),
        json!("confirm"),
        json!("t"),
        json!("f"),
        json!("2026-11-26 16:32:28.242"),
        json!("2026-11-26 16:32:28.242"),
        Json::Null,
        Json::Null,
    ]);
    let out = step(&mut m, row(&rel, RowOp::Insert { new }));
    // The access stage gets the row first, then the event.
    assert!(matches!(
        out.first(),
        Some(ModelOutput::Access(AccessChange::Row {
            table: AccessTable::Users,
            ..
        }))
    ));
    let e = one_event(&out);
    assert_eq!(e.event_name(), "user:create");
    assert_eq!(
        e.payload.to_value()["data"]["attributes"],
        json!({"username":"bob","email":"bob@example.com","provider":"local","confirmed":true,"blocked":false,"createdAt":"2026-11-26T16:32:28.242Z","updatedAt":"2026-11-26T16:32:28.242Z"})
    );
    assert!(!e.payload.as_str().contains("hash"));

    let mut m = model(ContentTypesConfig::All);
    let messages = messages_relation(ReplicaIdentity::Default);
    let out = step(
        &mut m,
        row(
            &messages,
            RowOp::Insert {
                new: message_row("1", "hi", None),
            },
        ),
    );
    let e = one_event(&out);
    assert!(
        e.payload.to_value()["data"]["attributes"]
            .get("secret")
            .is_none()
    );
    assert!(!e.payload.as_str().contains("top-secret"));
}

#[test]
fn bad_column_values_become_null_and_the_rest_goes_out() {
    let mut m = model(ContentTypesConfig::All);
    let messages = messages_relation(ReplicaIdentity::Default);
    let mut new = message_row("1", "hi", None);
    set_column(&mut new, "meta", text("{not json"));
    set_column(&mut new, "likes", text("many"));
    set_column(&mut new, "flag", Value::Binary(Bytes::from_static(&[1])));
    set_column(
        &mut new,
        "rich",
        Value::Text(Bytes::from_static(b"caf\xe9")),
    );
    let out = step(&mut m, row(&messages, RowOp::Insert { new }));
    let attrs = one_event(&out).payload.to_value()["data"]["attributes"].clone();
    assert_eq!(attrs["meta"], Json::Null);
    assert_eq!(attrs["likes"], Json::Null);
    assert_eq!(attrs["flag"], Json::Null);
    assert_eq!(attrs["rich"], "caf\u{fffd}");
    assert_eq!(attrs["text"], "hi");
}

#[test]
fn attributes_whose_column_is_missing_are_left_out() {
    let mut m = model(ContentTypesConfig::All);
    // `name` renamed away in this (hand-altered) table.
    let cols = [("id", 23), ("label", 1043), ("created_at", 1114)];
    let rel = relation(1, "chats", &cols, ReplicaIdentity::Default);
    let new = tuple(&[json!("1"), json!("x"), json!("2026-11-26 16:31:49.301")]);
    let out = step(&mut m, row(&rel, RowOp::Insert { new }));
    assert_eq!(
        one_event(&out).payload.to_value()["data"]["attributes"],
        json!({"createdAt":"2026-11-26T16:31:49.301Z"})
    );
}

#[test]
fn unchanged_toast_without_old_row_is_read_back_by_id() {
    let mut m = model(ContentTypesConfig::All);
    track(&mut m, "messages", &[5]);
    let messages = messages_relation(ReplicaIdentity::Default);
    let published = Some("2026-11-26 16:33:59.23");
    let mut new = message_row("5", "toast test", published);
    set_column(&mut new, "meta", Value::UnchangedToast);
    set_column(&mut new, "rich", Value::UnchangedToast);
    let mut out = Vec::new();
    let job = match m.step(update(&messages, None, new.clone()), &mut out) {
        Step::Toast(job) => job,
        other => panic!("expected a read-back, got {other:?}"),
    };
    assert!(out.is_empty());
    let cols = messages_columns();
    let names: Vec<&str> = job.missing.iter().map(|&i| cols[i].0.as_str()).collect();
    assert_eq!(names, ["meta", "rich"]);
    m.finish_toast(
        job,
        Some(vec![
            Some(r#"{"blob": "x"}"#.to_owned()),
            Some("long".to_owned()),
        ]),
        &mut out,
    );
    let attrs = one_event(&out).payload.to_value()["data"]["attributes"].clone();
    assert_eq!(attrs["meta"], json!({"blob":"x"}));
    assert_eq!(attrs["rich"], "long");
    assert_eq!(one_event(&out).action, Action::Update);

    // The entry is gone by the time it is read: the unknown values are left out, never
    // replaced by a placeholder.
    let mut out = Vec::new();
    let Step::Toast(job) = m.step(update(&messages, None, new), &mut out) else {
        panic!("expected a read-back");
    };
    m.finish_toast(job, None, &mut out);
    let attrs = one_event(&out).payload.to_value()["data"]["attributes"].clone();
    assert!(attrs.get("meta").is_none() && attrs.get("rich").is_none());
    assert_eq!(attrs["text"], "toast test");
}

// ---- filtering --------------------------------------------------------------------------------

#[test]
fn only_configured_pairs_produce_events() {
    let mut m = model(only(&[("message", &["create", "publish"]), ("chat", &[])]));
    let messages = messages_relation(ReplicaIdentity::Full);
    let chats = relation(1, "chats", CHATS, ReplicaIdentity::Default);
    let homepages = relation(2, "homepages", HOMEPAGES, ReplicaIdentity::Default);
    let p = Some("2026-11-26 16:33:00");
    let created = step(
        &mut m,
        row(
            &messages,
            RowOp::Insert {
                new: message_row("1", "a", None),
            },
        ),
    );
    assert_eq!(action_of(&created), "create");
    let edited = step(
        &mut m,
        update(
            &messages,
            Some(OldRow::Full(message_row("1", "a", None))),
            message_row("1", "b", None),
        ),
    );
    assert!(events(&edited).is_empty());
    let published = step(
        &mut m,
        update(
            &messages,
            Some(OldRow::Full(message_row("1", "b", None))),
            message_row("1", "b", p),
        ),
    );
    assert_eq!(action_of(&published), "publish");
    let chat = step(
        &mut m,
        row(
            &chats,
            RowOp::Delete {
                old: OldRow::Key(chat_row("1", "")),
            },
        ),
    );
    assert_eq!(action_of(&chat), "delete");
    let home = step(
        &mut m,
        row(
            &homepages,
            RowOp::Insert {
                new: homepage_row("1", p),
            },
        ),
    );
    assert!(home.is_empty());
}

#[test]
fn unset_content_types_emit_nothing_and_star_means_api_types() {
    let mut m = model(ContentTypesConfig::Unset);
    let chats = relation(1, "chats", CHATS, ReplicaIdentity::Default);
    let insert = || {
        row(
            &chats,
            RowOp::Insert {
                new: chat_row("1", "general"),
            },
        )
    };
    assert!(step(&mut m, insert()).is_empty());

    let mut m = model(ContentTypesConfig::All);
    assert_eq!(events(&step(&mut m, insert())).len(), 1);
    // Strapi's own types are not in "*": an up_roles change is access data only.
    let roles = relation(
        5,
        "up_roles",
        &[("id", 23), ("name", 1043), ("type", 1043)],
        ReplicaIdentity::Default,
    );
    let out = step(
        &mut m,
        row(
            &roles,
            RowOp::Insert {
                new: tuple(&[json!("4"), json!("Moderator"), json!("moderator")]),
            },
        ),
    );
    assert!(events(&out).is_empty());
    assert!(matches!(
        out.as_slice(),
        [ModelOutput::Access(AccessChange::Row {
            table: AccessTable::Roles,
            ..
        })]
    ));
}

#[test]
fn unknown_or_ambiguous_keys_stop_the_start_and_list_the_known_ones() {
    let err =
        |ct: ContentTypesConfig| match Model::new(cfg(ct), CatalogHandle::new(reference_catalog()))
        {
            Err(ModelError::Config(text)) => text,
            other => panic!("expected a config error, got {other:?}"),
        };
    let text = err(only(&[("mesage", &[])]));
    assert!(text.contains("\"mesage\" names no content type"), "{text}");
    assert!(
        text.contains("message (api::message.message)")
            && text.contains("article (api::article.article)")
            && text.contains("homepage (api::homepage.homepage)")
            && text.contains("plugin::users-permissions.user"),
        "{text}"
    );
    let text = err(only(&[("user", &[])]));
    assert!(
        text.contains(
            "\"user\" is the singularName of admin::user and plugin::users-permissions.user"
        ),
        "{text}"
    );
    // uids and singular names both work; `articles` (the plural) does not.
    assert!(
        Model::new(
            cfg(only(&[
                ("api::message.message", &[]),
                ("article", &[]),
                ("locale", &[])
            ])),
            CatalogHandle::new(reference_catalog())
        )
        .is_ok()
    );
    assert!(err(only(&[("articles", &[])])).contains("\"articles\" names no content type"));
    // Before Strapi's first boot nothing is known yet: a warning, not a stop.
    assert!(Model::new(cfg(only(&[("message", &[])])), CatalogHandle::default()).is_ok());
}

// ---- routing ------------------------------------------------------------------------------------

#[test]
fn access_tables_links_components_and_other_schemas() {
    let mut m = model(ContentTypesConfig::All);
    for (n, table) in AccessTable::ALL.into_iter().enumerate() {
        let rel = relation(
            50 + n as u32,
            table.table_name(),
            &[("id", 23)],
            ReplicaIdentity::Default,
        );
        let out = step(
            &mut m,
            row(
                &rel,
                RowOp::Delete {
                    old: OldRow::Key(tuple(&[json!("1")])),
                },
            ),
        );
        assert!(
            matches!(out.as_slice(), [ModelOutput::Access(AccessChange::Row { table: t, .. })] if *t == table),
            "{table:?}: {out:?}"
        );
    }
    for table in [
        "messages_chat_links",
        "messages_components",
        "components_shared_seos",
        "files_related_morphs",
        "legacy_articles_localizations_links",
        "strapi_database_schema",
        "admin_permissions",
    ] {
        let rel = relation(70, table, &[("id", 23)], ReplicaIdentity::Default);
        let out = step(
            &mut m,
            row(
                &rel,
                RowOp::Insert {
                    new: tuple(&[json!("1")]),
                },
            ),
        );
        assert!(out.is_empty(), "{table}: {out:?}");
    }
    let mut other = (*relation(80, "up_roles", &[("id", 23)], ReplicaIdentity::Default)).clone();
    other.namespace = "archive".to_owned();
    let out = step(
        &mut m,
        row(
            &Arc::new(other.clone()),
            RowOp::Insert {
                new: tuple(&[json!("1")]),
            },
        ),
    );
    assert!(out.is_empty());
    let out = step(
        &mut m,
        Change::Truncate {
            relations: vec![
                relation(
                    81,
                    "up_permissions",
                    &[("id", 23)],
                    ReplicaIdentity::Default,
                ),
                relation(82, "messages", &[("id", 23)], ReplicaIdentity::Default),
                Arc::new(other),
            ],
            cascade: false,
            restart_identity: false,
        },
    );
    assert!(matches!(
        out.as_slice(),
        [ModelOutput::Access(AccessChange::Truncate(
            AccessTable::Permissions
        ))]
    ));
}

#[test]
fn truncating_a_content_table_empties_its_published_copy() {
    let mut m = model(ContentTypesConfig::All);
    track(&mut m, "messages", &[1, 2]);
    let out = step(
        &mut m,
        Change::Truncate {
            relations: vec![messages_relation(ReplicaIdentity::Default)],
            cascade: false,
            restart_identity: false,
        },
    );
    assert!(out.is_empty());
    assert!(m.published["messages"].is_empty());
}

#[test]
fn every_commit_is_handed_on_even_when_nothing_else_is() {
    let mut m = model(ContentTypesConfig::Unset);
    let begin = Change::Begin {
        xid: 7,
        commit_lsn: Lsn(0x1B4A888),
        commit_time: PgTimestamp(1),
    };
    assert!(step(&mut m, begin).is_empty());
    let out = step(
        &mut m,
        Change::Commit {
            commit_lsn: Lsn(0x1B4A888),
            end_lsn: Lsn(0x1B4A8B8),
            commit_time: PgTimestamp(1),
        },
    );
    assert!(matches!(
        out.as_slice(),
        [ModelOutput::Commit {
            end_lsn: Lsn(0x1B4A8B8),
            commit_time: PgTimestamp(1)
        }]
    ));
}

// ---- custom messages ------------------------------------------------------------------------------

fn logical(prefix: &str, content: &str, transactional: bool) -> Change {
    Change::Message(LogicalEmit {
        transactional,
        lsn: Lsn(0x2000),
        prefix: prefix.to_owned(),
        content: Bytes::copy_from_slice(content.as_bytes()),
    })
}

#[test]
fn custom_emits_become_events_and_raws_raw_messages() {
    // Custom emits are not subject to content_types.
    let mut m = model(ContentTypesConfig::Unset);
    step(
        &mut m,
        Change::Begin {
            xid: 1,
            commit_lsn: Lsn(0x3000),
            commit_time: PgTimestamp(0),
        },
    );
    let out = step(
        &mut m,
        logical(
            "strapi-io",
            r#"{"emit":"api::message.message.someCustomAction","data":{"x":1}}"#,
            true,
        ),
    );
    let e = one_event(&out);
    assert_eq!(e.event_name(), "message:someCustomAction");
    assert_eq!(e.action, Action::Custom(Arc::from("someCustomAction")));
    assert_eq!(e.entry_id, None);
    assert_eq!(e.payload.as_str(), r#"{"x":1}"#);
    assert_eq!(e.commit_lsn, Lsn(0x3000));

    // A message may not pose as a data event (any database role may send one)…
    let forged = || {
        logical(
            "strapi-io",
            r#"{"emit":"api::chat.chat.create","data":null}"#,
            true,
        )
    };
    assert!(step(&mut m, forged()).is_empty());
    let raw_forged = logical("strapi-io", r#"{"raw":"chat:create","data":null}"#, true);
    assert!(step(&mut m, raw_forged).is_empty());
    // …unless the configuration allows it.
    let mut allowing = cfg(ContentTypesConfig::Unset);
    allowing.allow_data_actions = true;
    let mut trusting = Model::new(allowing, CatalogHandle::new(reference_catalog()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        one_event(&step(&mut trusting, forged())).action,
        Action::Create
    );

    let out = step(
        &mut m,
        logical(
            "strapi-io",
            r#"{"raw":"customEvent","data":[1],"room":["Public","Editor"]}"#,
            false,
        ),
    );
    match out.as_slice() {
        [ModelOutput::Raw(raw)] => {
            assert_eq!(raw.event, "customEvent");
            assert_eq!(raw.data.as_str(), "[1]");
            assert_eq!(
                raw.rooms,
                Some(vec!["Public".to_owned(), "Editor".to_owned()])
            );
        }
        other => panic!("{other:?}"),
    }
    for (prefix, content) in [
        ("strapi-io", r#"{"emit":"api::nothing.nothing.x","data":1}"#),
        ("strapi-io", "{broken"),
        ("strapi-io", r#"{"emit":"message.x"}"#),
        ("other", r#"{"raw":"e","data":1}"#),
    ] {
        assert!(
            step(&mut m, logical(prefix, content, false)).is_empty(),
            "{prefix} {content}"
        );
    }
}

// ---- core store -----------------------------------------------------------------------------------

const CORE_STORE: &[(&str, u32)] = &[
    ("id", 23),
    ("key", 1043),
    ("value", 25),
    ("type", 1043),
    ("environment", 1043),
    ("tag", 1043),
];

fn core_store_row(key: &str, value: Value) -> Tuple {
    vec![
        text("1"),
        text(key),
        value,
        text("object"),
        Value::Null,
        Value::Null,
    ]
}

fn schema_with_note() -> String {
    let mut v: Json = serde_json::from_str(REFERENCE_SCHEMA).unwrap_or(Json::Null);
    v["api::note.note"] = json!({
        "kind": "collectionType",
        "collectionName": "notes",
        "info": {"singularName": "note", "pluralName": "notes"},
        "options": {"draftAndPublish": false},
        "attributes": {"body": {"type": "text"}, "pinnedAt": {"type": "datetime"}}
    });
    if let Some(types) = v.as_object_mut() {
        types.remove("api::chat.chat");
    }
    v.to_string()
}

#[test]
fn a_new_content_type_schema_replaces_the_catalog() {
    let handle = CatalogHandle::new(reference_catalog());
    let mut m = Model::new(
        cfg(only(&[("chat", &[]), ("message", &["create"])])),
        handle.clone(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let store = relation(
        60,
        "strapi_core_store_settings",
        CORE_STORE,
        ReplicaIdentity::Default,
    );
    // Rewritten unchanged (every Strapi boot does that): nothing to do.
    let same = core_store_row(SCHEMA_KEY, text(REFERENCE_SCHEMA));
    assert!(step(&mut m, update(&store, None, same)).is_empty());
    // An unchanged TOASTed value: the schema did not change either.
    let toasted = core_store_row(SCHEMA_KEY, Value::UnchangedToast);
    assert!(step(&mut m, update(&store, None, toasted)).is_empty());
    // Not JSON: the catalog stays.
    let broken = core_store_row(SCHEMA_KEY, text("{"));
    assert!(step(&mut m, update(&store, None, broken)).is_empty());
    assert!(handle.current().by_uid("api::chat.chat").is_some());

    let changed = core_store_row(SCHEMA_KEY, text(&schema_with_note()));
    let mut out = Vec::new();
    assert!(matches!(
        m.step(update(&store, None, changed), &mut out),
        Step::Reloaded
    ));
    assert!(out.is_empty());
    // The shared handle sees the new catalog; `chat` is gone from the filter with a warning.
    assert!(handle.current().by_uid("api::note.note").is_some());
    assert!(handle.current().by_uid("api::chat.chat").is_none());
    let chats = relation(1, "chats", CHATS, ReplicaIdentity::Default);
    let out = step(
        &mut m,
        row(
            &chats,
            RowOp::Insert {
                new: chat_row("1", "general"),
            },
        ),
    );
    assert!(out.is_empty());
    // Messages keep their filter.
    let messages = messages_relation(ReplicaIdentity::Default);
    let out = step(
        &mut m,
        row(
            &messages,
            RowOp::Insert {
                new: message_row("9", "after reload", None),
            },
        ),
    );
    assert_eq!(action_of(&out), "create");
}

#[test]
fn changes_after_a_reload_use_the_new_catalog() {
    let mut m = model(ContentTypesConfig::All);
    let notes = relation(
        61,
        "notes",
        &[("id", 23), ("body", 25), ("pinned_at", 1114)],
        ReplicaIdentity::Default,
    );
    let insert = || {
        row(
            &notes,
            RowOp::Insert {
                new: tuple(&[json!("1"), json!("remember"), json!("2026-11-26 18:00:00")]),
            },
        )
    };
    assert!(step(&mut m, insert()).is_empty());
    let store = relation(
        60,
        "strapi_core_store_settings",
        CORE_STORE,
        ReplicaIdentity::Default,
    );
    let mut out = Vec::new();
    let changed = core_store_row(SCHEMA_KEY, text(&schema_with_note()));
    assert!(matches!(
        m.step(row(&store, RowOp::Insert { new: changed }), &mut out),
        Step::Reloaded
    ));
    let out = step(&mut m, insert());
    let e = one_event(&out);
    assert_eq!(e.event_name(), "note:create");
    assert_eq!(
        e.payload.to_value(),
        json!({"data":{"id":1,"attributes":{"body":"remember","pinnedAt":"2026-11-26T18:00:00.000Z"}},"meta":{}})
    );
}

#[test]
fn users_permissions_advanced_settings_go_to_access() {
    let mut m = model(ContentTypesConfig::Unset);
    let store = relation(
        60,
        "strapi_core_store_settings",
        CORE_STORE,
        ReplicaIdentity::Default,
    );
    let value = r#"{"unique_email":true,"email_confirmation":true,"default_role":"authenticated"}"#;
    let out = step(
        &mut m,
        update(&store, None, core_store_row(ADVANCED_KEY, text(value))),
    );
    match out.as_slice() {
        [ModelOutput::Access(AccessChange::AdvancedSettings(v))] => {
            assert_eq!(v["email_confirmation"], true);
        }
        other => panic!("{other:?}"),
    }
    let out = step(
        &mut m,
        update(&store, None, core_store_row(ADVANCED_KEY, text("nope"))),
    );
    assert!(out.is_empty());
    let out = step(
        &mut m,
        update(
            &store,
            None,
            core_store_row("plugin_upload_metrics", text("{}")),
        ),
    );
    assert!(out.is_empty());
}

// ---- the database fixture ---------------------------------------------------------------------------

/// The content-type schema row of `tests/fixtures/strapi4.sql`.
fn fixture_schema() -> &'static str {
    let start = FIXTURE_SQL.find("$ct$").map(|i| i + 4).unwrap_or(0);
    let end = FIXTURE_SQL[start..]
        .find("$ct$")
        .map(|i| start + i)
        .unwrap_or(start);
    &FIXTURE_SQL[start..end]
}

/// `table` → its column names, from the fixture's `CREATE TABLE` statements.
fn fixture_tables() -> std::collections::HashMap<String, HashSet<String>> {
    let mut tables = std::collections::HashMap::new();
    for block in FIXTURE_SQL.split("CREATE TABLE IF NOT EXISTS ").skip(1) {
        let Some((name, rest)) = block.split_once(" (") else {
            continue;
        };
        let body = rest.split("\n);").next().unwrap_or_default();
        let columns = body
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with('"'))
            .filter_map(|l| l[1..].split_once('"').map(|(c, _)| c.to_owned()))
            .collect();
        tables.insert(name.to_owned(), columns);
    }
    tables
}

#[test]
fn the_fixture_schema_matches_the_fixture_tables() {
    let catalog = parse_schema(fixture_schema()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(catalog.len(), 19);
    let tables = fixture_tables();
    assert_eq!(tables.len(), 39);
    for ct in catalog.content_types() {
        let columns = tables
            .get(&ct.table)
            .unwrap_or_else(|| panic!("{}: no table {}", ct.uid, ct.table));
        for attr in &ct.attributes {
            assert!(
                columns.contains(&attr.column),
                "{}.{}: no column {} in {}",
                ct.uid,
                attr.name,
                attr.column,
                ct.table
            );
        }
        if ct.draft_and_publish {
            assert!(columns.contains("published_at"), "{}", ct.table);
        }
    }
    let message = catalog
        .by_uid("api::message.message")
        .unwrap_or_else(|| panic!("no message"));
    assert_eq!(
        message.attribute("extraNote").map(|a| a.column.as_str()),
        Some("extra_note")
    );
    // Every access table exists too.
    for t in AccessTable::ALL {
        assert!(tables.contains_key(t.table_name()), "{}", t.table_name());
    }
    // And the fixture's row ids line up with what the comments promise.
    for needle in [
        "(1, 'Authenticated', 'Default role given to authenticated user.', 'authenticated'",
        "(2, 'Public', 'Default role given to unauthenticated user.', 'public'",
        "(3, 'Editor',",
        "(1, 'alice', 'alice@example.com'",
        "(2, 'eddie', 'eddie@example.com'",
        "(3, 'bob', 'bob@example.com'",
        "'plugin_users-permissions_advanced'",
    ] {
        assert!(FIXTURE_SQL.contains(needle), "{needle}");
    }
}

#[test]
fn fixture_api_tokens_are_hmac_sha512_of_the_documented_tokens() {
    use hmac::{KeyInit, Mac};
    let salt = "7hOJwW+vNX8lRL0c0cedWA==";
    assert!(FIXTURE_SQL.contains(&format!("API_TOKEN_SALT = {salt}")));
    // Clear tokens as documented in the fixture header, one per token row.
    let header: Vec<&str> = FIXTURE_SQL
        .lines()
        .take_while(|l| l.starts_with("--"))
        .map(|l| l.trim_start_matches("--").trim())
        .filter(|l| l.len() == 256 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert_eq!(header.len(), 3);
    let mut seen = HashSet::new();
    for clear in header {
        let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(salt.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        mac.update(clear.as_bytes());
        let key = hex::encode(mac.finalize().into_bytes());
        assert!(
            FIXTURE_SQL.contains(&format!("'{key}'")),
            "no row for {clear}"
        );
        seen.insert(key);
    }
    assert_eq!(seen.len(), 3);
}
