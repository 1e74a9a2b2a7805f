//! `tail`: print the committed changes the bridge decodes, one JSON line each.
//!
//! For looking at what the replication stream carries (which tables, which columns, TOAST
//! markers) without Socket.IO in the way. It holds the same slot as `run` and confirms each
//! transaction once its lines are written and flushed to stdout, so it is as durable as the
//! bridge itself: a restart prints every transaction not yet confirmed again, nothing is lost.

use std::io::Write;

use anyhow::Context;
use serde_json::{Map, Value as Json, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::health::Health;
use crate::pgoutput::{Change, Decoder, OldRow, Relation, RowOp, Tuple, Value};
use crate::replication::{self, Progress, Replicated};

/// Streams until `shutdown`, printing to stdout.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
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
                            change_to_json(&change)
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

/// One change as JSON: what a person debugging a database wants to see.
pub fn change_to_json(change: &Change) -> Json {
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
                obj.insert(label.into(), tuple_to_json(relation, tuple));
            }
            if let Some(new) = new {
                obj.insert("new".into(), tuple_to_json(relation, new));
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

fn tuple_to_json(relation: &Relation, tuple: &Tuple) -> Json {
    let mut obj = Map::new();
    for (column, value) in relation.columns.iter().zip(tuple) {
        let v = match value {
            Value::Null => Json::Null,
            Value::Text(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
            Value::Binary(b) => json!({"binary": hex::encode(b)}),
            Value::UnchangedToast => json!({"unchanged_toast": true}),
        };
        obj.insert(column.name.clone(), v);
    }
    Json::Object(obj)
}
