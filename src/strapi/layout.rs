//! Which Strapi laid out the database: Strapi 4 (rows, `*_links` tables) or Strapi 5
//! (documents: `document_id` on every content table, `*_lnk` link tables).
//!
//! Nothing is configured: the layout is read from the tables. The model does not need it (a
//! content table with a `document_id` column is handled as Strapi 5's, table by table); it is
//! said by `check` and at start so that a user sees which Strapi the bridge found.

use std::fmt;

use tokio_postgres::Client;

/// The layout of Strapi's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrapiLayout {
    /// Strapi 4: one row per entry, link tables `*_links`.
    Strapi4,
    /// Strapi 5: documents of rows sharing `document_id`, link tables `*_lnk`.
    Strapi5,
}

impl fmt::Display for StrapiLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StrapiLayout::Strapi4 => "Strapi 4 layout",
            StrapiLayout::Strapi5 => "Strapi 5 layout",
        })
    }
}

/// Tables every Strapi has; Strapi 5 gives each a `document_id` column.
const MARKER_TABLES: [&str; 4] = ["admin_users", "up_roles", "up_users", "strapi_api_tokens"];

/// Reads the layout of `schema`; `None` when it holds none of Strapi's tables (Strapi has not
/// booted on it yet).
pub async fn detect(
    client: &Client,
    schema: &str,
) -> Result<Option<StrapiLayout>, tokio_postgres::Error> {
    let tables: Vec<&str> = MARKER_TABLES.to_vec();
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = ANY($2)), \
             EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a \
                 JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = ANY($2) \
                   AND a.attname = 'document_id' AND a.attnum > 0 AND NOT a.attisdropped)",
            &[&schema, &tables],
        )
        .await?;
    let any: bool = row.try_get(0)?;
    let documents: bool = row.try_get(1)?;
    Ok(match (any, documents) {
        (_, true) => Some(StrapiLayout::Strapi5),
        (true, false) => Some(StrapiLayout::Strapi4),
        (false, false) => None,
    })
}
