//! The catalog: which table is which Strapi content type, read from the database alone.
//!
//! Source: the `strapi_content_types_schema` row of `strapi_core_store_settings`, which Strapi
//! rewrites on every boot. It holds, per uid, the table (`collectionName`), kind, names,
//! draft & publish and i18n flags, and every attribute with its type and `private` flag.
//! Components are not in it (and never needed: their rows live in their own tables).
//!
//! Privacy follows Strapi's content-API sanitizer: an attribute is private when its `private`
//! is truthy (as JavaScript's `!!attr.private`), when the type's `options.privateAttributes`
//! lists it, or when the site-wide list (`config/api.js` `responses.privateAttributes`, which
//! is not in the database: `[strapi] private_attributes`) names it; `password` attributes
//! never leave either. The [`CatalogHandle`] applies the site-wide list and never lets a later
//! schema make public what a schema it already used kept private (see [`CatalogHandle::harden`]).
//!
//! Parsing is forgiving: a content type that lacks a field the bridge needs is left out with a
//! warning, an attribute without a type likewise; only text that is not a JSON object of content
//! types is an error.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::pg::quote_ident;

pub use super::naming::snake_case;

/// The core-store key of the content-type schema.
pub const SCHEMA_KEY: &str = "strapi_content_types_schema";

/// The table Strapi keeps its key/value settings in.
pub const CORE_STORE_TABLE: &str = "strapi_core_store_settings";

/// Why the catalog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The schema row is not JSON.
    #[error("the {SCHEMA_KEY} value is not JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The schema row is JSON but not an object of content types.
    #[error("the {SCHEMA_KEY} value is not a JSON object of content types (it is {0})")]
    Shape(&'static str),
    /// Reading the row failed.
    #[error("reading {SCHEMA_KEY} from {table}: {}", pg_detail(.source))]
    Db {
        /// The table read (schema-qualified).
        table: String,
        /// The database error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl CatalogError {
    /// A database error that reconnecting may cure (connection lost); the others are about
    /// the data and will not change by retrying.
    pub fn is_retryable(&self) -> bool {
        match self {
            CatalogError::Db { source, .. } => source.is_closed() || source.code().is_none(),
            _ => false,
        }
    }
}

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
    /// `datetime`: ISO-8601 UTC with milliseconds.
    DateTime,
    /// `timestamp`: milliseconds since 1970 as a string (Strapi formats it with date-fns `'T'`).
    Timestamp,
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

impl AttributeType {
    /// The type of a schema `"type"` value.
    pub fn from_schema(name: &str) -> AttributeType {
        match name {
            "string" | "text" | "richtext" | "email" | "uid" | "enumeration" => {
                AttributeType::String
            }
            "password" => AttributeType::Password,
            "integer" => AttributeType::Integer,
            "biginteger" => AttributeType::BigInteger,
            "float" => AttributeType::Float,
            "decimal" => AttributeType::Decimal,
            "boolean" => AttributeType::Boolean,
            "json" | "blocks" => AttributeType::Json,
            "date" => AttributeType::Date,
            "time" => AttributeType::Time,
            "datetime" => AttributeType::DateTime,
            "timestamp" => AttributeType::Timestamp,
            "relation" | "media" | "component" | "dynamiczone" => AttributeType::NotScalar,
            other => AttributeType::Other(other.to_owned()),
        }
    }
}

impl Attribute {
    /// Whether clients may see it: Strapi's content-API sanitizer removes `private` attributes
    /// and every `password`.
    pub fn is_public(&self) -> bool {
        !self.private && self.kind != AttributeType::Password
    }
}

impl ContentType {
    /// The attribute named `name`.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// An `api::` content type (one the site's developers defined), as opposed to Strapi's own
    /// `plugin::` and `admin::` types.
    pub fn is_api(&self) -> bool {
        self.uid.starts_with("api::")
    }

    /// An `admin::` content type (admin users, roles, API and transfer tokens with their key
    /// hashes): Strapi's content API never exposes these, and neither does the bridge.
    pub fn is_admin(&self) -> bool {
        is_admin_uid(&self.uid)
    }
}

/// Whether `uid` names an `admin::` content type (never emitted).
pub fn is_admin_uid(uid: &str) -> bool {
    uid.starts_with("admin::")
}

/// Every content type, by table and by uid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    by_uid: HashMap<String, Arc<ContentType>>,
    by_table: HashMap<String, Arc<ContentType>>,
    order: Vec<Arc<ContentType>>,
}

impl Catalog {
    /// A catalog of these content types. Of two types claiming the same uid or table, the
    /// first is kept and the other left out with a warning.
    pub fn new(types: Vec<ContentType>) -> Catalog {
        let mut catalog = Catalog::default();
        for ct in types {
            if let Some(first) = catalog
                .by_uid
                .get(&ct.uid)
                .or_else(|| catalog.by_table.get(&ct.table))
            {
                tracing::warn!(
                    uid = %ct.uid,
                    table = %ct.table,
                    kept = %first.uid,
                    "content type left out: its uid or table is already taken"
                );
                continue;
            }
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

/// Parses the value of the `strapi_content_types_schema` core-store row.
///
/// Every content type (`api::`, `plugin::`, `admin::`) becomes a [`ContentType`]; attributes
/// without a column of their own (relations, media, components, dynamic zones, and so
/// `createdBy`/`updatedBy`, stored as `created_by_id`) are left out; the others keep their
/// schema order. A content type missing `collectionName`, `kind`, `info.singularName`,
/// `info.pluralName` or `attributes` is left out with a warning.
pub fn parse_schema(json: &str) -> Result<Catalog, CatalogError> {
    let value: Value = serde_json::from_str(json).map_err(CatalogError::Json)?;
    let Value::Object(types) = value else {
        return Err(CatalogError::Shape(json_kind(&value)));
    };
    let mut out = Vec::with_capacity(types.len());
    for (uid, def) in &types {
        match content_type(uid, def) {
            Ok(ct) => out.push(ct),
            Err(why) => tracing::warn!(%uid, "content type left out of the catalog: {why}"),
        }
    }
    Ok(Catalog::new(out))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn content_type(uid: &str, def: &Value) -> Result<ContentType, String> {
    let def = def
        .as_object()
        .ok_or_else(|| format!("its definition is {}, not an object", json_kind(def)))?;
    let text = |obj: &Map<String, Value>, key: &str, path: &str| -> Result<String, String> {
        match obj.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(other) => Err(format!("{path} is {}, not a name", json_kind(other))),
            None => Err(format!("{path} is missing")),
        }
    };
    let table = text(def, "collectionName", "collectionName")?;
    let kind = match text(def, "kind", "kind")?.as_str() {
        "collectionType" => Kind::Collection,
        "singleType" => Kind::Single,
        other => {
            return Err(format!(
                "kind {other:?} is neither collectionType nor singleType"
            ));
        }
    };
    let info = def
        .get("info")
        .and_then(Value::as_object)
        .ok_or("info is missing")?;
    let singular_name = text(info, "singularName", "info.singularName")?;
    let plural_name = text(info, "pluralName", "info.pluralName")?;
    let flag = |path: &[&str]| {
        let mut v = Some(def.get(path[0]));
        for key in &path[1..] {
            v = v.map(|v| v.and_then(|v| v.get(*key)));
        }
        v.flatten().and_then(Value::as_bool).unwrap_or(false)
    };
    let draft_and_publish = flag(&["options", "draftAndPublish"]);
    let localized = flag(&["pluginOptions", "i18n", "localized"]);
    let attrs = def
        .get("attributes")
        .and_then(Value::as_object)
        .ok_or("attributes is missing")?;
    let listed = listed_private(
        uid,
        def.get("options").and_then(|o| o.get("privateAttributes")),
    );
    let mut attributes = Vec::with_capacity(attrs.len());
    for (name, a) in attrs {
        let Some(type_name) = a.get("type").and_then(Value::as_str) else {
            tracing::warn!(%uid, attribute = %name, "attribute without a type left out");
            continue;
        };
        let kind = AttributeType::from_schema(type_name);
        if kind == AttributeType::NotScalar {
            continue;
        }
        attributes.push(Attribute {
            column: snake_case(name),
            name: name.clone(),
            kind,
            private: truthy(a.get("private")) || listed.contains(name.as_str()),
        });
    }
    Ok(ContentType {
        uid: uid.to_owned(),
        table,
        kind,
        singular_name,
        plural_name,
        draft_and_publish,
        localized,
        attributes,
    })
}

/// JavaScript truthiness of a schema value (`!!attr.private`): `"true"`, `1`, `"yes"` and any
/// object are truthy; absent, `null`, `false`, `0`, `NaN` and `""` are not.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// The names in a content type's `options.privateAttributes`. Strapi reads an array of names;
/// a single string is taken as a list of one (failing closed), anything else is ignored with
/// a warning.
fn listed_private<'a>(uid: &str, value: Option<&'a Value>) -> HashSet<&'a str> {
    match value {
        None | Some(Value::Null) => HashSet::new(),
        Some(Value::String(s)) => HashSet::from([s.as_str()]),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(other) => {
            tracing::warn!(
                %uid,
                "options.privateAttributes is {}, not a list of attribute names: ignored",
                json_kind(other)
            );
            HashSet::new()
        }
    }
}

/// A PostgreSQL error with the server's SQLSTATE and message (tokio-postgres's own `Display`
/// says only "db error").
pub(crate) fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// `"schema"."table"`, each part quoted as an SQL identifier.
pub(crate) fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// Reads the catalog from `<schema>.strapi_core_store_settings`.
///
/// No row (or no table) means Strapi has never booted on this database: the catalog is empty
/// and a warning says so; the model picks the schema up when Strapi writes it.
pub async fn load_catalog(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<Catalog, CatalogError> {
    let table = qualified(schema, CORE_STORE_TABLE);
    let sql = format!("SELECT value FROM {table} WHERE key = $1 ORDER BY id LIMIT 1");
    let rows = match client.query(&sql, &[&SCHEMA_KEY]).await {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            tracing::warn!(
                %table,
                "no {CORE_STORE_TABLE} table: no content types known; has Strapi booted on this database (and is database.schema right)?"
            );
            return Ok(Catalog::default());
        }
        Err(source) => return Err(CatalogError::Db { table, source }),
    };
    let value: Option<String> = match rows.first() {
        Some(row) => row.try_get(0).map_err(|source| CatalogError::Db {
            table: table.clone(),
            source,
        })?,
        None => None,
    };
    let Some(value) = value else {
        tracing::warn!(
            %table,
            "no {SCHEMA_KEY} row: no content types known; has Strapi booted on this database?"
        );
        return Ok(Catalog::default());
    };
    let catalog = parse_schema(&value)?;
    tracing::info!(content_types = catalog.len(), "content-type catalog loaded");
    Ok(catalog)
}

/// The live catalog, shared between the model (which replaces it on reload) and readers such
/// as the HTTP emit API. Cheap to clone; the lock is never held across an `.await`.
///
/// It also holds the privacy rules every catalog passes through before use: the site-wide
/// private attributes, and every attribute that was private in a catalog this handle already
/// held (the privacy floor), so a replayed older schema row never makes public again what the
/// schema read at start keeps private. The floor only grows; a restart reads the schema as it
/// is then.
#[derive(Debug, Clone, Default)]
pub struct CatalogHandle(Arc<RwLock<Shared>>);

#[derive(Debug, Default)]
struct Shared {
    catalog: Arc<Catalog>,
    privacy: Privacy,
}

/// What the handle keeps private whatever a schema says.
#[derive(Debug, Default, Clone)]
struct Privacy {
    /// `[strapi] private_attributes`: private in every content type.
    global: HashSet<String>,
    /// Per uid, the attribute names and columns that were ever private in a held catalog.
    floor: HashMap<String, HashSet<String>>,
}

impl Privacy {
    /// `catalog` with the site-wide list and the floor applied; logs each attribute a schema
    /// would make public again.
    fn harden(&self, catalog: &Catalog) -> Catalog {
        let mut types = Vec::with_capacity(catalog.len());
        let mut changed = false;
        for ct in catalog.content_types() {
            let floor = self.floor.get(&ct.uid);
            let hidden = |a: &Attribute| {
                self.global.contains(&a.name)
                    || floor.is_some_and(|f| f.contains(&a.name) || f.contains(&a.column))
            };
            if !ct.attributes.iter().any(|a| a.is_public() && hidden(a)) {
                types.push(ContentType::clone(ct));
                continue;
            }
            changed = true;
            let mut ct = ContentType::clone(ct);
            for a in &mut ct.attributes {
                if !a.is_public() || !hidden(a) {
                    continue;
                }
                if !self.global.contains(&a.name) {
                    tracing::warn!(
                        uid = %ct.uid,
                        attribute = %a.name,
                        "this content-type schema makes public an attribute that an earlier schema kept private (a replayed older schema, or a change in Strapi): it stays private until the bridge restarts"
                    );
                }
                a.private = true;
            }
            types.push(ct);
        }
        if changed {
            Catalog::new(types)
        } else {
            catalog.clone()
        }
    }

    /// Remembers every private attribute of `catalog`.
    fn raise(&mut self, catalog: &Catalog) {
        for ct in catalog.content_types() {
            let hidden = ct.attributes.iter().filter(|a| !a.is_public());
            let entry = self.floor.entry(ct.uid.clone()).or_default();
            for a in hidden {
                entry.insert(a.name.clone());
                entry.insert(a.column.clone());
            }
        }
    }
}

impl CatalogHandle {
    /// A handle holding `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        let handle = CatalogHandle::default();
        handle.replace(catalog);
        handle
    }

    /// An empty handle whose catalogs keep `names` (Strapi's `config/api.js`
    /// `responses.privateAttributes`) private in every content type.
    pub fn with_private_attributes<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let privacy = Privacy {
            global: names.into_iter().map(Into::into).collect(),
            floor: HashMap::new(),
        };
        CatalogHandle(Arc::new(RwLock::new(Shared {
            catalog: Arc::default(),
            privacy,
        })))
    }

    /// The catalog now.
    pub fn current(&self) -> Arc<Catalog> {
        match self.0.read() {
            Ok(guard) => guard.catalog.clone(),
            Err(poisoned) => poisoned.into_inner().catalog.clone(),
        }
    }

    /// `catalog` as this handle would hold it: the site-wide private attributes applied, and
    /// nothing public that a catalog held before kept private. Compare a freshly parsed
    /// schema with [`current`](Self::current) only after this.
    pub fn harden(&self, catalog: Catalog) -> Catalog {
        let privacy = match self.0.read() {
            Ok(guard) => guard.privacy.clone(),
            Err(poisoned) => poisoned.into_inner().privacy.clone(),
        };
        privacy.harden(&catalog)
    }

    /// Replaces the catalog (hardened first) and raises the privacy floor with it.
    pub fn replace(&self, catalog: Catalog) {
        let mut guard = match self.0.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let catalog = guard.privacy.harden(&catalog);
        guard.privacy.raise(&catalog);
        guard.catalog = Arc::new(catalog);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE_SCHEMA: &str =
        include_str!("../../tests/fixtures/strapi4-content-types-schema.json");

    fn reference() -> Catalog {
        parse_schema(REFERENCE_SCHEMA).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ct<'a>(c: &'a Catalog, uid: &str) -> &'a ContentType {
        c.by_uid(uid).unwrap_or_else(|| panic!("no {uid}"))
    }

    fn columns(ct: &ContentType) -> Vec<(&str, &str)> {
        ct.attributes
            .iter()
            .map(|a| (a.name.as_str(), a.column.as_str()))
            .collect()
    }

    #[test]
    fn reads_every_content_type_of_the_recorded_schema() {
        let c = reference();
        assert_eq!(c.len(), 19);
        let uids: Vec<&str> = c.content_types().map(|ct| ct.uid.as_str()).collect();
        assert_eq!(uids.first(), Some(&"admin::api-token"));
        assert!(uids.contains(&"plugin::users-permissions.user"));
        assert!(uids.windows(2).all(|w| w[0] < w[1]), "ordered by uid");

        let message = ct(&c, "api::message.message");
        assert_eq!(message.table, "messages");
        assert_eq!(message.kind, Kind::Collection);
        assert_eq!(
            (message.singular_name.as_str(), message.plural_name.as_str()),
            ("message", "messages")
        );
        assert!(message.draft_and_publish && !message.localized);
        // Schema order; relations (chat, watchChats, author, createdBy, updatedBy), media
        // (image, gallery) and the component (seo) have no column and are left out.
        assert_eq!(
            columns(message),
            [
                ("text", "text"),
                ("secret", "secret"),
                ("likes", "likes"),
                ("score", "score"),
                ("meta", "meta"),
                ("flag", "flag"),
                ("when", "when"),
                ("day", "day"),
                ("big", "big"),
                ("rich", "rich"),
                ("mood", "mood"),
                ("displayTitle", "display_title"),
                ("body", "body"),
                ("ratio", "ratio"),
                ("at", "at"),
                ("slug", "slug"),
                ("contact", "contact"),
                ("blocks", "blocks"),
                ("createdAt", "created_at"),
                ("updatedAt", "updated_at"),
                ("publishedAt", "published_at"),
            ]
        );
        let kinds: Vec<&AttributeType> = message.attributes.iter().map(|a| &a.kind).collect();
        use AttributeType as T;
        assert_eq!(
            kinds,
            [
                &T::String,
                &T::String,
                &T::Integer,
                &T::Decimal,
                &T::Json,
                &T::Boolean,
                &T::DateTime,
                &T::Date,
                &T::BigInteger,
                &T::String,
                &T::String,
                &T::String,
                &T::String,
                &T::Float,
                &T::Time,
                &T::String,
                &T::String,
                &T::Json,
                &T::DateTime,
                &T::DateTime,
                &T::DateTime,
            ]
        );
        let private: Vec<&str> = message
            .attributes
            .iter()
            .filter(|a| !a.is_public())
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(private, ["secret"]);

        let article = ct(&c, "api::article.article");
        assert_eq!(article.table, "legacy_articles");
        assert_eq!(article.plural_name, "articles");
        assert!(article.localized && !article.draft_and_publish);
        assert_eq!(
            columns(article),
            [
                ("title", "title"),
                ("headlineText", "headline_text"),
                ("createdAt", "created_at"),
                ("updatedAt", "updated_at"),
                ("locale", "locale"),
            ]
        );
        assert_eq!(
            c.by_table("legacy_articles").map(|t| t.uid.as_str()),
            Some("api::article.article")
        );
        assert!(c.by_table("articles").is_none());

        let homepage = ct(&c, "api::homepage.homepage");
        assert_eq!(homepage.kind, Kind::Single);
        assert!(homepage.draft_and_publish);
        let chat = ct(&c, "api::chat.chat");
        assert!(!chat.draft_and_publish);
        assert_eq!(
            columns(chat),
            [
                ("name", "name"),
                ("createdAt", "created_at"),
                ("updatedAt", "updated_at")
            ]
        );

        let user = ct(&c, "plugin::users-permissions.user");
        assert_eq!(user.table, "up_users");
        let hidden: Vec<&str> = user
            .attributes
            .iter()
            .filter(|a| !a.is_public())
            .map(|a| a.column.as_str())
            .collect();
        assert_eq!(
            hidden,
            ["password", "reset_password_token", "confirmation_token"]
        );
        assert_eq!(
            user.attribute("password").map(|a| &a.kind),
            Some(&AttributeType::Password)
        );
        let token = ct(&c, "admin::api-token");
        assert_eq!(
            token.attribute("accessKey").map(|a| a.column.as_str()),
            Some("access_key")
        );
        assert_eq!(
            token.attribute("lifespan").map(|a| &a.kind),
            Some(&AttributeType::BigInteger)
        );
        let file = ct(&c, "plugin::upload.file");
        assert_eq!(
            file.attribute("provider_metadata")
                .map(|a| a.column.as_str()),
            Some("provider_metadata")
        );
        assert_eq!(
            file.attribute("previewUrl").map(|a| a.column.as_str()),
            Some("preview_url")
        );
    }

    #[test]
    fn text_that_is_not_an_object_of_content_types_is_an_error() {
        assert!(matches!(parse_schema("{"), Err(CatalogError::Json(_))));
        assert!(matches!(parse_schema(""), Err(CatalogError::Json(_))));
        assert!(matches!(
            parse_schema("[]"),
            Err(CatalogError::Shape("an array"))
        ));
        assert!(matches!(
            parse_schema("null"),
            Err(CatalogError::Shape("null"))
        ));
        assert!(parse_schema("{}").is_ok_and(|c| c.is_empty()));
    }

    #[test]
    fn incomplete_content_types_and_attributes_are_left_out() {
        let json = r#"{
          "api::ok.ok": {"kind":"collectionType","collectionName":"oks",
            "info":{"singularName":"ok","pluralName":"oks"},
            "attributes":{"title":{"type":"string"},"broken":{"private":true},"n":{"type":5},
                          "color":{"type":"customThing"},"when":{"type":"timestamp"}}},
          "api::no-table.no-table": {"kind":"collectionType",
            "info":{"singularName":"no-table","pluralName":"no-tables"},"attributes":{}},
          "api::bad-kind.bad-kind": {"kind":"component","collectionName":"x",
            "info":{"singularName":"x","pluralName":"xs"},"attributes":{}},
          "api::no-info.no-info": {"kind":"singleType","collectionName":"y","attributes":{}},
          "api::no-attrs.no-attrs": {"kind":"singleType","collectionName":"z",
            "info":{"singularName":"z","pluralName":"zs"},"attributes":[]},
          "api::empty-name.empty-name": {"kind":"singleType","collectionName":"",
            "info":{"singularName":"e","pluralName":"es"},"attributes":{}},
          "api::not-object.not-object": 7,
          "api::twin.twin": {"kind":"collectionType","collectionName":"oks",
            "info":{"singularName":"twin","pluralName":"twins"},"attributes":{}}
        }"#;
        let c = parse_schema(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.len(), 1, "{c:?}");
        let ok = ct(&c, "api::ok.ok");
        assert!(!ok.draft_and_publish && !ok.localized);
        let attrs: Vec<(&str, &AttributeType)> = ok
            .attributes
            .iter()
            .map(|a| (a.name.as_str(), &a.kind))
            .collect();
        assert_eq!(
            attrs,
            [
                ("title", &AttributeType::String),
                ("color", &AttributeType::Other("customThing".to_owned())),
                ("when", &AttributeType::Timestamp),
            ]
        );
    }

    #[test]
    fn the_handle_shares_replacements() {
        let handle = CatalogHandle::default();
        let reader = handle.clone();
        assert!(reader.current().is_empty());
        handle.replace(reference());
        assert_eq!(reader.current().len(), 19);
    }

    fn hidden(c: &Catalog, uid: &str) -> Vec<String> {
        ct(c, uid)
            .attributes
            .iter()
            .filter(|a| !a.is_public())
            .map(|a| a.name.clone())
            .collect()
    }

    fn order_schema(options: &str, extra_attrs: &str) -> String {
        format!(
            r#"{{"api::order.order": {{"kind":"collectionType","collectionName":"orders",
                "info":{{"singularName":"order","pluralName":"orders"}},
                "options": {options},
                "attributes":{{"title":{{"type":"string"}},"internalNote":{{"type":"text"}},
                  "customerPhone":{{"type":"string"}},{extra_attrs}
                  "createdAt":{{"type":"datetime"}}}}}}}}"#
        )
    }

    #[test]
    fn options_private_attributes_and_truthy_private_flags_hide_attributes() {
        let json = order_schema(
            r#"{"draftAndPublish":false,"privateAttributes":["internalNote","customerPhone"]}"#,
            r#""a":{"type":"string","private":"true"},"b":{"type":"string","private":1},
               "c":{"type":"string","private":{}},"d":{"type":"string","private":0},
               "e":{"type":"string","private":""},"f":{"type":"string","private":null},
               "g":{"type":"string","private":false},"#,
        );
        let c = parse_schema(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            hidden(&c, "api::order.order"),
            ["internalNote", "customerPhone", "a", "b", "c"]
        );
        // A single name instead of a list fails closed; another shape is ignored.
        let one = parse_schema(&order_schema(r#"{"privateAttributes":"internalNote"}"#, ""))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hidden(&one, "api::order.order"), ["internalNote"]);
        let odd = parse_schema(&order_schema(r#"{"privateAttributes":5}"#, ""))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(hidden(&odd, "api::order.order").is_empty());
    }

    #[test]
    fn the_handle_applies_site_wide_private_attributes() {
        let handle = CatalogHandle::with_private_attributes(["createdAt", "title"]);
        let parsed = parse_schema(&order_schema("{}", "")).unwrap_or_else(|e| panic!("{e}"));
        assert!(hidden(&parsed, "api::order.order").is_empty());
        let hardened = handle.harden(parsed.clone());
        assert_eq!(
            hidden(&hardened, "api::order.order"),
            ["title", "createdAt"]
        );
        handle.replace(parsed);
        assert_eq!(*handle.current(), hardened);
        // Every content type, Strapi's own included.
        let reference = handle.harden(reference());
        assert!(hidden(&reference, "api::chat.chat").contains(&"createdAt".to_owned()));
    }

    #[test]
    fn a_replayed_older_schema_never_makes_a_private_attribute_public_again() {
        let handle = CatalogHandle::default();
        let v2 = parse_schema(&order_schema(
            r#"{"privateAttributes":["customerPhone"]}"#,
            "",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let v1 = parse_schema(&order_schema("{}", "")).unwrap_or_else(|e| panic!("{e}"));
        handle.replace(v2.clone());
        // The older schema, hardened, equals what is held: nothing to reload.
        assert_eq!(handle.harden(v1.clone()), v2);
        handle.replace(v1);
        assert_eq!(
            hidden(&handle.current(), "api::order.order"),
            ["customerPhone"]
        );
        // Privacy added later is kept too, and the floor holds across further schemas.
        let v3 = parse_schema(&order_schema(
            r#"{"privateAttributes":["internalNote"]}"#,
            "",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        handle.replace(v3);
        let v4 = parse_schema(&order_schema("{}", "")).unwrap_or_else(|e| panic!("{e}"));
        handle.replace(v4);
        assert_eq!(
            hidden(&handle.current(), "api::order.order"),
            ["internalNote", "customerPhone"]
        );
        // A new handle (a restart) reads the schema as it is.
        let fresh = CatalogHandle::new(
            parse_schema(&order_schema("{}", "")).unwrap_or_else(|e| panic!("{e}")),
        );
        assert!(hidden(&fresh.current(), "api::order.order").is_empty());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(qualified("public", "when"), "\"public\".\"when\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
