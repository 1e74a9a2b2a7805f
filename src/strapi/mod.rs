//! The Strapi model: row changes in, content-type events out.
//!
//! Receives [`Change`](crate::pgoutput::Change)s in commit order. Finds the content type of each
//! table from Strapi's own `strapi_content_types_schema` row (the [`catalog`]), decides the
//! Strapi [`Action`], and builds the [`Payload`] Strapi's REST API would return for the
//! entry, private and password attributes removed: Strapi 4's rows one by one, Strapi 5's
//! documents (rows sharing a `document_id`) once per transaction. Rows of the users-permissions and API-token
//! tables are handed on as [`AccessChange`]s, logical messages with the configured prefix as
//! custom emits, and every `Commit` as a marker, all in stream order. It never decides who
//! receives an event (that is [`access`](crate::access)) and never talks to sockets.

pub mod catalog;
pub mod custom;
pub mod layout;

mod action;
mod filter;
mod format;
mod model;
mod naming;
mod payload;

use std::sync::Arc;

pub use action::Action;
pub use catalog::{Catalog, CatalogError, CatalogHandle, ContentType, Kind};
pub use filter::ContentTypeFilter;
pub use layout::StrapiLayout;
pub use model::{Model, ModelConfig, ModelError};
pub use payload::{Payload, PayloadError, limit_event, limit_raw};

use crate::lsn::Lsn;
use crate::pgoutput::{PgTimestamp, Relation, RowOp};

/// A content-type event, ready to be authorized and emitted.
#[derive(Debug, Clone)]
pub struct StrapiEvent {
    /// The content type the row belongs to.
    pub content_type: Arc<ContentType>,
    /// What happened, in Strapi's terms.
    pub action: Action,
    /// The entry's id, when known (custom emits have none).
    pub entry_id: Option<i64>,
    /// The JSON sent to clients, serialized once.
    pub payload: Payload,
    /// Commit LSN of the transaction it came from.
    pub commit_lsn: Lsn,
}

impl StrapiEvent {
    /// The Socket.IO event name: `<singularName>:<action>`, e.g. `message:create`.
    pub fn event_name(&self) -> String {
        format!(
            "{}:{}",
            self.content_type.singular_name,
            self.action.as_str()
        )
    }
}

/// The users-permissions and API-token tables the access stage keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessTable {
    /// `up_roles`
    Roles,
    /// `up_permissions`
    Permissions,
    /// `up_permissions_role_links` (Strapi 5: `up_permissions_role_lnk`)
    PermissionRoleLinks,
    /// `up_users`
    Users,
    /// `up_users_role_links` (Strapi 5: `up_users_role_lnk`)
    UserRoleLinks,
    /// `strapi_api_tokens`
    ApiTokens,
    /// `strapi_api_token_permissions`
    ApiTokenPermissions,
    /// `strapi_api_token_permissions_token_links` (Strapi 5: `…_token_lnk`)
    ApiTokenPermissionLinks,
}

impl AccessTable {
    /// Every access table, in the order they are loaded.
    pub const ALL: [AccessTable; 8] = [
        AccessTable::Roles,
        AccessTable::Permissions,
        AccessTable::PermissionRoleLinks,
        AccessTable::Users,
        AccessTable::UserRoleLinks,
        AccessTable::ApiTokens,
        AccessTable::ApiTokenPermissions,
        AccessTable::ApiTokenPermissionLinks,
    ];

    /// The table name Strapi 4 gives it.
    pub fn table_name(self) -> &'static str {
        match self {
            AccessTable::Roles => "up_roles",
            AccessTable::Permissions => "up_permissions",
            AccessTable::PermissionRoleLinks => "up_permissions_role_links",
            AccessTable::Users => "up_users",
            AccessTable::UserRoleLinks => "up_users_role_links",
            AccessTable::ApiTokens => "strapi_api_tokens",
            AccessTable::ApiTokenPermissions => "strapi_api_token_permissions",
            AccessTable::ApiTokenPermissionLinks => "strapi_api_token_permissions_token_links",
        }
    }

    /// The name Strapi 5 gives it: link tables end in `_lnk` instead of `_links`; the others
    /// keep their names.
    pub fn strapi5_table_name(self) -> &'static str {
        match self {
            AccessTable::PermissionRoleLinks => "up_permissions_role_lnk",
            AccessTable::UserRoleLinks => "up_users_role_lnk",
            AccessTable::ApiTokenPermissionLinks => "strapi_api_token_permissions_token_lnk",
            other => other.table_name(),
        }
    }

    /// The access table with this name, Strapi 4's or Strapi 5's.
    pub fn from_table_name(name: &str) -> Option<AccessTable> {
        AccessTable::ALL
            .into_iter()
            .find(|t| t.table_name() == name || t.strapi5_table_name() == name)
    }
}

/// A change to what users, roles and tokens may read, in stream order with the events.
#[derive(Debug, Clone)]
pub enum AccessChange {
    /// A row of an access table changed.
    Row {
        /// Which table.
        table: AccessTable,
        /// Its relation (column names).
        relation: Arc<Relation>,
        /// What happened.
        op: RowOp,
    },
    /// An access table was truncated.
    Truncate(AccessTable),
    /// The users-permissions `advanced` settings changed (`email_confirmation`).
    AdvancedSettings(serde_json::Value),
}

/// A message for Socket.IO as given, without permission checks (the plugin's `raw`).
#[derive(Debug, Clone)]
pub struct RawEmit {
    /// Event name, sent unchanged.
    pub event: String,
    /// Data, sent unchanged.
    pub data: Payload,
    /// Rooms or socket ids; `None` = every socket.
    pub rooms: Option<Vec<String>>,
}

/// What the model hands on, in stream order.
#[derive(Debug, Clone)]
pub enum ModelOutput {
    /// A content-type event (data change or custom `emit`).
    Event(StrapiEvent),
    /// A change to access data.
    Access(AccessChange),
    /// A custom `raw` message.
    Raw(RawEmit),
    /// A transaction ended: once everything before it is handed on, `end_lsn` may be confirmed.
    Commit {
        /// End LSN of the transaction.
        end_lsn: Lsn,
        /// Commit time, for lag metrics.
        commit_time: PgTimestamp,
    },
}
