//! Strapi 5 documents: the row changes of one transaction folded into one event per document.
//!
//! Strapi 5 keeps a document as rows sharing `document_id` (and `locale`): with draft &
//! publish, a draft row (`published_at` null) and, once published, a separate published row
//! whose `id` changes on every publish. Each operation is one transaction, so the model
//! collects the transaction's rows per (table, `document_id`, `locale`) and decides at commit:
//!
//! | the transaction, for one document | action | payload |
//! |---|---|---|
//! | a draft row appears (nothing was there) | `create` | the published row if one appeared, else the draft |
//! | the draft row disappears | `delete` | the last version seen, published first |
//! | a published row appears, none disappears | `publish` | the new published row |
//! | the published row disappears, none appears | `unpublish` | the removed row, `publishedAt: null` |
//! | anything else | `update` | the published row if it changed, else the draft |
//!
//! A document of a type without draft & publish is one row: an INSERT is `create`, a DELETE
//! `delete`, the rest `update`. Single types say `createOrUpdate` for create and update. The
//! rules rest on Strapi 5 keeping a draft row for every document of a draft & publish type, so
//! an unpublish (only the published row deleted) and a delete (both rows deleted) differ in
//! the transaction itself.
//!
//! A DELETE logged with the key only (the default replica identity) names just the row `id`;
//! the [`DocumentCache`] maps ids to their document for such tables, read from the table when
//! first needed and kept current from the stream.

use std::collections::HashMap;
use std::sync::Arc;

use crate::pgoutput::{OldRow, RowOp, Tuple, Value};

use super::super::{Action, Kind};
use super::Layout;

/// What the cache knows of one row of a document table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowDocument {
    /// `document_id`.
    pub document_id: Arc<str>,
    /// `locale` (null for types without i18n).
    pub locale: Option<Arc<str>>,
    /// Whether it is the published row of a draft & publish type.
    pub published: bool,
}

/// Per table without REPLICA IDENTITY FULL: row id → its document.
pub(crate) type DocumentCache = HashMap<String, HashMap<i64, RowDocument>>;

/// One document of one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DocKey {
    table: String,
    /// `None` when a key-only DELETE named a row the cache does not know.
    document_id: Option<Arc<str>>,
    locale: Option<Arc<str>>,
    /// Tells apart unknown rows (no document id).
    unknown_row: Option<i64>,
}

/// The net effect of the transaction on one row.
#[derive(Debug)]
struct RowNet {
    id: i64,
    published: bool,
    /// The row existed before the transaction (its first change was an UPDATE or DELETE).
    before: bool,
    /// The row exists after it (its last change was an INSERT or UPDATE).
    after: bool,
    /// The newest full row seen: the new row, or the old row of a DELETE logged in full.
    tuple: Option<Tuple>,
    /// The old row of an UPDATE logged in full (for unchanged TOAST values).
    old: Option<Tuple>,
}

#[derive(Debug)]
struct Pending {
    layout: Arc<Layout>,
    key: DocKey,
    rows: Vec<RowNet>,
}

/// One decided document event, for the model to build a payload from.
#[derive(Debug)]
pub(crate) struct Decided {
    /// The table's layout.
    pub layout: Arc<Layout>,
    /// The action.
    pub action: Action,
    /// The row id the payload carries.
    pub id: i64,
    /// The document id, when known.
    pub document_id: Option<Arc<str>>,
    /// The locale, when known (for payloads built without a row).
    pub locale: Option<Arc<str>>,
    /// The row the payload is built from; `None`: only the ids are known.
    pub tuple: Option<Tuple>,
    /// Its old version (UPDATE logged in full), for unchanged TOAST values.
    pub old: Option<Tuple>,
    /// Unpublish: `publishedAt` is sent as null.
    pub unpublished: bool,
}

/// The rows of the current transaction, per document, and the id → document cache.
#[derive(Debug, Default)]
pub(crate) struct Documents {
    /// Tables tracked by id (no REPLICA IDENTITY FULL).
    pub cache: DocumentCache,
    pending: Vec<Pending>,
    index: HashMap<DocKey, usize>,
}

/// A column's text, if sent and UTF-8.
fn text_at(tuple: &Tuple, col: Option<usize>) -> Option<&str> {
    std::str::from_utf8(tuple.get(col?)?.as_text()?).ok()
}

fn published_in(layout: &Layout, tuple: &Tuple) -> bool {
    layout.ct.draft_and_publish
        && layout
            .published_at
            .and_then(|c| tuple.get(c))
            .is_some_and(|v| matches!(v, Value::Text(_) | Value::Binary(_)))
}

impl Documents {
    /// Forgets the rows of an unfinished transaction (a new session resends it).
    pub fn begin(&mut self) {
        self.pending.clear();
        self.index.clear();
    }

    /// Whether a transaction has document rows waiting for its commit.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Records one row change (row `id`) of a Strapi 5 content table (`layout.document_id`
    /// is set); the caller has read the id.
    pub fn row(&mut self, layout: Arc<Layout>, id: i64, op: RowOp) {
        let table = layout.relation.name.clone();
        let (doc, before, after, tuple, old) = match op {
            RowOp::Insert { new } => (self.document_of(&layout, &new), false, true, new, None),
            RowOp::Update { old, new } => {
                let old = match old {
                    Some(OldRow::Full(t)) => Some(t),
                    _ => None,
                };
                (self.document_of(&layout, &new), true, true, new, old)
            }
            RowOp::Delete { old } => {
                let doc = match &old {
                    OldRow::Full(t) => self.document_of(&layout, t),
                    OldRow::Key(_) => self.cache.get(&table).and_then(|c| c.get(&id)).cloned(),
                };
                let tuple = match old {
                    OldRow::Full(t) => t,
                    OldRow::Key(_) => Vec::new(),
                };
                (doc, true, false, tuple, None)
            }
        };
        if let Some(cache) = self.cache.get_mut(&table) {
            match (&doc, after) {
                (Some(d), true) => {
                    cache.insert(id, d.clone());
                }
                _ => {
                    cache.remove(&id);
                }
            }
        }
        let published = doc.as_ref().is_some_and(|d| d.published);
        let key = DocKey {
            table,
            document_id: doc.as_ref().map(|d| d.document_id.clone()),
            locale: doc.as_ref().and_then(|d| d.locale.clone()),
            unknown_row: doc.is_none().then_some(id),
        };
        let tuple = (!tuple.is_empty()).then_some(tuple);
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.pending.push(Pending {
                    layout,
                    key: key.clone(),
                    rows: Vec::new(),
                });
                self.index.insert(key, self.pending.len() - 1);
                self.pending.len() - 1
            }
        };
        let rows = &mut self.pending[i].rows;
        match rows.iter_mut().find(|r| r.id == id) {
            Some(r) => {
                r.after = after;
                r.published = published;
                if tuple.is_some() {
                    r.tuple = tuple;
                    r.old = old;
                }
            }
            None => rows.push(RowNet {
                id,
                published,
                before,
                after,
                tuple,
                old,
            }),
        }
    }

    /// The document a full row belongs to.
    fn document_of(&self, layout: &Layout, tuple: &Tuple) -> Option<RowDocument> {
        let document_id = text_at(tuple, layout.document_id)?;
        Some(RowDocument {
            document_id: Arc::from(document_id),
            locale: text_at(tuple, layout.locale).map(Arc::from),
            published: published_in(layout, tuple),
        })
    }

    /// Decides the transaction's events, in the order their documents were first changed.
    pub fn commit(&mut self) -> Vec<Decided> {
        self.index.clear();
        std::mem::take(&mut self.pending)
            .into_iter()
            .filter_map(decide)
            .collect()
    }
}

/// The event one document's row changes stand for (see the module's table).
fn decide(doc: Pending) -> Option<Decided> {
    let Pending { layout, key, rows } = doc;
    let single = layout.ct.kind == Kind::Single;
    let write = |action: Action| match (action, single) {
        (Action::Create | Action::Update, true) => Action::CreateOrUpdate,
        (a, _) => a,
    };
    let appeared = |published: bool| {
        rows.iter()
            .find(|r| r.published == published && !r.before && r.after)
    };
    let vanished = |published: bool| {
        rows.iter()
            .find(|r| r.published == published && r.before && !r.after)
    };
    let changed_after = |published: bool| {
        rows.iter()
            .find(|r| r.published == published && r.after && r.tuple.is_some())
    };
    let any_before = rows.iter().any(|r| r.before);
    let any_after = rows.iter().any(|r| r.after);

    let (action, row, unpublished) = if key.document_id.is_none() {
        // A key-only DELETE of a row the cache did not know: a delete is all it can be.
        (Action::Delete, rows.first()?, false)
    } else if !layout.ct.draft_and_publish {
        let row = rows.iter().rev().find(|r| r.after).or(rows.last())?;
        match (any_before, any_after) {
            (false, true) => (write(Action::Create), row, false),
            (true, false) => (Action::Delete, row, false),
            _ => (write(Action::Update), row, false),
        }
    } else if let (Some(draft), false) = (appeared(false), any_before) {
        (
            write(Action::Create),
            appeared(true).unwrap_or(draft),
            false,
        )
    } else if let Some(draft) = vanished(false) {
        let row = vanished(true)
            .filter(|r| r.tuple.is_some() || draft.tuple.is_none())
            .unwrap_or(draft);
        (Action::Delete, row, false)
    } else if let (Some(published), None) = (appeared(true), vanished(true)) {
        (Action::Publish, published, false)
    } else if let (Some(removed), None) = (vanished(true), appeared(true)) {
        (Action::Unpublish, removed, true)
    } else {
        let row = changed_after(true).or(changed_after(false))?;
        (write(Action::Update), row, false)
    };
    Some(Decided {
        action,
        id: row.id,
        document_id: key.document_id,
        locale: key.locale,
        tuple: row.tuple.clone(),
        old: row.old.clone(),
        unpublished,
        layout,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::super::ContentType;
    use super::*;
    use crate::pgoutput::{Relation, RelationId, ReplicaIdentity};

    /// A `messages`-like table: id, document_id, text, published_at, locale.
    fn layout(draft_and_publish: bool, kind: Kind) -> Arc<Layout> {
        let relation = Arc::new(Relation::described(
            RelationId(1),
            "public",
            "messages",
            ReplicaIdentity::Default,
            &[
                ("id", 23),
                ("document_id", 1043),
                ("text", 1043),
                ("published_at", 1114),
                ("locale", 1043),
            ],
        ));
        Arc::new(Layout {
            relation,
            generation: 0,
            ct: Arc::new(ContentType {
                uid: "api::message.message".to_owned(),
                table: "messages".to_owned(),
                kind,
                singular_name: "message".to_owned(),
                plural_name: "messages".to_owned(),
                draft_and_publish,
                localized: false,
                attributes: Vec::new(),
            }),
            id: Some(0),
            published_at: draft_and_publish.then_some(3),
            columns: Vec::new(),
            document_id: Some(1),
            locale: Some(4),
        })
    }

    fn row(id: i64, doc: &str, published: bool) -> Tuple {
        let t = |s: &str| Value::Text(Bytes::copy_from_slice(s.as_bytes()));
        vec![
            t(&id.to_string()),
            t(doc),
            t("text"),
            if published {
                t("2026-01-01 00:00:00")
            } else {
                Value::Null
            },
            Value::Null,
        ]
    }

    fn key(id: i64) -> RowOp {
        RowOp::Delete {
            old: OldRow::Key(vec![Value::Text(Bytes::from(id.to_string()))]),
        }
    }

    fn actions(d: &mut Documents) -> Vec<(Action, i64)> {
        d.commit().into_iter().map(|e| (e.action, e.id)).collect()
    }

    #[test]
    fn a_row_inserted_then_updated_in_one_transaction_is_a_create() {
        let l = layout(true, Kind::Collection);
        let mut d = Documents::default();
        d.row(
            l.clone(),
            1,
            RowOp::Insert {
                new: row(1, "a", false),
            },
        );
        d.row(
            l,
            1,
            RowOp::Update {
                old: None,
                new: row(1, "a", false),
            },
        );
        assert_eq!(actions(&mut d), [(Action::Create, 1)]);
    }

    #[test]
    fn a_published_row_inserted_alone_is_a_publish_and_documents_keep_their_order() {
        let l = layout(true, Kind::Collection);
        let mut d = Documents::default();
        d.row(
            l.clone(),
            7,
            RowOp::Insert {
                new: row(7, "b", true),
            },
        );
        d.row(
            l,
            8,
            RowOp::Insert {
                new: row(8, "c", false),
            },
        );
        assert_eq!(actions(&mut d), [(Action::Publish, 7), (Action::Create, 8)]);
    }

    #[test]
    fn key_only_deletes_use_the_cache_and_an_unknown_row_is_a_bare_delete() {
        let l = layout(true, Kind::Single);
        let mut d = Documents::default();
        d.cache.insert("messages".to_owned(), HashMap::new());
        // Create (draft + published): the cache learns both rows.
        d.row(
            l.clone(),
            1,
            RowOp::Insert {
                new: row(1, "h", false),
            },
        );
        d.row(
            l.clone(),
            2,
            RowOp::Insert {
                new: row(2, "h", true),
            },
        );
        assert_eq!(actions(&mut d), [(Action::CreateOrUpdate, 2)]);
        // The published row's key alone: an unpublish of document h.
        d.row(l.clone(), 2, key(2));
        let e = d.commit();
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].action.clone(), e[0].unpublished),
            (Action::Unpublish, true)
        );
        assert_eq!(e[0].document_id.as_deref(), Some("h"));
        assert!(e[0].tuple.is_none());
        // The draft's key: every row gone.
        d.row(l.clone(), 1, key(1));
        assert_eq!(actions(&mut d), [(Action::Delete, 1)]);
        // A row the cache never saw: its id is all there is.
        d.row(l, 99, key(99));
        let e = d.commit();
        assert_eq!((e[0].action.clone(), e[0].id), (Action::Delete, 99));
        assert!(e[0].document_id.is_none());
    }

    #[test]
    fn without_draft_and_publish_rows_map_directly() {
        let l = layout(false, Kind::Collection);
        let mut d = Documents::default();
        d.row(
            l.clone(),
            3,
            RowOp::Insert {
                new: row(3, "x", true),
            },
        );
        assert_eq!(actions(&mut d), [(Action::Create, 3)]);
        d.row(
            l.clone(),
            3,
            RowOp::Update {
                old: None,
                new: row(3, "x", true),
            },
        );
        assert_eq!(actions(&mut d), [(Action::Update, 3)]);
        d.row(
            l,
            3,
            RowOp::Delete {
                old: OldRow::Full(row(3, "x", true)),
            },
        );
        assert_eq!(actions(&mut d), [(Action::Delete, 3)]);
    }
}
