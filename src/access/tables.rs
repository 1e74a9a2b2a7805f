//! The in-memory copy of the eight access tables, one map per table keyed by row `id`.
//!
//! Keyed by `id` because that is all a DELETE carries under the default replica identity, and
//! an UPDATE carries the whole new row (only unchanged TOASTed values are left out, and those
//! keep their previous value here). The start-up load feeds its rows through the same
//! [`Tables::apply_row`] as the stream, so both read values the same way. Unreadable values
//! are logged and read as "unknown" (never a panic); see each row type for what that means.

use std::collections::{BTreeSet, HashMap};

use tracing::{trace, warn};

use crate::pgoutput::{Relation, RowOp, Value};
use crate::strapi::AccessTable;

use super::text::{self, Instant};
use super::{AccessSnapshot, TokenKind};

/// What a value in a row says about one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field<'a> {
    /// The column is not in the relation, or PostgreSQL did not send it (unchanged TOAST): the
    /// previous value stands.
    NotSent,
    /// SQL NULL.
    Null,
    /// Text output.
    Text(&'a str),
}

/// One tuple with its relation, read column by column.
struct RowView<'a> {
    table: AccessTable,
    relation: &'a Relation,
    values: &'a [Value],
}

impl<'a> RowView<'a> {
    fn field(&self, column: &str) -> Field<'a> {
        let Some(value) = self
            .relation
            .column_index(column)
            .and_then(|i| self.values.get(i))
        else {
            return Field::NotSent;
        };
        match value {
            Value::Null => Field::Null,
            Value::UnchangedToast => Field::NotSent,
            Value::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => Field::Text(text),
                Err(_) => {
                    warn!(
                        table = self.table.table_name(),
                        column, "value is not UTF-8; ignored"
                    );
                    Field::NotSent
                }
            },
            Value::Binary(_) => {
                warn!(
                    table = self.table.table_name(),
                    column, "binary-format value; ignored"
                );
                Field::NotSent
            }
        }
    }

    /// The row's `id`, when present and readable.
    fn id(&self) -> Option<i64> {
        match self.field("id") {
            Field::Text(t) => text::parse_i64(t),
            Field::Null | Field::NotSent => None,
        }
    }

    fn set_string(&self, column: &str, slot: &mut Option<String>) {
        match self.field(column) {
            Field::NotSent => {}
            Field::Null => *slot = None,
            Field::Text(t) => *slot = Some(t.to_owned()),
        }
    }

    fn set_i64(&self, column: &str, slot: &mut Option<i64>) {
        match self.field(column) {
            Field::NotSent => {}
            Field::Null => *slot = None,
            Field::Text(t) => {
                *slot = text::parse_i64(t);
                if slot.is_none() {
                    self.unreadable(column);
                }
            }
        }
    }

    /// NULL and unreadable booleans read as `false`, as JavaScript's truthiness would.
    fn set_bool(&self, column: &str, slot: &mut bool) {
        match self.field(column) {
            Field::NotSent => {}
            Field::Null => *slot = false,
            Field::Text(t) => {
                *slot = text::parse_bool(t).unwrap_or_else(|| {
                    self.unreadable(column);
                    false
                });
            }
        }
    }

    /// NULL is "never"; an unreadable timestamp reads as already past (fail closed).
    fn set_expiry(&self, column: &str, slot: &mut Option<Instant>) {
        match self.field(column) {
            Field::NotSent => {}
            Field::Null => *slot = None,
            Field::Text(t) => {
                *slot = Some(text::parse_timestamp(t).unwrap_or_else(|| {
                    self.unreadable(column);
                    Instant::MinusInfinity
                }));
            }
        }
    }

    fn unreadable(&self, column: &str) {
        warn!(
            table = self.table.table_name(),
            column,
            id = self.id(),
            "unreadable value; treated as unknown"
        );
    }
}

/// A row type of one access table: which columns it keeps.
trait TableRow: Default + Clone {
    /// Takes the columns this row keeps from `row`; columns not sent keep their value.
    fn merge(&mut self, row: &RowView<'_>);
}

/// `up_roles`: `name` is the room, `type` tells the built-in roles apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoleRow {
    /// `name`; a role without one has no room.
    pub name: Option<String>,
    /// `type`.
    pub kind: Option<String>,
}

impl TableRow for RoleRow {
    fn merge(&mut self, row: &RowView<'_>) {
        row.set_string("name", &mut self.name);
        row.set_string("type", &mut self.kind);
    }
}

/// `up_permissions` and `strapi_api_token_permissions`: one action string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PermissionRow {
    /// `action`, e.g. `api::message.message.find`.
    pub action: Option<String>,
}

impl TableRow for PermissionRow {
    fn merge(&mut self, row: &RowView<'_>) {
        row.set_string("action", &mut self.action);
    }
}

/// `up_users`: only what access decisions read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UserRow {
    /// `blocked` (NULL = not blocked).
    pub blocked: bool,
    /// `confirmed` (NULL = not confirmed).
    pub confirmed: bool,
}

impl TableRow for UserRow {
    fn merge(&mut self, row: &RowView<'_>) {
        row.set_bool("blocked", &mut self.blocked);
        row.set_bool("confirmed", &mut self.confirmed);
    }
}

/// `strapi_api_tokens`.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct TokenRow {
    /// `name`.
    pub name: Option<String>,
    /// `type`; `None` for NULL or a type this version does not know (such a token reaches
    /// nothing).
    pub kind: Option<TokenKind>,
    /// `access_key`, lowercased.
    pub access_key: Option<String>,
    /// `expires_at`; `None` = never.
    pub expires_at: Option<Instant>,
}

impl TableRow for TokenRow {
    fn merge(&mut self, row: &RowView<'_>) {
        row.set_string("name", &mut self.name);
        match row.field("type") {
            Field::NotSent => {}
            Field::Null => self.kind = None,
            Field::Text(t) => {
                self.kind = TokenKind::from_type(t);
                if self.kind.is_none() {
                    warn!(
                        id = row.id(),
                        kind = t,
                        "API token of unknown type; it reaches nothing"
                    );
                }
            }
        }
        row.set_string("access_key", &mut self.access_key);
        if let Some(key) = &mut self.access_key {
            key.make_ascii_lowercase();
        }
        row.set_expiry("expires_at", &mut self.expires_at);
    }
}

/// Which two columns a link table joins.
#[derive(Debug, Clone, Copy)]
struct LinkColumns {
    /// The owning side (`permission_id`, `user_id`, `api_token_permission_id`).
    from: &'static str,
    /// The target (`role_id`, `api_token_id`).
    to: &'static str,
}

/// A row of a link table: `from` → `to`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LinkRow {
    /// The owning side's id.
    pub from: Option<i64>,
    /// The target's id.
    pub to: Option<i64>,
}

impl TableRow for LinkRow {
    fn merge(&mut self, row: &RowView<'_>) {
        if let Some(cols) = link_columns(row.table) {
            row.set_i64(cols.from, &mut self.from);
            row.set_i64(cols.to, &mut self.to);
        }
    }
}

fn link_columns(table: AccessTable) -> Option<LinkColumns> {
    match table {
        AccessTable::PermissionRoleLinks => Some(LinkColumns {
            from: "permission_id",
            to: "role_id",
        }),
        AccessTable::UserRoleLinks => Some(LinkColumns {
            from: "user_id",
            to: "role_id",
        }),
        AccessTable::ApiTokenPermissionLinks => Some(LinkColumns {
            from: "api_token_permission_id",
            to: "api_token_id",
        }),
        _ => None,
    }
}

/// The eight tables, plus the `email_confirmation` setting.
#[derive(Clone, Default)]
pub(crate) struct Tables {
    /// `up_roles`
    pub roles: HashMap<i64, RoleRow>,
    /// `up_permissions`
    pub permissions: HashMap<i64, PermissionRow>,
    /// `up_permissions_role_links`: permission → role.
    pub permission_role_links: HashMap<i64, LinkRow>,
    /// `up_users`
    pub users: HashMap<i64, UserRow>,
    /// `up_users_role_links`: user → role.
    pub user_role_links: HashMap<i64, LinkRow>,
    /// `strapi_api_tokens`
    pub api_tokens: HashMap<i64, TokenRow>,
    /// `strapi_api_token_permissions`
    pub token_permissions: HashMap<i64, PermissionRow>,
    /// `strapi_api_token_permissions_token_links`: permission → token.
    pub token_permission_links: HashMap<i64, LinkRow>,
    /// user id → ids of its `up_users_role_links` rows (kept with `user_role_links`, so a
    /// handshake finds a user's role without scanning every link).
    links_by_user: HashMap<i64, BTreeSet<i64>>,
    /// users-permissions `advanced.email_confirmation`.
    pub email_confirmation: bool,
}

impl Tables {
    /// Applies one row change. `None` when it could not be applied (no readable id);
    /// otherwise what it changed among the values the bridge keeps (see [`Applied`]).
    pub fn apply_row(
        &mut self,
        table: AccessTable,
        relation: &Relation,
        op: &RowOp,
    ) -> Option<Applied> {
        match table {
            AccessTable::Roles => apply_compare(&mut self.roles, table, relation, op),
            AccessTable::Permissions => apply_compare(&mut self.permissions, table, relation, op),
            AccessTable::Users => apply_compare(&mut self.users, table, relation, op),
            AccessTable::ApiTokens => apply_compare(&mut self.api_tokens, table, relation, op),
            AccessTable::ApiTokenPermissions => {
                apply_compare(&mut self.token_permissions, table, relation, op)
            }
            AccessTable::PermissionRoleLinks => {
                apply_compare(&mut self.permission_role_links, table, relation, op)
            }
            AccessTable::ApiTokenPermissionLinks => {
                apply_compare(&mut self.token_permission_links, table, relation, op)
            }
            AccessTable::UserRoleLinks => {
                let touched = apply_op(&mut self.user_role_links, table, relation, op)?;
                let mut users = Vec::new();
                for (id, previous) in &touched {
                    if let Some(user) = previous.as_ref().and_then(|p| p.from) {
                        self.unindex_user_link(user, *id);
                        users.push(user);
                    }
                    if let Some(user) = self.user_role_links.get(id).and_then(|l| l.from) {
                        self.links_by_user.entry(user).or_default().insert(*id);
                        users.push(user);
                    }
                }
                let mut result = applied(&self.user_role_links, touched);
                if result.changed {
                    users.sort_unstable();
                    users.dedup();
                    result.users = users;
                }
                Some(result)
            }
        }
    }

    /// Empties one table (TRUNCATE).
    pub fn truncate(&mut self, table: AccessTable) {
        match table {
            AccessTable::Roles => self.roles.clear(),
            AccessTable::Permissions => self.permissions.clear(),
            AccessTable::PermissionRoleLinks => self.permission_role_links.clear(),
            AccessTable::Users => self.users.clear(),
            AccessTable::UserRoleLinks => {
                self.user_role_links.clear();
                self.links_by_user.clear();
            }
            AccessTable::ApiTokens => self.api_tokens.clear(),
            AccessTable::ApiTokenPermissions => self.token_permissions.clear(),
            AccessTable::ApiTokenPermissionLinks => self.token_permission_links.clear(),
        }
    }

    /// The role a user holds: among its links whose role exists, the newest (highest link
    /// id). Strapi keeps one link per user; the choice only matters if a site has more.
    pub fn role_of_user(&self, user: i64) -> Option<(i64, &RoleRow)> {
        self.links_by_user
            .get(&user)?
            .iter()
            .rev()
            .filter_map(|link| self.user_role_links.get(link)?.to)
            .find_map(|role| Some((role, self.roles.get(&role)?)))
    }

    fn unindex_user_link(&mut self, user: i64, link: i64) {
        if let Some(links) = self.links_by_user.get_mut(&user) {
            links.remove(&link);
            if links.is_empty() {
                self.links_by_user.remove(&user);
            }
        }
    }

    /// The tables a snapshot describes. A snapshot has no ids for permission and link rows,
    /// so they are numbered 1, 2, … in the snapshot's order: role permission *n* becomes
    /// `up_permissions` id *n* linked by `up_permissions_role_links` id *n*; user-role link
    /// *n* is `up_users_role_links` id *n*; token permission *n* is
    /// `strapi_api_token_permissions` id *n* linked by link id *n*. Later row changes can
    /// refer to these ids.
    pub fn from_snapshot(snapshot: AccessSnapshot) -> Tables {
        let mut t = Tables {
            email_confirmation: snapshot.email_confirmation,
            ..Tables::default()
        };
        for role in snapshot.roles {
            t.roles.insert(
                role.id,
                RoleRow {
                    name: Some(role.name),
                    kind: Some(role.kind),
                },
            );
        }
        for (id, (role, action)) in (1..).zip(snapshot.role_permissions) {
            t.permissions.insert(
                id,
                PermissionRow {
                    action: Some(action),
                },
            );
            t.permission_role_links.insert(
                id,
                LinkRow {
                    from: Some(id),
                    to: Some(role),
                },
            );
        }
        for user in snapshot.users {
            t.users.insert(
                user.id,
                UserRow {
                    blocked: user.blocked,
                    confirmed: user.confirmed,
                },
            );
        }
        for (id, (user, role)) in (1..).zip(snapshot.user_roles) {
            t.user_role_links.insert(
                id,
                LinkRow {
                    from: Some(user),
                    to: Some(role),
                },
            );
            t.links_by_user.entry(user).or_default().insert(id);
        }
        for token in snapshot.api_tokens {
            t.api_tokens.insert(
                token.id,
                TokenRow {
                    name: Some(token.name),
                    kind: Some(token.kind),
                    access_key: Some(token.access_key.to_ascii_lowercase()),
                    expires_at: token.expires_at_unix_micros.map(Instant::At),
                },
            );
        }
        for (id, (token, action)) in (1..).zip(snapshot.token_permissions) {
            t.token_permissions.insert(
                id,
                PermissionRow {
                    action: Some(action),
                },
            );
            t.token_permission_links.insert(
                id,
                LinkRow {
                    from: Some(id),
                    to: Some(token),
                },
            );
        }
        t
    }
}

/// What one row change did to the values the bridge keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Whether any kept value changed: an UPDATE of columns the bridge does not read (Strapi's
    /// `last_used_at`, an app's own `up_users` columns) changes nothing.
    pub changed: bool,
    /// Ids of the rows whose kept values changed (before and after a key change).
    pub ids: Vec<i64>,
    /// For user-role links: the users on either side of a changed link.
    pub users: Vec<i64>,
}

/// [`apply_op`], then [`applied`].
fn apply_compare<R: TableRow + PartialEq>(
    map: &mut HashMap<i64, R>,
    table: AccessTable,
    relation: &Relation,
    op: &RowOp,
) -> Option<Applied> {
    let touched = apply_op(map, table, relation, op)?;
    Some(applied(map, touched))
}

/// Compares each touched row with what `map` holds now.
fn applied<R: PartialEq>(map: &HashMap<i64, R>, touched: Vec<(i64, Option<R>)>) -> Applied {
    let ids: Vec<i64> = touched
        .into_iter()
        .filter(|(id, previous)| previous.as_ref() != map.get(id))
        .map(|(id, _)| id)
        .collect();
    Applied {
        changed: !ids.is_empty(),
        ids,
        users: Vec::new(),
    }
}

/// Applies a row change to a map keyed by id. Returns every id it touched with the row that
/// was there before, or `None` when the change carried no readable id (logged).
fn apply_op<R: TableRow>(
    map: &mut HashMap<i64, R>,
    table: AccessTable,
    relation: &Relation,
    op: &RowOp,
) -> Option<Vec<(i64, Option<R>)>> {
    let view = |values| RowView {
        table,
        relation,
        values,
    };
    let name = table.table_name();
    match op {
        RowOp::Insert { new } => {
            let row = view(new);
            let Some(id) = row.id() else {
                warn!(table = name, "INSERT without a readable id; ignored");
                return None;
            };
            let mut value = R::default();
            value.merge(&row);
            trace!(table = name, id, "access row inserted");
            Some(vec![(id, map.insert(id, value))])
        }
        RowOp::Update { old, new } => {
            let row = view(new);
            let Some(id) = row.id() else {
                warn!(table = name, "UPDATE without a readable id; ignored");
                return None;
            };
            let mut touched = Vec::with_capacity(2);
            // The key changed: the row moved from its old id.
            let old_id = old.as_ref().and_then(|o| view(o.tuple()).id());
            let mut value = match old_id {
                Some(old_id) if old_id != id => {
                    let previous = map.remove(&old_id);
                    touched.push((old_id, previous.clone()));
                    previous.unwrap_or_default()
                }
                _ => map.get(&id).cloned().unwrap_or_default(),
            };
            value.merge(&row);
            trace!(table = name, id, "access row updated");
            touched.push((id, map.insert(id, value)));
            Some(touched)
        }
        RowOp::Delete { old } => {
            let Some(id) = view(old.tuple()).id() else {
                warn!(table = name, "DELETE without a readable id; ignored");
                return None;
            };
            trace!(table = name, id, "access row deleted");
            Some(vec![(id, map.remove(&id))])
        }
    }
}
