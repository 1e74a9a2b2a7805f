//! `tail`: print the committed changes the bridge decodes, one JSON line each.
//!
//! For looking at what the replication stream carries (which tables, which columns, TOAST
//! markers) without Socket.IO in the way. It holds the same slot as `run` and confirms each
//! transaction once its lines are written and flushed to stdout, so it is as durable as the
//! bridge itself: a restart prints every transaction not yet confirmed again, nothing is lost.
//!
//! Secrets are masked unless `--show-secrets`: every attribute the bridge would never emit
//! (`password`, `private`, `options.privateAttributes`, `[strapi] private_attributes`; read
//! from Strapi's content-type schema, which `tail` follows like `run`) and the secret columns
//! of Strapi's access tables (password hashes, reset and confirmation tokens, API and transfer
//! token key hashes, sessions, webhook headers, OAuth provider secrets in the core store)
//! print as `{"redacted": true}`.

use std::io::Write;

use anyhow::Context;
use serde_json::{Map, Value as Json, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::health::Health;
use crate::pgoutput::{Change, Decoder, OldRow, Relation, RowOp, Tuple, Value};
use crate::replication::{self, Progress, Replicated};
use crate::strapi::CatalogHandle;
use crate::strapi::catalog::{CORE_STORE_TABLE, SCHEMA_KEY, load_catalog, parse_schema};

/// Columns of Strapi's own tables that hold credentials, whatever the schema row says
/// (`strapi_api_tokens.accessKey` is not even private there). Strapi 4 and 5.
const SECRET_COLUMNS: &[(&str, &[&str])] = &[
    (
        "up_users",
        &["password", "reset_password_token", "confirmation_token"],
    ),
    (
        "admin_users",
        &["password", "reset_password_token", "registration_token"],
    ),
    ("strapi_api_tokens", &["access_key", "encrypted_key"]),
    ("strapi_transfer_tokens", &["access_key"]),
    ("strapi_sessions", &["session_id", "child_id"]),
    ("strapi_webhooks", &["headers"]),
];

/// Core-store keys whose value holds secrets (the OAuth providers' client secrets).
const SECRET_STORE_KEYS: &[&str] = &["plugin_users-permissions_grant"];

/// What `tail` masks: the secret columns above and every attribute the catalog keeps private.
#[derive(Debug, Clone)]
pub struct Redactor {
    schema: String,
    catalog: CatalogHandle,
}

impl Redactor {
    /// Masks the secret columns and the private attributes of `catalog` in tables of `schema`.
    pub fn new(schema: impl Into<String>, catalog: CatalogHandle) -> Redactor {
        Redactor {
            schema: schema.into(),
            catalog,
        }
    }

    /// Whether `column` of `relation` is printed masked; `tuple` is the row (for the
    /// core store, whose secrets depend on the key).
    pub fn hides(&self, relation: &Relation, tuple: &Tuple, column: &str) -> bool {
        if relation.namespace != self.schema {
            return false;
        }
        let table = relation.name.as_str();
        if SECRET_COLUMNS
            .iter()
            .any(|(t, cols)| *t == table && cols.contains(&column))
        {
            return true;
        }
        if table == CORE_STORE_TABLE && column == "value" {
            let key = relation
                .column_index("key")
                .and_then(|i| tuple.get(i))
                .and_then(Value::as_text);
            return key.is_some_and(|k| SECRET_STORE_KEYS.iter().any(|s| s.as_bytes() == k));
        }
        let catalog = self.catalog.current();
        catalog.by_table(table).is_some_and(|ct| {
            ct.attributes
                .iter()
                .any(|a| a.column == column && !a.is_public())
        })
    }

    /// Follows a schema row Strapi writes, as `run` does (privacy is never relaxed).
    fn follow(&self, change: &Change) {
        let Change::Row { relation, op } = change else {
            return;
        };
        if relation.namespace != self.schema || relation.name != CORE_STORE_TABLE {
            return;
        }
        let new = match op {
            RowOp::Insert { new } | RowOp::Update { new, .. } => new,
            RowOp::Delete { .. } => return,
        };
        let text = |name: &str| {
            relation
                .column_index(name)
                .and_then(|i| new.get(i))
                .and_then(Value::as_text)
        };
        if text("key") != Some(SCHEMA_KEY.as_bytes()) {
            return;
        }
        if let Some(value) = text("value") {
            match parse_schema(&String::from_utf8_lossy(value)) {
                Ok(catalog) => self.catalog.replace(catalog),
                Err(e) => tracing::warn!("{e}; the previous content-type catalog stays in use"),
            }
        }
    }
}

/// Streams until `shutdown`, printing to stdout. Secrets are masked unless `show_secrets`.
pub async fn run(
    cfg: Config,
    show_secrets: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let redactor = if show_secrets {
        None
    } else {
        let client = crate::pg::connect(&cfg.database).await.with_context(|| {
            format!(
                "connecting to {} to read which attributes are private (--show-secrets prints everything)",
                cfg.database.display_target()
            )
        })?;
        let catalog = CatalogHandle::with_private_attributes(cfg.strapi.private_attributes.clone());
        catalog.replace(
            load_catalog(&client, &cfg.database.schema)
                .await
                .context("reading Strapi's content-type schema to mask private attributes (--show-secrets prints everything without it)")?,
        );
        Some(Redactor::new(cfg.database.schema.clone(), catalog))
    };
    let (tx, mut rx) = mpsc::channel(64);
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let repl = tokio::spawn(replication::run(
        cfg.database.clone(),
        tx,
        progress_rx,
        Health::new(),
        shutdown,
    ));
    let mut decoder = Decoder::new();
    let mut state = Progress::default();
    let stdout = std::io::stdout();
    while let Some(item) = rx.recv().await {
        let mut out = stdout.lock();
        match item {
            Replicated::Session { .. } => {
                decoder = Decoder::new();
                state.in_transaction = false;
            }
            Replicated::CaughtUp => {}
            Replicated::Data(batch) => {
                let count = batch.len() as u64;
                for x in batch {
                    let line = match decoder.decode(&x.payload) {
                        Ok(Some(change)) => {
                            match &change {
                                Change::Begin { .. } => state.in_transaction = true,
                                Change::Commit { end_lsn, .. } => {
                                    state.in_transaction = false;
                                    state.flushed = state.flushed.max(*end_lsn);
                                }
                                _ => {}
                            }
                            if let Some(r) = &redactor {
                                r.follow(&change);
                            }
                            change_to_json(&change, redactor.as_ref())
                        }
                        Ok(None) => continue,
                        Err(e) => json!({"lsn": x.wal_start.to_string(), "error": e.to_string()}),
                    };
                    writeln!(out, "{line}").context("writing to stdout")?;
                }
                state.handed += count;
            }
        }
        out.flush().context("writing to stdout")?;
        drop(out);
        progress_tx.send_replace(state);
    }
    repl.await.context("replication task panicked")??;
    Ok(())
}

/// One change as JSON: what a person debugging a database wants to see, with what `redactor`
/// hides masked (everything shown without one).
pub fn change_to_json(change: &Change, redactor: Option<&Redactor>) -> Json {
    match change {
        Change::Begin {
            xid,
            commit_lsn,
            commit_time,
        } => json!({"type": "begin", "xid": xid, "commit_lsn": commit_lsn.to_string(),
                    "commit_time_us": commit_time.unix_micros()}),
        Change::Commit {
            commit_lsn,
            end_lsn,
            ..
        } => json!({"type": "commit", "commit_lsn": commit_lsn.to_string(),
                    "end_lsn": end_lsn.to_string()}),
        Change::Row { relation, op } => {
            let mut obj = Map::new();
            let (kind, old, new) = match op {
                RowOp::Insert { new } => ("insert", None, Some(new)),
                RowOp::Update { old, new } => ("update", old.as_ref(), Some(new)),
                RowOp::Delete { old } => ("delete", Some(old), None),
            };
            obj.insert("type".into(), kind.into());
            obj.insert(
                "table".into(),
                format!("{}.{}", relation.namespace, relation.name).into(),
            );
            if let Some(old) = old {
                let (label, tuple) = match old {
                    OldRow::Key(t) => ("old_key", t),
                    OldRow::Full(t) => ("old", t),
                };
                obj.insert(label.into(), tuple_to_json(relation, tuple, redactor));
            }
            if let Some(new) = new {
                obj.insert("new".into(), tuple_to_json(relation, new, redactor));
            }
            Json::Object(obj)
        }
        Change::Truncate { relations, .. } => json!({
            "type": "truncate",
            "tables": relations.iter().map(|r| format!("{}.{}", r.namespace, r.name)).collect::<Vec<_>>(),
        }),
        Change::Message(m) => json!({
            "type": "message",
            "transactional": m.transactional,
            "lsn": m.lsn.to_string(),
            "prefix": m.prefix,
            "content": String::from_utf8_lossy(&m.content),
        }),
    }
}

fn tuple_to_json(relation: &Relation, tuple: &Tuple, redactor: Option<&Redactor>) -> Json {
    let mut obj = Map::new();
    for (column, value) in relation.columns.iter().zip(tuple) {
        let hidden = redactor.is_some_and(|r| r.hides(relation, tuple, &column.name));
        let v = match value {
            Value::Null => Json::Null,
            Value::Text(_) | Value::Binary(_) if hidden => json!({"redacted": true}),
            Value::Text(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
            Value::Binary(b) => json!({"binary": hex::encode(b)}),
            Value::UnchangedToast => json!({"unchanged_toast": true}),
        };
        obj.insert(column.name.clone(), v);
    }
    Json::Object(obj)
}
