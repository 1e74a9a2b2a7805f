//! The catalog: which table is which Strapi content type, read from the database alone.
//!
//! Source: the `strapi_content_types_schema` row of `strapi_core_store_settings`, which Strapi
//! rewrites on every boot. It holds, per uid, the table (`collectionName`), kind, names,
//! draft & publish and i18n flags, and every attribute with its type and `private` flag.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Collection or single type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `collectionType`: many entries.
    Collection,
    /// `singleType`: at most one entry.
    Single,
}

/// A Strapi attribute type, as written in the schema (`"type": "biginteger"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeType {
    /// `string`, `text`, `richtext`, `email`, `uid`, `enumeration`: JSON strings.
    String,
    /// `password`: never emitted.
    Password,
    /// `integer`: JSON number.
    Integer,
    /// `biginteger`: JSON string (as Strapi's REST API).
    BigInteger,
    /// `float`: JSON number.
    Float,
    /// `decimal`: JSON number.
    Decimal,
    /// `boolean`.
    Boolean,
    /// `json`, `blocks`: the stored JSON.
    Json,
    /// `date`: `YYYY-MM-DD`.
    Date,
    /// `time`: as Strapi returns it.
    Time,
    /// `datetime`, `timestamp`: ISO-8601 UTC with milliseconds.
    DateTime,
    /// `relation`, `media`, `component`, `dynamiczone`: no column of their own; not emitted.
    NotScalar,
    /// Anything else (custom fields of unknown base type): emitted by its PostgreSQL type.
    Other(String),
}

/// One attribute of a content type that has a column in its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Name in the schema and in REST payloads (`displayTitle`).
    pub name: String,
    /// Column Strapi stores it in (`display_title`).
    pub column: String,
    /// Its type.
    pub kind: AttributeType,
    /// `private: true`: never leaves the process.
    pub private: bool,
}

/// A content type, as Strapi describes it in its schema row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// `api::message.message`
    pub uid: String,
    /// The table (`collectionName`), which can differ from the plural name.
    pub table: String,
    /// Collection or single type.
    pub kind: Kind,
    /// `message`: the event name prefix.
    pub singular_name: String,
    /// `messages`
    pub plural_name: String,
    /// Has `published_at` and publish/unpublish actions.
    pub draft_and_publish: bool,
    /// i18n-localized (has a `locale` attribute).
    pub localized: bool,
    /// Every attribute with a column, in schema order (relations, media and components are
    /// left out: they have no column in the table).
    pub attributes: Vec<Attribute>,
}

/// Every content type, by table and by uid.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    by_uid: HashMap<String, Arc<ContentType>>,
    by_table: HashMap<String, Arc<ContentType>>,
    order: Vec<Arc<ContentType>>,
}

impl Catalog {
    /// A catalog of these content types.
    pub fn new(types: Vec<ContentType>) -> Catalog {
        let mut catalog = Catalog::default();
        for ct in types {
            let ct = Arc::new(ct);
            catalog.by_uid.insert(ct.uid.clone(), ct.clone());
            catalog.by_table.insert(ct.table.clone(), ct.clone());
            catalog.order.push(ct);
        }
        catalog.order.sort_by(|a, b| a.uid.cmp(&b.uid));
        catalog
    }

    /// The content type stored in `table`.
    pub fn by_table(&self, table: &str) -> Option<&Arc<ContentType>> {
        self.by_table.get(table)
    }

    /// The content type with this uid.
    pub fn by_uid(&self, uid: &str) -> Option<&Arc<ContentType>> {
        self.by_uid.get(uid)
    }

    /// Every content type, ordered by uid.
    pub fn content_types(&self) -> impl Iterator<Item = &Arc<ContentType>> {
        self.order.iter()
    }

    /// Number of content types.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// No content types (Strapi never booted on this database).
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The live catalog, shared between the model (which replaces it on reload) and readers such
/// as the HTTP emit API. Cheap to clone; the lock is never held across an `.await`.
#[derive(Debug, Clone, Default)]
pub struct CatalogHandle(Arc<RwLock<Arc<Catalog>>>);

impl CatalogHandle {
    /// A handle holding `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        CatalogHandle(Arc::new(RwLock::new(Arc::new(catalog))))
    }

    /// The catalog now.
    pub fn current(&self) -> Arc<Catalog> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the catalog.
    pub fn replace(&self, catalog: Catalog) {
        let catalog = Arc::new(catalog);
        match self.0.write() {
            Ok(mut guard) => *guard = catalog,
            Err(poisoned) => *poisoned.into_inner() = catalog,
        }
    }
}
