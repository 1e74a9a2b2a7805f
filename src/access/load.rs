//! The start-up load: the eight access tables and the `email_confirmation` setting, read in
//! one repeatable-read transaction so permissions and their links agree. The link tables are
//! read under Strapi 4's names (`*_links`) or, when those are missing, Strapi 5's (`*_lnk`).
//!
//! Rows are read with the simple query protocol, whose values are PostgreSQL's text output,
//! the same bytes pgoutput sends; each row then goes through [`Tables::apply_row`] as an
//! INSERT, so the load and the stream read values through one path. Only the columns access
//! decisions need are selected, and only those the table has: a missing table or column is a
//! warning, not an error (a Strapi without API tokens, an older schema).

use std::sync::Arc;

use tokio_postgres::{Client, SimpleQueryMessage};
use tracing::{info, warn};

use crate::pg::quote_ident;
use crate::pgoutput::{Relation, RelationId, ReplicaIdentity, RowOp, Value};
use crate::strapi::AccessTable;

use super::tables::Tables;

/// Why the access tables could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A query failed (connection lost, permission denied, …).
    #[error("loading {what}: {source}")]
    Query {
        /// What was being read (a table name, or the transaction).
        what: String,
        /// The database error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl AccessError {
    /// Whether trying again later may succeed (the connection was lost), as opposed to an
    /// error that needs a change (privileges, schema).
    pub fn is_retryable(&self) -> bool {
        match self {
            AccessError::Query { source, .. } => source.is_closed() || source.code().is_none(),
        }
    }

    fn query(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> AccessError {
        let what = what.into();
        move |source| AccessError::Query { what, source }
    }
}

/// The core-store key of the users-permissions advanced settings.
const ADVANCED_SETTINGS_KEY: &str = "plugin_users-permissions_advanced";

/// The columns each table's rows need.
fn wanted_columns(table: AccessTable) -> &'static [&'static str] {
    match table {
        AccessTable::Roles => &["id", "name", "type"],
        AccessTable::Permissions | AccessTable::ApiTokenPermissions => &["id", "action"],
        AccessTable::PermissionRoleLinks => &["id", "permission_id", "role_id"],
        AccessTable::Users => &["id", "blocked", "confirmed"],
        AccessTable::UserRoleLinks => &["id", "user_id", "role_id"],
        AccessTable::ApiTokens => &["id", "name", "type", "access_key", "expires_at"],
        AccessTable::ApiTokenPermissionLinks => &["id", "api_token_permission_id", "api_token_id"],
    }
}

/// Reads every access table of `schema` into [`Tables`].
pub(crate) async fn load_tables(client: &Client, schema: &str) -> Result<Tables, AccessError> {
    client
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL DateStyle = 'ISO'; SET LOCAL TimeZone = 'UTC'",
        )
        .await
        .map_err(AccessError::query("the read transaction"))?;
    let result = read_all(client, schema).await;
    // Read-only: ending it either way is the same; a failure here only matters if the
    // connection is gone, which the result already reports.
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    if let Err(e) = client.batch_execute(end).await {
        warn!(error = %e, "ending the access read transaction failed");
    }
    result
}

async fn read_all(client: &Client, schema: &str) -> Result<Tables, AccessError> {
    let mut tables = Tables::default();
    for table in AccessTable::ALL {
        let mut name = table.table_name();
        let mut present = table_columns(client, schema, name).await?;
        if present.is_empty() && table.strapi5_table_name() != name {
            // Strapi 5 names its link tables `*_lnk`.
            name = table.strapi5_table_name();
            present = table_columns(client, schema, name).await?;
        }
        if present.is_empty() {
            warn!(
                schema,
                table = name,
                "access table not found; treated as empty"
            );
            continue;
        }
        let columns: Vec<&str> = wanted_columns(table)
            .iter()
            .copied()
            .filter(|c| present.iter().any(|p| p == c))
            .collect();
        for missing in wanted_columns(table)
            .iter()
            .filter(|c| !columns.contains(c))
        {
            warn!(
                table = name,
                column = missing,
                "access table lacks a column; its value is unknown"
            );
        }
        if !columns.contains(&"id") {
            warn!(table = name, "access table has no id column; skipped");
            continue;
        }
        let relation = synthetic_relation(schema, name, &columns);
        let sql = format!(
            "SELECT {} FROM {}.{}",
            columns
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", "),
            quote_ident(schema),
            quote_ident(name)
        );
        let mut rows = 0usize;
        for message in client
            .simple_query(&sql)
            .await
            .map_err(AccessError::query(name))?
        {
            let SimpleQueryMessage::Row(row) = message else {
                continue;
            };
            let new: Vec<Value> = (0..columns.len())
                .map(|i| match row.get(i) {
                    Some(text) => Value::Text(text.to_owned().into()),
                    None => Value::Null,
                })
                .collect();
            tables.apply_row(table, &relation, &RowOp::Insert { new });
            rows += 1;
        }
        info!(table = name, rows, "access table loaded");
    }
    tables.email_confirmation = email_confirmation(client, schema).await?;
    Ok(tables)
}

/// Column names of `schema.table`, in order; empty when there is no such table.
async fn table_columns(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, AccessError> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(AccessError::query(format!("the columns of {table}")))?;
    rows.iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<_, _>>()
        .map_err(AccessError::query(format!("the columns of {table}")))
}

/// A relation naming `columns`, so loaded rows read like streamed ones.
fn synthetic_relation(schema: &str, table: &str, columns: &[&str]) -> Arc<Relation> {
    // Type 25 (text): the rows are read with the simple query protocol, in text form.
    let columns: Vec<(&str, u32)> = columns.iter().map(|c| (*c, 25)).collect();
    Arc::new(Relation::described(
        RelationId(0),
        schema,
        table,
        ReplicaIdentity::Default,
        &columns,
    ))
}

/// `email_confirmation` from the core store; `false` when the row or table is missing or
/// unreadable (Strapi's default).
async fn email_confirmation(client: &Client, schema: &str) -> Result<bool, AccessError> {
    const TABLE: &str = "strapi_core_store_settings";
    if table_columns(client, schema, TABLE).await?.is_empty() {
        warn!(
            schema,
            table = TABLE,
            "core store not found; email confirmation taken as off"
        );
        return Ok(false);
    }
    let sql = format!(
        "SELECT value::text FROM {}.{} WHERE key = $1 ORDER BY id DESC LIMIT 1",
        quote_ident(schema),
        quote_ident(TABLE)
    );
    let row = client
        .query_opt(&sql, &[&ADVANCED_SETTINGS_KEY])
        .await
        .map_err(AccessError::query(TABLE))?;
    let Some(text) = row.and_then(|r| r.try_get::<_, Option<String>>(0).ok().flatten()) else {
        info!("no users-permissions advanced settings; email confirmation taken as off");
        return Ok(false);
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(value) => Ok(super::email_confirmation_setting(&value).unwrap_or(false)),
        Err(e) => {
            warn!(
                error = %e,
                "users-permissions advanced settings are not JSON; email confirmation taken as off"
            );
            Ok(false)
        }
    }
}
