//! The model stage: classifies each row change and builds events.
//!
//! A content table with a `document_id` column is Strapi 5's: its rows are folded per
//! document and decided at commit ([`documents`]), with Strapi 5's flat payload. For every
//! row of a Strapi 4 content table it decides Strapi 4's action:
//!
//! | change | collection type | single type |
//! |---|---|---|
//! | INSERT | `create` | `createOrUpdate` |
//! | UPDATE, draft & publish, `published_at` null → set | `publish` | `publish` |
//! | UPDATE, draft & publish, `published_at` set → null | `unpublish` | `unpublish` |
//! | any other UPDATE | `update` | `createOrUpdate` |
//! | DELETE | `delete` | `delete` |
//!
//! The old `published_at` comes from the old row when the table has REPLICA IDENTITY FULL.
//! Otherwise PostgreSQL logs no old row, and the model keeps the set of published entry ids of
//! each selected draft & publish table: read from the table at start (or when the table is
//! first seen without FULL) and kept current from the stream. That copy is read *now*, while
//! the stream may still be replaying older changes, so a publish replayed after a restart can
//! be reported as an update; FULL identity has no such gap. Each such table is named once in a
//! warning.
//!
//! Only the (content type, action) pairs that `content_types` selects get a payload built. A
//! value PostgreSQL did not send (unchanged TOAST) is taken from the old row, or else read back
//! from the table by id; if the entry no longer exists the attribute is left out. Bad data is
//! logged and skipped; [`ModelError`] is only for what the pipeline must retry or stop on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use tokio_postgres::Client;

use crate::config::ContentTypesConfig;
use crate::lsn::Lsn;
use crate::pgoutput::{
    Change, LogicalEmit, OldRow, Relation, RelationId, ReplicaIdentity, RowOp, Tuple, Value,
};

use super::catalog::AttributeType;
use super::catalog::{
    CORE_STORE_TABLE, CatalogError, SCHEMA_KEY, load_catalog, parse_schema, pg_detail, qualified,
};
use super::custom::CustomMessage;
use super::filter::{self, Filter};
use super::payload::{self, EntryBuilder};
use super::{
    AccessChange, AccessTable, Action, Catalog, CatalogHandle, ContentType, Kind, ModelOutput,
    Payload, RawEmit, StrapiEvent,
};
use crate::pg::quote_ident;
use documents::{Documents, RowDocument};

mod documents;

/// The core-store key of the users-permissions advanced settings (`email_confirmation`).
const ADVANCED_KEY: &str = "plugin_users-permissions_advanced";

/// How long the publication DDL after a schema change may wait for a table lock. While
/// `ALTER TABLE … REPLICA IDENTITY` waits, every Strapi query on that table queues behind it,
/// so it gives up quickly when Strapi holds the table and is tried again later.
pub const DDL_LOCK_TIMEOUT: &str = "200ms";
/// When DDL that gave up on a lock is tried again (with the next change after this).
pub const DDL_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// What the model needs from the configuration.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Which content types and actions produce events.
    pub content_types: ContentTypesConfig,
    /// Prefix of the logical messages that carry custom emits.
    pub message_prefix: String,
    /// Whether those messages may send data actions (`create`…); refused otherwise.
    pub allow_data_actions: bool,
    /// The PostgreSQL schema Strapi's tables are in; tables elsewhere are ignored.
    pub schema: String,
    /// The publication the slot streams; content tables missing from it are added after a
    /// schema change when this role may.
    pub publication: String,
}

impl ModelConfig {
    /// The model's part of the whole configuration.
    pub fn from_config(config: &crate::config::Config) -> ModelConfig {
        ModelConfig {
            content_types: config.content_types.clone(),
            message_prefix: config.message_prefix.clone(),
            allow_data_actions: config.allow_data_actions,
            schema: config.database.schema.clone(),
            publication: config.database.publication.clone(),
        }
    }
}

/// Why the model stopped.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `content_types` names content types the catalog does not have (the message lists the
    /// known ones).
    #[error("{0}")]
    Config(String),
    /// A query failed for a reason other than the data (connection lost).
    #[error("{what}: {}", pg_detail(.source))]
    Db {
        /// What the model was doing.
        what: String,
        /// The database error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The catalog could not be loaded at start.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl ModelError {
    /// A database problem that reconnecting may cure; configuration and schema problems are
    /// not.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Config(_) => false,
            ModelError::Db { .. } => true,
            ModelError::Catalog(e) => e.is_retryable(),
        }
    }
}

/// Where the columns of a content type's attributes are in one relation description.
#[derive(Debug)]
struct Layout {
    /// The description this was built from (rebuilt when PostgreSQL resends it).
    relation: Arc<Relation>,
    /// The catalog generation this was built with.
    generation: u64,
    /// The content type.
    ct: Arc<ContentType>,
    /// Column of `id`.
    id: Option<usize>,
    /// Column of `published_at`, for draft & publish types.
    published_at: Option<usize>,
    /// `(attribute index, column index)` of every attribute clients may see, in schema order.
    columns: Vec<(usize, usize)>,
    /// Column of `document_id`: set for Strapi 5 tables, whose rows are folded into documents.
    document_id: Option<usize>,
    /// Column of `locale` (Strapi 5 keys documents by `document_id` and `locale`).
    locale: Option<usize>,
}

/// A payload that waits for values read back from the table.
#[derive(Debug)]
pub(crate) struct ToastJob {
    layout: Arc<Layout>,
    action: Action,
    id: i64,
    new: Tuple,
    old: Option<Tuple>,
    /// Columns to read back.
    missing: Vec<usize>,
    /// Strapi 5: the flat payload's document fields.
    document: Option<DocumentFields>,
}

/// What a Strapi 5 payload adds to the row's attributes.
#[derive(Debug, Clone)]
pub(crate) struct DocumentFields {
    document_id: Option<Arc<str>>,
    locale: Option<Arc<str>>,
    /// Unpublish: `publishedAt` is null.
    unpublished: bool,
}

/// What handling a row needs next.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing more.
    Done,
    /// Read unchanged TOASTed columns back, then finish with [`Model::finish_toast`].
    Toast(ToastJob),
    /// The catalog was replaced: seed and check the publication.
    Reloaded,
    /// A transaction with Strapi 5 document rows committed: read unchanged TOASTed columns
    /// back for these payloads in order, then hand on `commit`.
    Flush {
        /// The payloads still to build, in event order.
        jobs: Vec<ToastJob>,
        /// The transaction's commit marker.
        commit: ModelOutput,
    },
}

/// The model stage's state: catalog, filter, published-state copies.
#[derive(Debug)]
pub struct Model {
    cfg: ModelConfig,
    handle: CatalogHandle,
    catalog: Arc<Catalog>,
    /// Bumped on every catalog replacement, to rebuild layouts.
    generation: u64,
    filter: Filter,
    layouts: HashMap<RelationId, Arc<Layout>>,
    /// Per tracked table, the ids of its published entries.
    published: HashMap<String, HashSet<i64>>,
    /// Tables whose published entries could not be read (logged): their updates stay
    /// updates rather than guesses.
    unreadable: HashSet<String>,
    /// Keys of warnings already logged.
    warned: HashSet<String>,
    /// Commit LSN of the transaction being handled.
    commit_lsn: Lsn,
    in_transaction: bool,
    /// Strapi 5 tables: the transaction's rows per document, and the id → document cache.
    documents: Documents,
    /// When publication DDL that gave up on a lock is due again.
    ddl_retry_at: Option<std::time::Instant>,
}

impl Model {
    /// Builds the model: loads the catalog into `catalog` if it is empty, resolves
    /// `content_types` against it (an unknown or ambiguous key is [`ModelError::Config`]) and
    /// reads which entries are published for the draft & publish tables without REPLICA
    /// IDENTITY FULL.
    pub async fn load(
        client: &Client,
        cfg: ModelConfig,
        catalog: CatalogHandle,
    ) -> Result<Model, ModelError> {
        if catalog.current().is_empty() {
            let loaded = load_catalog(client, &cfg.schema).await?;
            if !loaded.is_empty() {
                catalog.replace(loaded);
            }
        }
        match super::layout::detect(client, &cfg.schema).await {
            Ok(Some(layout)) => tracing::info!(schema = %cfg.schema, "{layout}"),
            Ok(None) => tracing::info!(schema = %cfg.schema, "no Strapi tables yet"),
            Err(e) => sql_problem("reading which Strapi laid out the tables".to_owned(), e)?,
        }
        let mut model = Model::new(cfg, catalog)?;
        model.seed_selected(client).await?;
        Ok(model)
    }

    /// The model over the catalog in `catalog`, without reading the database (no
    /// published-state copies yet).
    pub(crate) fn new(cfg: ModelConfig, catalog: CatalogHandle) -> Result<Model, ModelError> {
        let current = catalog.current();
        let (filter, problems) = filter::resolve(&cfg.content_types, &current);
        if !problems.is_empty() {
            let text = filter::describe(&problems, &current);
            if current.is_empty() {
                tracing::warn!(
                    "{text}; the keys are checked again when Strapi writes its content-type schema"
                );
            } else {
                return Err(ModelError::Config(text));
            }
        }
        if filter == Filter::Nothing {
            tracing::info!(
                "content_types is not set: no data events are sent (custom emits still are)"
            );
        }
        Ok(Model {
            cfg,
            handle: catalog,
            catalog: current,
            generation: 0,
            filter,
            layouts: HashMap::new(),
            published: HashMap::new(),
            unreadable: HashSet::new(),
            warned: HashSet::new(),
            commit_lsn: Lsn::ZERO,
            in_transaction: false,
            documents: Documents::default(),
            ddl_retry_at: None,
        })
    }

    /// Handles one change, appending what it produces to `out` (in stream order). `client` is
    /// an ordinary SQL connection, used to read values PostgreSQL did not send and to reload
    /// after schema changes.
    pub async fn handle(
        &mut self,
        client: &Client,
        change: Change,
        out: &mut Vec<ModelOutput>,
    ) -> Result<(), ModelError> {
        if self
            .ddl_retry_at
            .is_some_and(|at| std::time::Instant::now() >= at)
        {
            self.ddl_retry_at = None;
            self.sync_publication(client).await?;
        }
        if let Change::Row { relation, .. } = &change
            && let Some(table) = self.needs_seed(relation)
        {
            if relation.column_index("document_id").is_some() {
                self.seed_documents(client, &table).await?;
            } else {
                self.seed_table(client, &table).await?;
            }
        }
        match self.step(change, out) {
            Step::Done => Ok(()),
            Step::Toast(job) => {
                let fetched = self.fetch_toast(client, &job).await?;
                self.finish_toast(job, fetched, out);
                Ok(())
            }
            Step::Reloaded => {
                self.sync_publication(client).await?;
                self.seed_selected(client).await
            }
            Step::Flush { jobs, commit } => {
                for job in jobs {
                    let fetched = if job.missing.is_empty() {
                        None
                    } else {
                        self.fetch_toast(client, &job).await?
                    };
                    self.finish_toast(job, fetched, out);
                }
                out.push(commit);
                Ok(())
            }
        }
    }

    /// Handles a change as far as it goes without the database.
    pub(crate) fn step(&mut self, change: Change, out: &mut Vec<ModelOutput>) -> Step {
        match change {
            Change::Begin { commit_lsn, .. } => {
                self.commit_lsn = commit_lsn;
                self.in_transaction = true;
                self.documents.begin();
                Step::Done
            }
            Change::Commit {
                end_lsn,
                commit_time,
                ..
            } => {
                self.in_transaction = false;
                let commit = ModelOutput::Commit {
                    end_lsn,
                    commit_time,
                };
                if self.documents.has_pending() {
                    let jobs = self.document_events(out);
                    if !jobs.is_empty() {
                        return Step::Flush { jobs, commit };
                    }
                }
                out.push(commit);
                Step::Done
            }
            Change::Message(m) => {
                self.message(&m, out);
                Step::Done
            }
            Change::Truncate { relations, .. } => {
                self.truncate(&relations, out);
                Step::Done
            }
            Change::Row { relation, op } => self.row(relation, op, out),
        }
    }

    fn row(&mut self, relation: Arc<Relation>, op: RowOp, out: &mut Vec<ModelOutput>) -> Step {
        if relation.namespace != self.cfg.schema {
            return Step::Done;
        }
        if relation.name == CORE_STORE_TABLE {
            return self.core_store(&relation, &op, out);
        }
        let ct = self
            .catalog
            .by_table(&relation.name)
            .filter(|ct| self.filter.selects(ct))
            .cloned();
        match (AccessTable::from_table_name(&relation.name), ct) {
            (Some(table), None) => {
                out.push(ModelOutput::Access(AccessChange::Row {
                    table,
                    relation,
                    op,
                }));
                Step::Done
            }
            (Some(table), Some(ct)) => {
                out.push(ModelOutput::Access(AccessChange::Row {
                    table,
                    relation: relation.clone(),
                    op: op.clone(),
                }));
                self.content_row(ct, relation, op, out)
            }
            (None, Some(ct)) => self.content_row(ct, relation, op, out),
            (None, None) => Step::Done,
        }
    }

    /// The table to read published ids from before handling a row of `relation`, if any.
    fn needs_seed(&mut self, relation: &Arc<Relation>) -> Option<String> {
        if relation.namespace != self.cfg.schema {
            return None;
        }
        let ct = self.catalog.by_table(&relation.name)?;
        if relation.column_index("document_id").is_some() {
            // Strapi 5: every selected table needs the id → document copy without FULL.
            if !self.filter.selects(ct) {
                return None;
            }
            if relation.replica_identity == ReplicaIdentity::Full {
                self.documents.cache.remove(&relation.name);
                return None;
            }
            if self.documents.cache.contains_key(&relation.name)
                || self.unreadable.contains(&relation.name)
            {
                return None;
            }
            return Some(relation.name.clone());
        }
        if !ct.draft_and_publish || !self.filter.selects(ct) {
            return None;
        }
        if relation.replica_identity == ReplicaIdentity::Full {
            // Old rows come with every change; a copy would only go stale.
            self.published.remove(&relation.name);
            return None;
        }
        if self.published.contains_key(&relation.name)
            || self.unreadable.contains(&relation.name)
            || relation.column_index("published_at").is_none()
        {
            return None;
        }
        Some(relation.name.clone())
    }

    fn layout(&mut self, ct: &Arc<ContentType>, relation: &Arc<Relation>) -> Arc<Layout> {
        if let Some(l) = self.layouts.get(&relation.id)
            && Arc::ptr_eq(&l.relation, relation)
            && Arc::ptr_eq(&l.ct, ct)
            && l.generation == self.generation
        {
            return l.clone();
        }
        let id = relation.column_index("id");
        if id.is_none() {
            tracing::warn!(table = %relation.name, uid = %ct.uid, "content table has no id column: its rows are ignored");
        }
        let published_at = if ct.draft_and_publish {
            let col = relation.column_index("published_at");
            if col.is_none() {
                tracing::warn!(table = %relation.name, uid = %ct.uid, "draft & publish content table has no published_at column: publish and unpublish cannot be told apart");
            }
            col
        } else {
            None
        };
        let mut columns = Vec::with_capacity(ct.attributes.len());
        for (ai, attr) in ct.attributes.iter().enumerate() {
            if !attr.is_public() {
                continue;
            }
            match relation.column_index(&attr.column) {
                Some(ci) => columns.push((ai, ci)),
                None => tracing::warn!(
                    table = %relation.name,
                    attribute = %attr.name,
                    column = %attr.column,
                    "attribute left out of payloads: the table has no column of the name Strapi 4 gives it"
                ),
            }
        }
        let document_id = relation.column_index("document_id");
        let locale = document_id.and_then(|_| relation.column_index("locale"));
        let layout = Arc::new(Layout {
            relation: relation.clone(),
            generation: self.generation,
            ct: ct.clone(),
            id,
            published_at,
            columns,
            document_id,
            locale,
        });
        self.layouts.insert(relation.id, layout.clone());
        layout
    }

    fn content_row(
        &mut self,
        ct: Arc<ContentType>,
        relation: Arc<Relation>,
        op: RowOp,
        out: &mut Vec<ModelOutput>,
    ) -> Step {
        let layout = self.layout(&ct, &relation);
        if layout.document_id.is_some() {
            return self.document_row(layout, op);
        }
        let Some((id, action)) = self.classify(&layout, &op) else {
            return Step::Done;
        };
        if !self.filter.wants(&ct, &action) {
            return Step::Done;
        }
        let (new, old) = match op {
            RowOp::Insert { new } => (new, None),
            RowOp::Update { old, new } => (
                new,
                match old {
                    Some(OldRow::Full(t)) => Some(t),
                    _ => None,
                },
            ),
            RowOp::Delete {
                old: OldRow::Full(t),
            } => (t, None),
            RowOp::Delete {
                old: OldRow::Key(_),
            } => {
                // Only the key was logged: the entry's id is all there is to say.
                let payload = payload::id_only(id);
                self.push_event(&layout, action, id, payload, out);
                return Step::Done;
            }
        };
        let missing: Vec<usize> = layout
            .columns
            .iter()
            .map(|&(_, ci)| ci)
            .filter(|&ci| {
                matches!(new.get(ci), Some(Value::UnchangedToast))
                    && !matches!(
                        old.as_ref().and_then(|o| o.get(ci)),
                        Some(Value::Null | Value::Text(_))
                    )
            })
            .collect();
        let job = ToastJob {
            layout,
            action,
            id,
            new,
            old,
            missing,
            document: None,
        };
        if job.missing.is_empty() {
            self.finish_toast(job, None, out);
            Step::Done
        } else {
            Step::Toast(job)
        }
    }

    /// A row of a Strapi 5 table: collected for its document until the commit.
    fn document_row(&mut self, layout: Arc<Layout>, op: RowOp) -> Step {
        let table = &layout.relation.name;
        let key_tuple = match &op {
            RowOp::Insert { new } | RowOp::Update { new, .. } => new,
            RowOp::Delete { old } => old.tuple(),
        };
        let Some(id) = layout.id.and_then(|c| key_tuple.get(c)).and_then(parse_id) else {
            if self.warn_once(format!("id:{table}")) {
                tracing::warn!(%table, "row without a usable integer id ignored (logged once per table)");
            }
            return Step::Done;
        };
        if let RowOp::Delete {
            old: OldRow::Key(_),
        } = &op
            && !self.documents.cache.contains_key(table)
            && self.warn_once(format!("doc-cache:{table}"))
        {
            tracing::warn!(%table, "a DELETE logged with the key only, and no copy of which document each row belongs to: it is sent as a delete of that row id alone; REPLICA IDENTITY FULL (the bridge's setup sets it) avoids this");
        }
        tracing::trace!(%table, id, "document row");
        self.documents.row(layout, id, op);
        Step::Done
    }

    /// Decides the committed transaction's document events. Payloads that need no database
    /// are built into `out` at once, as long as no earlier one waits; the rest are returned,
    /// in order.
    fn document_events(&mut self, out: &mut Vec<ModelOutput>) -> Vec<ToastJob> {
        let mut jobs = Vec::new();
        for d in self.documents.commit() {
            tracing::trace!(table = %d.layout.ct.table, action = %d.action, id = d.id, "document event decided");
            if !self.filter.wants(&d.layout.ct, &d.action) {
                continue;
            }
            let new = d.tuple.unwrap_or_default();
            let missing: Vec<usize> = d
                .layout
                .columns
                .iter()
                .map(|&(_, ci)| ci)
                .filter(|&ci| {
                    matches!(new.get(ci), Some(Value::UnchangedToast))
                        && !matches!(
                            d.old.as_ref().and_then(|o| o.get(ci)),
                            Some(Value::Null | Value::Text(_))
                        )
                })
                .collect();
            let job = ToastJob {
                layout: d.layout,
                action: d.action,
                id: d.id,
                new,
                old: d.old,
                missing,
                document: Some(DocumentFields {
                    document_id: d.document_id,
                    locale: d.locale,
                    unpublished: d.unpublished,
                }),
            };
            if jobs.is_empty() && job.missing.is_empty() {
                self.finish_toast(job, None, out);
            } else {
                jobs.push(job);
            }
        }
        jobs
    }

    /// The entry id and Strapi action of a row change; keeps the published-id copy current.
    fn classify(&mut self, layout: &Layout, op: &RowOp) -> Option<(i64, Action)> {
        let id_col = layout.id?;
        let table = &layout.relation.name;
        let key_tuple = match op {
            RowOp::Insert { new } | RowOp::Update { new, .. } => new,
            RowOp::Delete { old } => old.tuple(),
        };
        let Some(id) = key_tuple.get(id_col).and_then(parse_id) else {
            if self.warn_once(format!("id:{table}")) {
                tracing::warn!(%table, "row without a usable integer id ignored (logged once per table)");
            }
            return None;
        };
        let single = layout.ct.kind == Kind::Single;
        let plain = if single {
            Action::CreateOrUpdate
        } else {
            Action::Update
        };
        let tracked = self.published.get_mut(table);
        let action = match op {
            RowOp::Insert { new } => {
                if let (Some(set), Some(p)) = (tracked, layout.published_at) {
                    set_published(set, id, is_set(new.get(p)));
                }
                if single {
                    Action::CreateOrUpdate
                } else {
                    Action::Create
                }
            }
            RowOp::Update { old, new } => {
                let Some(p) = layout.published_at else {
                    return Some((id, plain));
                };
                let new_pub = is_set(new.get(p));
                let old_pub = match old {
                    Some(OldRow::Full(t)) => is_set(t.get(p)),
                    _ => tracked.as_ref().map(|set| set.contains(&id)),
                };
                if let Some(set) = tracked {
                    set_published(set, id, new_pub.or(old_pub));
                }
                match (old_pub, new_pub) {
                    (Some(false), Some(true)) => Action::Publish,
                    (Some(true), Some(false)) => Action::Unpublish,
                    _ => plain,
                }
            }
            RowOp::Delete { .. } => {
                if let Some(set) = tracked {
                    set.remove(&id);
                }
                Action::Delete
            }
        };
        Some((id, action))
    }

    /// Builds the payload of a job whose missing values were read back (`fetched[i]` for
    /// `job.missing[i]`; `None` = the entry is gone) and hands the event on.
    pub(crate) fn finish_toast(
        &mut self,
        job: ToastJob,
        fetched: Option<Vec<Option<String>>>,
        out: &mut Vec<ModelOutput>,
    ) {
        let ToastJob {
            layout,
            action,
            id,
            new,
            old,
            missing,
            document,
        } = job;
        let fetched_value = |ci: usize| -> Option<Option<&[u8]>> {
            let i = missing.iter().position(|&m| m == ci)?;
            let values = fetched.as_ref()?;
            values.get(i).map(|v| v.as_deref().map(str::as_bytes))
        };
        let ct = &layout.ct;
        let capacity = 64
            + layout
                .columns
                .iter()
                .map(|&(ai, ci)| {
                    ct.attributes[ai].name.len()
                        + 8
                        + new.get(ci).and_then(Value::as_text).map_or(0, <[u8]>::len)
                })
                .sum::<usize>();
        let mut b = match &document {
            Some(d) => EntryBuilder::flat(id, d.document_id.as_deref(), capacity),
            None => EntryBuilder::new(id, capacity),
        };
        let unpublished = document.as_ref().is_some_and(|d| d.unpublished);
        let mut problems: Vec<(usize, String)> = Vec::new();
        for &(ai, ci) in &layout.columns {
            let attr = &ct.attributes[ai];
            let value: Option<Option<&[u8]>> = match new.get(ci) {
                _ if unpublished && Some(ci) == layout.published_at => Some(None),
                Some(Value::Null) => Some(None),
                Some(Value::Text(t)) => Some(Some(t)),
                Some(Value::Binary(_)) => {
                    problems.push((ai, "binary value".to_owned()));
                    Some(None)
                }
                Some(Value::UnchangedToast) => match old.as_ref().and_then(|o| o.get(ci)) {
                    Some(Value::Text(t)) => Some(Some(t)),
                    Some(Value::Null) => Some(None),
                    _ => fetched_value(ci),
                },
                None => None,
            };
            // Unknown (the entry is gone before its value could be read): left out.
            let Some(value) = value else {
                continue;
            };
            let oid = layout.relation.columns.get(ci).map_or(0, |c| c.type_oid);
            if let Err(problem) = b.attribute(&attr.name, &attr.kind, oid, value) {
                problems.push((ai, problem.to_string()));
            }
        }
        for (ai, problem) in problems {
            let attr = &ct.attributes[ai];
            if self.warn_once(format!("value:{}:{}", ct.table, attr.name)) {
                tracing::warn!(
                    table = %ct.table,
                    entry = id,
                    attribute = %attr.name,
                    "{problem}: sent as null (logged once per attribute)"
                );
            }
        }
        if new.is_empty()
            && let Some(d) = &document
        {
            // Only the ids are known (a DELETE logged with the key only).
            if ct.localized
                && let Some(locale) = &d.locale
            {
                let _ = b.attribute("locale", &AttributeType::String, 0, Some(locale.as_bytes()));
            }
            if d.unpublished {
                let _ = b.attribute("publishedAt", &AttributeType::DateTime, 0, None);
            }
        }
        let payload = b.finish();
        self.push_event(&layout, action, id, payload, out);
    }

    fn push_event(
        &mut self,
        layout: &Layout,
        action: Action,
        id: i64,
        payload: Result<Payload, payload::PayloadError>,
        out: &mut Vec<ModelOutput>,
    ) {
        match payload {
            Ok(payload) => out.push(ModelOutput::Event(StrapiEvent {
                content_type: layout.ct.clone(),
                action,
                entry_id: Some(id),
                payload,
                commit_lsn: self.commit_lsn,
            })),
            // Cannot happen (the builder writes valid JSON); never worth stopping the stream.
            Err(e) => {
                tracing::error!(table = %layout.ct.table, entry = id, "payload not built: {e}")
            }
        }
    }

    fn core_store(&mut self, relation: &Relation, op: &RowOp, out: &mut Vec<ModelOutput>) -> Step {
        let (Some(key_col), Some(value_col)) =
            (relation.column_index("key"), relation.column_index("value"))
        else {
            if self.warn_once("core-store-columns".to_owned()) {
                tracing::warn!(
                    "{CORE_STORE_TABLE} has no key/value columns: schema changes are not followed"
                );
            }
            return Step::Done;
        };
        let new = match op {
            RowOp::Insert { new } | RowOp::Update { new, .. } => new,
            RowOp::Delete { .. } => return Step::Done,
        };
        let Some(Value::Text(key)) = new.get(key_col) else {
            return Step::Done;
        };
        match (&key[..], new.get(value_col)) {
            (k, Some(Value::Text(value))) if k == SCHEMA_KEY.as_bytes() => self.reload(value),
            (k, Some(Value::Text(value))) if k == ADVANCED_KEY.as_bytes() => {
                match serde_json::from_slice::<serde_json::Value>(value) {
                    Ok(v) => out.push(ModelOutput::Access(AccessChange::AdvancedSettings(v))),
                    Err(e) => tracing::warn!(
                        "{ADVANCED_KEY} is not JSON ({e}): users-permissions settings unchanged"
                    ),
                }
                Step::Done
            }
            // An unchanged TOASTed value: the row changed but not the value.
            _ => Step::Done,
        }
    }

    /// Replaces the catalog with the schema Strapi just wrote.
    fn reload(&mut self, value: &Bytes) -> Step {
        let text = String::from_utf8_lossy(value);
        let catalog = match parse_schema(&text) {
            Ok(c) => self.handle.harden(c),
            Err(e) => {
                tracing::warn!("{e}; the previous content-type catalog stays in use");
                return Step::Done;
            }
        };
        if catalog == *self.catalog {
            tracing::debug!("content-type schema rewritten unchanged");
            return Step::Done;
        }
        self.install(catalog);
        Step::Reloaded
    }

    /// Makes `catalog` current: shared handle, layouts, filter, published-id copies.
    pub(crate) fn install(&mut self, catalog: Catalog) {
        self.handle.replace(catalog);
        self.catalog = self.handle.current();
        self.generation += 1;
        self.layouts.clear();
        let (filter, problems) = filter::resolve(&self.cfg.content_types, &self.catalog);
        if !problems.is_empty() {
            tracing::warn!(
                "after the schema change: {}; the other content types keep emitting",
                filter::describe(&problems, &self.catalog)
            );
        }
        self.filter = filter;
        let catalog = &self.catalog;
        let filter = &self.filter;
        self.published.retain(|table, _| {
            catalog
                .by_table(table)
                .is_some_and(|ct| ct.draft_and_publish && filter.selects(ct))
        });
        self.documents
            .cache
            .retain(|table, _| catalog.by_table(table).is_some_and(|ct| filter.selects(ct)));
        // A schema change may have come with new privileges: try again.
        self.unreadable.clear();
        tracing::info!(
            content_types = self.catalog.len(),
            "content-type catalog reloaded after a Strapi schema change"
        );
    }

    fn message(&mut self, m: &LogicalEmit, out: &mut Vec<ModelOutput>) {
        if m.prefix != self.cfg.message_prefix {
            return;
        }
        let commit_lsn = if m.transactional && self.in_transaction {
            self.commit_lsn
        } else {
            m.lsn
        };
        match CustomMessage::parse_logical(&m.content, self.cfg.allow_data_actions) {
            Ok(CustomMessage::Emit { uid, action, data }) => match self.catalog.by_uid(&uid) {
                Some(ct) => out.push(ModelOutput::Event(StrapiEvent {
                    content_type: ct.clone(),
                    action: Action::from_name(&action),
                    entry_id: None,
                    payload: data,
                    commit_lsn,
                })),
                None => tracing::warn!(
                    lsn = %m.lsn,
                    %uid,
                    "custom emit for an unknown content type ignored; {}",
                    filter::known_keys(&self.catalog)
                ),
            },
            Ok(CustomMessage::Raw { event, data, rooms }) => {
                out.push(ModelOutput::Raw(RawEmit { event, data, rooms }));
            }
            Err(e) => tracing::warn!(
                lsn = %m.lsn,
                prefix = %m.prefix,
                "custom message ignored: {e}"
            ),
        }
    }

    fn truncate(&mut self, relations: &[Arc<Relation>], out: &mut Vec<ModelOutput>) {
        for r in relations {
            if r.namespace != self.cfg.schema {
                continue;
            }
            if let Some(table) = AccessTable::from_table_name(&r.name) {
                out.push(ModelOutput::Access(AccessChange::Truncate(table)));
            }
            if let Some(set) = self.published.get_mut(&r.name) {
                set.clear();
            }
            if let Some(map) = self.documents.cache.get_mut(&r.name) {
                map.clear();
            }
            let selected = self
                .catalog
                .by_table(&r.name)
                .is_some_and(|ct| self.filter.selects(ct));
            if selected && self.warn_once(format!("truncate:{}", r.name)) {
                tracing::warn!(
                    table = %r.name,
                    "TRUNCATE of a content table: no per-entry events are sent for it (logged once per table)"
                );
            }
        }
    }

    fn warn_once(&mut self, key: String) -> bool {
        self.warned.insert(key)
    }

    /// Reads the unchanged TOASTed columns of a job back from the table. `None`: the entry no
    /// longer exists (or cannot be read; logged).
    async fn fetch_toast(
        &mut self,
        client: &Client,
        job: &ToastJob,
    ) -> Result<Option<Vec<Option<String>>>, ModelError> {
        let rel = &job.layout.relation;
        let cols: Vec<String> = job
            .missing
            .iter()
            .filter_map(|&ci| rel.columns.get(ci))
            .map(|c| format!("{}::text", quote_ident(&c.name)))
            .collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE \"id\" = $1::int8",
            cols.join(", "),
            qualified(&self.cfg.schema, &rel.name)
        );
        let what = || format!("reading unchanged TOAST values of {} {}", rel.name, job.id);
        let row = match client.query_opt(&sql, &[&job.id]).await {
            Ok(row) => row,
            Err(e) => return sql_problem(what(), e).map(|()| None),
        };
        let Some(row) = row else {
            tracing::warn!(table = %rel.name, entry = job.id, "entry gone before its unchanged TOAST values could be read: they are left out of the payload");
            return Ok(None);
        };
        let mut values = Vec::with_capacity(cols.len());
        for i in 0..cols.len() {
            match row.try_get::<_, Option<String>>(i) {
                Ok(v) => values.push(v),
                Err(e) => return sql_problem(what(), e).map(|()| None),
            }
        }
        Ok(Some(values))
    }

    /// Reads which document each row of a Strapi 5 `table` belongs to.
    async fn seed_documents(&mut self, client: &Client, table: &str) -> Result<(), ModelError> {
        let draft_and_publish = self
            .catalog
            .by_table(table)
            .is_some_and(|ct| ct.draft_and_publish);
        let sql = format!(
            "SELECT \"id\"::int8, \"document_id\"::text, \"locale\"::text, \"published_at\" IS NOT NULL FROM {}",
            qualified(&self.cfg.schema, table)
        );
        let rows = match client.query(&sql, &[]).await {
            Ok(rows) => rows,
            Err(e) => {
                let what = format!(
                    "reading the documents of {table} (a DELETE logged with the key only is then sent as a delete of that row alone)"
                );
                sql_problem(what, e)?;
                self.unreadable.insert(table.to_owned());
                return Ok(());
            }
        };
        let mut map = HashMap::with_capacity(rows.len());
        for row in rows {
            let (Ok(id), Ok(Some(document_id)), Ok(locale), Ok(published)) = (
                row.try_get::<_, i64>(0),
                row.try_get::<_, Option<String>>(1),
                row.try_get::<_, Option<String>>(2),
                row.try_get::<_, bool>(3),
            ) else {
                continue;
            };
            map.insert(
                id,
                RowDocument {
                    document_id: Arc::from(document_id),
                    locale: locale.map(Arc::from),
                    published: published && draft_and_publish,
                },
            );
        }
        if self.warn_once(format!("identity:{table}")) {
            tracing::warn!(
                %table,
                rows = map.len(),
                "table lacks REPLICA IDENTITY FULL: deletes carry only the row id, so a copy of which document each row belongs to is kept, read from the table now, to tell an unpublish from a delete; their payloads carry only the ids; ALTER TABLE … REPLICA IDENTITY FULL (the bridge's setup does it) gives exact old rows"
            );
        }
        self.documents.cache.insert(table.to_owned(), map);
        Ok(())
    }

    /// Reads which entries of `table` are published.
    async fn seed_table(&mut self, client: &Client, table: &str) -> Result<(), ModelError> {
        let sql = format!(
            "SELECT \"id\"::int8 FROM {} WHERE \"published_at\" IS NOT NULL",
            qualified(&self.cfg.schema, table)
        );
        let rows = match client.query(&sql, &[]).await {
            Ok(rows) => rows,
            Err(e) => {
                let what = format!(
                    "reading published entries of {table} (its updates are reported as updates, never as publish or unpublish)"
                );
                sql_problem(what, e)?;
                // Not retried on every row.
                self.unreadable.insert(table.to_owned());
                return Ok(());
            }
        };
        let mut set = HashSet::with_capacity(rows.len());
        for row in rows {
            if let Ok(id) = row.try_get::<_, i64>(0) {
                set.insert(id);
            }
        }
        if self.warn_once(format!("identity:{table}")) {
            tracing::warn!(
                %table,
                published = set.len(),
                "table lacks REPLICA IDENTITY FULL: publish and unpublish are told apart with a copy of which entries are published, read from the table now, and deletes carry only the id; ALTER TABLE … REPLICA IDENTITY FULL (the bridge's setup does it) gives exact old rows"
            );
        }
        self.published.insert(table.to_owned(), set);
        Ok(())
    }

    /// Seeds every selected draft & publish table that is not REPLICA IDENTITY FULL and has no
    /// copy yet.
    async fn seed_selected(&mut self, client: &Client) -> Result<(), ModelError> {
        let tables: Vec<String> = self
            .catalog
            .content_types()
            .filter(|ct| self.filter.selects(ct))
            .filter(|ct| {
                !self.published.contains_key(&ct.table)
                    && !self.documents.cache.contains_key(&ct.table)
                    && !self.unreadable.contains(&ct.table)
            })
            .map(|ct| ct.table.clone())
            .collect();
        if tables.is_empty() {
            return Ok(());
        }
        let rows = match client
            .query(
                "SELECT c.relname::text, c.relreplident::text, EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a \
                   WHERE a.attrelid = c.oid AND a.attname = 'document_id' AND a.attnum > 0 AND NOT a.attisdropped) \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = ANY($2)",
                &[&self.cfg.schema, &tables],
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) => return sql_problem("reading replica identities".to_owned(), e),
        };
        for row in rows {
            let (Ok(table), Ok(identity), Ok(documents)) = (
                row.try_get::<_, String>(0),
                row.try_get::<_, String>(1),
                row.try_get::<_, bool>(2),
            ) else {
                continue;
            };
            if identity == "f" {
                continue;
            }
            if documents {
                self.seed_documents(client, &table).await?;
            } else if self
                .catalog
                .by_table(&table)
                .is_some_and(|ct| ct.draft_and_publish)
            {
                self.seed_table(client, &table).await?;
            }
        }
        Ok(())
    }

    /// After a schema change: puts the selected content tables missing from the publication
    /// into it (with REPLICA IDENTITY FULL) when this role owns them and the publication, and
    /// says what to run otherwise.
    async fn sync_publication(&mut self, client: &Client) -> Result<(), ModelError> {
        let wanted: Vec<(String, String)> = self
            .catalog
            .content_types()
            .filter(|ct| self.filter.selects(ct))
            .map(|ct| (ct.table.clone(), ct.uid.clone()))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let publication = &self.cfg.publication;
        let schema = &self.cfg.schema;
        let what = || format!("checking publication {publication}");
        let info = match client
            .query_opt(
                "SELECT puballtables, pg_has_role(pubowner, 'USAGE') FROM pg_catalog.pg_publication WHERE pubname = $1",
                &[publication],
            )
            .await
        {
            Ok(info) => info,
            Err(e) => return sql_problem(what(), e),
        };
        let Some(info) = info else {
            tracing::warn!(%publication, "publication does not exist: run the bridge's setup");
            return Ok(());
        };
        let all_tables: bool = info.try_get(0).unwrap_or(false);
        let owns_publication: bool = info.try_get(1).unwrap_or(false);
        if all_tables {
            return Ok(());
        }
        let members: HashSet<String> = match client
            .query(
                "SELECT tablename::text FROM pg_catalog.pg_publication_tables WHERE pubname = $1 AND schemaname = $2",
                &[publication, schema],
            )
            .await
        {
            Ok(rows) => rows.iter().filter_map(|r| r.try_get(0).ok()).collect(),
            Err(e) => return sql_problem(what(), e),
        };
        let missing: Vec<&(String, String)> = wanted
            .iter()
            .filter(|(table, _)| !members.contains(table))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing.iter().map(|(t, _)| t.as_str()).collect();
        let owned: HashMap<String, bool> = match client
            .query(
                "SELECT c.relname::text, pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = ANY($2) AND c.relkind IN ('r', 'p')",
                &[schema, &names],
            )
            .await
        {
            Ok(rows) => rows
                .iter()
                .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
                .collect(),
            Err(e) => return sql_problem(what(), e),
        };
        for (table, uid) in missing {
            let Some(&owns_table) = owned.get(table) else {
                tracing::warn!(%table, %uid, "content type's table does not exist");
                continue;
            };
            let target = qualified(schema, table);
            let add = format!(
                "ALTER PUBLICATION {} ADD TABLE {target}",
                quote_ident(publication)
            );
            let full = format!("ALTER TABLE {target} REPLICA IDENTITY FULL");
            if owns_table && owns_publication {
                // One transaction with a short lock timeout: Strapi may hold the table (an
                // export, a long request), and a waiting ALTER would queue its queries.
                let result = client
                    .batch_execute(&format!(
                        "BEGIN; SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'; {add}; {full}; COMMIT"
                    ))
                    .await;
                if result.is_err() {
                    // A failed statement leaves the transaction open and aborted.
                    if let Err(e) = client.batch_execute("ROLLBACK").await {
                        return Err(ModelError::Db {
                            what: what(),
                            source: e,
                        });
                    }
                }
                match result {
                    Ok(()) => {
                        tracing::info!(%table, %uid, %publication, "new content table added to the publication with REPLICA IDENTITY FULL")
                    }
                    Err(e)
                        if e.code()
                            == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
                    {
                        self.ddl_retry_at = Some(std::time::Instant::now() + DDL_RETRY_AFTER);
                        tracing::warn!(%table, %uid, %publication, "content table is busy (locked by another session); adding it to the publication is tried again in {DDL_RETRY_AFTER:?}, or run: {add}; {full};");
                    }
                    Err(e) if e.code().is_some() => {
                        tracing::warn!(%table, %uid, "could not add the table to the publication ({}); as its owner or a superuser run: {add}; {full};", pg_detail(&e))
                    }
                    Err(e) => {
                        return Err(ModelError::Db {
                            what: what(),
                            source: e,
                        });
                    }
                }
            } else {
                tracing::warn!(
                    %table,
                    %uid,
                    %publication,
                    "content table is not in the publication and this role may not add it, so its changes are not streamed; as the table's owner or a superuser run: {add}; {full};"
                );
            }
        }
        Ok(())
    }
}

/// An SQL error about the data (it has a SQLSTATE: missing table, no privilege) is logged and
/// the model goes on; a connection problem stops the model for the pipeline to retry.
fn sql_problem(what: String, e: tokio_postgres::Error) -> Result<(), ModelError> {
    if e.code().is_some() {
        tracing::warn!("{what}: {}", pg_detail(&e));
        Ok(())
    } else {
        Err(ModelError::Db { what, source: e })
    }
}

/// An entry id from its column text.
fn parse_id(v: &Value) -> Option<i64> {
    std::str::from_utf8(v.as_text()?).ok()?.parse().ok()
}

/// Whether a `published_at` value is set; `None` when PostgreSQL did not send it.
fn is_set(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Null => Some(false),
        Value::Text(_) | Value::Binary(_) => Some(true),
        Value::UnchangedToast => None,
    }
}

fn set_published(set: &mut HashSet<i64>, id: i64, published: Option<bool>) {
    match published {
        Some(true) => {
            set.insert(id);
        }
        Some(false) => {
            set.remove(&id);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests;
