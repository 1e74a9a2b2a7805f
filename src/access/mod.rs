//! Access: who may read what, kept current from the replication stream.
//!
//! Receives the model's outputs in stream order. [`AccessChange`]s update an in-memory copy of
//! Strapi's roles, permissions, users and API tokens (loaded once at start by
//! [`Access::load`]); each [`StrapiEvent`] is turned into a [`Delivery`] naming the rooms whose
//! role may read it, with no database query on that path. Because changes and events share
//! one ordered stream, an event committed after a permission was revoked never reaches that
//! role. The same state answers the Socket.IO handshake through the cheap-to-clone
//! [`AccessHandle`]. It never talks to sockets and never writes to the database.
//!
//! # Rooms
//!
//! - A role's room is its `up_roles.name`, exactly (case and spaces kept), as the plugin
//!   does. A user's socket joins its role's room.
//! - Sockets without a token join the configured public role name (`Public` by default);
//!   the public role's events go to the room of its *name*, so the two only meet while the
//!   names agree ([`AccessHandle::role_names`] lets `check` compare them).
//! - Each API token has a room of its own, `api-token:<strapi_api_tokens.id>`: tokens are not
//!   roles, and two tokens of the same name may read different things.
//!
//! # Who receives an event of content type `U`
//!
//! - [`PermissionMode::Read`] (default): roles holding `U.find` or `U.findOne`, for every
//!   action (custom actions included).
//! - [`PermissionMode::Action`] (the plugin's rule): roles holding
//!   `U.<`[`Action::plugin_permission`]`>` (publish and createOrUpdate need `update`,
//!   unpublish needs `delete`, a custom action needs itself).
//! - API tokens: `full-access` always; `read-only` always under Read, and under Action only
//!   when the needed action is `find` or `findOne`; `custom` by its own permissions, with
//!   the same rule as roles; a token past its `expires_at` receives nothing.
//!
//! # Authentication
//!
//! No token or `""`: the public role. A token is taken as an API token when `auth.strategy`
//! is `"apiToken"` or the token is not three base64url segments; otherwise as a
//! users-permissions JWT: HS256, HS384 or HS512 keyed with the UTF-8 bytes of `JWT_SECRET`
//! (`alg: none` and asymmetric algorithms refused), `exp` enforced without leeway, a numeric
//! `id` required. The checks after that are Strapi's: the user must exist ("Invalid token."),
//! be confirmed while email confirmation is on and not be blocked ("Invalid credentials"),
//! and have a role ("Invalid credentials"); an API token must be known ("Invalid token.") and
//! not expired ("Token expired"). Tokens and secrets are never logged (token ids and names
//! are).
//!
//! A connected socket is checked again ([`AccessHandle::recheck`]) when a change can affect it
//! ([`Recheck`]) and when its credential expires: the same checks, plus the JWT's `exp` and,
//! for API tokens, that the key it presented is still the token's (a regenerated token cuts
//! off the old key's sockets).
//!
//! [`PermissionMode::Read`]: crate::config::PermissionMode::Read
//! [`PermissionMode::Action`]: crate::config::PermissionMode::Action

mod api_token;
mod jwt;
mod load;
mod state;
mod tables;
mod text;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tracing::debug;

use crate::strapi::{AccessChange, Action, ContentType, Payload, RawEmit, StrapiEvent};

pub use load::AccessError;

use state::State;

/// A Socket.IO room: a role's name (`Public`, `Authenticated`), an API token's room, or a
/// socket id.
pub type RoomName = String;

/// The room of the sockets subscribed to every entry of content type `uid`: `sub:<uid>`.
pub fn type_room(uid: &str) -> RoomName {
    format!("sub:{uid}")
}

/// The room of the sockets subscribed to entry `id` of content type `uid`: `sub:<uid>:<id>`.
pub fn entry_room(uid: &str, id: i64) -> RoomName {
    format!("sub:{uid}:{id}")
}

/// Who a socket is, as established at its handshake.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// No token: the public role.
    Public,
    /// A users-permissions user (`up_users.id`), from a JWT.
    User {
        /// `up_users.id`
        id: i64,
    },
    /// A Strapi API token (`strapi_api_tokens.id`).
    ApiToken {
        /// `strapi_api_tokens.id`
        id: i64,
    },
}

/// A socket's identity with what it currently implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who.
    pub identity: Identity,
    /// The rooms it belongs in.
    pub rooms: Vec<RoomName>,
    /// Role name, or token name for API tokens (for logs and handlers).
    pub role: String,
    /// The user id, for users.
    pub user_id: Option<i64>,
    /// The user's role (`up_roles.id`): a change to that role re-checks the socket.
    pub role_id: Option<i64>,
    /// When the credential stops being valid, in µs since the Unix epoch: a JWT's `exp`, an
    /// API token's `expires_at`. `None` = never. A connected socket is checked again then.
    pub expires_at: Option<i64>,
    /// For API tokens, a fingerprint of the `access_key` the socket presented: a regenerated
    /// token (same id, new key) no longer matches, and its sockets are cut off.
    pub key_fingerprint: Option<u64>,
}

/// Which connected sockets an access change can affect: only those are checked again, so a
/// write that changes nothing the bridge reads (Strapi's `last_used_at`) costs nothing, and
/// a change to one user costs one socket lookup per connected socket, not a re-check of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recheck {
    /// Every socket with a user or token (a reload).
    pub all: bool,
    /// Every user's socket (email confirmation switched, a users or roles table truncated).
    pub all_users: bool,
    /// Every API token's socket (the tokens table truncated).
    pub all_tokens: bool,
    /// Sockets of these users (`up_users.id`).
    pub users: BTreeSet<i64>,
    /// Sockets of users holding these roles (`up_roles.id`).
    pub roles: BTreeSet<i64>,
    /// Sockets of these API tokens (`strapi_api_tokens.id`).
    pub tokens: BTreeSet<i64>,
    /// Permissions changed: no socket changes rooms, but every socket's subscriptions are
    /// checked again (a subscription needs read access to its type).
    pub subscriptions: bool,
}

impl Recheck {
    /// Every socket.
    pub fn everything() -> Recheck {
        Recheck {
            all: true,
            ..Recheck::default()
        }
    }

    /// Whether no socket's identity or rooms need checking ([`Recheck::subscriptions`] aside).
    pub fn is_empty(&self) -> bool {
        !self.all
            && !self.all_users
            && !self.all_tokens
            && self.users.is_empty()
            && self.roles.is_empty()
            && self.tokens.is_empty()
    }

    /// Adds what `other` affects.
    pub fn merge(&mut self, other: Recheck) {
        self.all |= other.all;
        self.all_users |= other.all_users;
        self.all_tokens |= other.all_tokens;
        self.users.extend(other.users);
        self.roles.extend(other.roles);
        self.tokens.extend(other.tokens);
        self.subscriptions |= other.subscriptions;
    }

    /// Whether a socket with `principal` must be checked again. Public sockets never are:
    /// their room is the configured public role name, whatever the tables say.
    pub fn affects(&self, principal: &Principal) -> bool {
        match principal.identity {
            Identity::Public => false,
            Identity::User { id } => {
                self.all
                    || self.all_users
                    || self.users.contains(&id)
                    || principal.role_id.is_some_and(|r| self.roles.contains(&r))
            }
            Identity::ApiToken { id } => self.all || self.all_tokens || self.tokens.contains(&id),
        }
    }
}

/// Why a handshake is refused. The `Display` text is what the client's `connect_error`
/// carries, word for word as Strapi and the plugin say it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Bad, expired or wrongly signed JWT, unknown API token, or a deleted user.
    #[error("Invalid token.")]
    InvalidToken,
    /// Blocked user, or unconfirmed while email confirmation is on.
    #[error("Invalid credentials")]
    InvalidCredentials,
    /// An API token past its `expires_at`.
    #[error("Token expired")]
    TokenExpired,
    /// Roles and permissions are not loaded yet.
    #[error("Server is starting, try again")]
    NotReady,
    /// `auth.subscribe` is neither `"explicit"` nor `"roles"`.
    #[error("auth.subscribe must be \"explicit\" or left out")]
    BadSubscribeMode,
    /// `auth.subscriptions` is not a list, or holds more than a socket may.
    #[error("{0}")]
    BadSubscriptions(String),
}

/// One event, to the rooms allowed to read it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Socket.IO event name, `message:create`.
    pub event: String,
    /// Target rooms (shared: computed once per content type and action).
    pub rooms: Arc<[RoomName]>,
    /// The payload, serialized once.
    pub payload: Payload,
    /// The content type and entry the event is about, for the sockets subscribed to them
    /// (`None`: only `rooms` receive it).
    pub subject: Option<Subject>,
}

/// What an event is about: its subscribers (rooms [`type_room`] and [`entry_room`]) receive
/// it as well.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The content type.
    pub content_type: Arc<ContentType>,
    /// The entry, when the event is about one.
    pub entry_id: Option<i64>,
}

/// What the access stage hands to the Socket.IO stage, in stream order.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// Emit an event to rooms.
    Deliver(Delivery),
    /// Emit as given (custom `raw`).
    Raw(RawEmit),
    /// Roles, users or tokens changed: re-check the connected sockets this can affect
    /// (disconnect blocked or deleted users, removed, expired or regenerated tokens; move
    /// sockets whose role changed).
    AccessChanged(Recheck),
}

/// A role (`up_roles`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// `up_roles.id`
    pub id: i64,
    /// `up_roles.name`: also its room name.
    pub name: String,
    /// `up_roles.type`: `public`, `authenticated`, or a custom role's slug.
    pub kind: String,
}

/// A users-permissions user (`up_users`), with only what access decisions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `up_users.id`
    pub id: i64,
    /// `up_users.blocked`
    pub blocked: bool,
    /// `up_users.confirmed`
    pub confirmed: bool,
}

/// The kind of a Strapi API token (`strapi_api_tokens.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `read-only`: find and findOne of every content type.
    ReadOnly,
    /// `full-access`: everything.
    FullAccess,
    /// `custom`: the actions in `strapi_api_token_permissions`.
    Custom,
}

impl TokenKind {
    /// The kind named by a `strapi_api_tokens.type` value.
    pub fn from_type(text: &str) -> Option<TokenKind> {
        match text {
            "read-only" => Some(TokenKind::ReadOnly),
            "full-access" => Some(TokenKind::FullAccess),
            "custom" => Some(TokenKind::Custom),
            _ => None,
        }
    }
}

/// A Strapi API token (`strapi_api_tokens`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// `strapi_api_tokens.id`
    pub id: i64,
    /// `strapi_api_tokens.name`
    pub name: String,
    /// `strapi_api_tokens.type`
    pub kind: TokenKind,
    /// `access_key`: lowercase hex HMAC-SHA512(API_TOKEN_SALT, token).
    pub access_key: String,
    /// `expires_at` in µs since the Unix epoch (UTC); `None` = never.
    pub expires_at_unix_micros: Option<i64>,
}

/// A complete picture of the access tables, as loaded at start (or built by tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessSnapshot {
    /// Every role.
    pub roles: Vec<Role>,
    /// `(role id, action)` for every permission linked to a role.
    pub role_permissions: Vec<(i64, String)>,
    /// Every user.
    pub users: Vec<User>,
    /// `(user id, role id)` links.
    pub user_roles: Vec<(i64, i64)>,
    /// Every API token.
    pub api_tokens: Vec<ApiToken>,
    /// `(token id, action)` for custom tokens.
    pub token_permissions: Vec<(i64, String)>,
    /// users-permissions advanced setting `email_confirmation`.
    pub email_confirmation: bool,
}

/// What access decisions need from the configuration.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// Room (and role name) of sockets without a token.
    pub public_role_name: String,
    /// Who receives what.
    pub permission_mode: crate::config::PermissionMode,
    /// Users-permissions JWT secret (its UTF-8 bytes are the HMAC key).
    pub jwt_secret: Option<crate::config::Secret>,
    /// Which JWT shapes are accepted (Strapi 5's `jwtManagement`).
    pub jwt_management: crate::config::JwtManagement,
    /// Salt of API-token hashes.
    pub api_token_salt: Option<crate::config::Secret>,
}

impl AccessConfig {
    /// What access needs from the `[auth]` section.
    pub fn from_auth(auth: &crate::config::AuthConfig) -> AccessConfig {
        AccessConfig {
            public_role_name: auth.public_role_name.clone(),
            permission_mode: auth.permission_mode,
            jwt_secret: auth.jwt_secret.clone(),
            jwt_management: auth.jwt_management,
            api_token_salt: auth.api_token_salt.clone(),
        }
    }
}

/// The live access state, shared with the handshake. Cheap to clone: every clone sees the
/// same state. A default handle has nothing loaded and refuses every handshake with
/// [`AuthError::NotReady`].
#[derive(Debug, Clone, Default)]
pub struct AccessHandle {
    state: Arc<RwLock<State>>,
}

impl AccessHandle {
    /// A handle over a fixed snapshot (start-up load, tests). Permission rows and link rows
    /// have no ids in a snapshot; they are numbered 1, 2, … in the snapshot's order (role
    /// permission *n* is `up_permissions` id *n*, linked by `up_permissions_role_links` id
    /// *n*; user-role link *n* is `up_users_role_links` id *n*; token permission *n* is
    /// `strapi_api_token_permissions` id *n*, linked by link id *n*), so later row changes
    /// can name them.
    pub fn from_snapshot(config: AccessConfig, snapshot: AccessSnapshot) -> Self {
        AccessHandle::with_state(State::from_snapshot(
            config,
            snapshot,
            state::system_clock(),
        ))
    }

    /// [`from_snapshot`](Self::from_snapshot) with a fixed clock (Unix microseconds).
    #[cfg(test)]
    pub(crate) fn from_snapshot_at(
        config: AccessConfig,
        snapshot: AccessSnapshot,
        clock: state::Clock,
    ) -> Self {
        AccessHandle::with_state(State::from_snapshot(config, snapshot, clock))
    }

    fn with_state(state: State) -> Self {
        AccessHandle {
            state: Arc::new(RwLock::new(state)),
        }
    }

    /// The state, for reading. A panic elsewhere while holding the lock cannot leave the
    /// maps half-updated in a way that matters more than refusing service, so poisoning is
    /// ignored.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Authenticates a handshake: `token` from `auth.token`, `strategy` from `auth.strategy`.
    /// The error's `Display` is the client's `connect_error` message.
    pub fn authenticate(
        &self,
        token: Option<&str>,
        strategy: Option<&str>,
    ) -> Result<Principal, AuthError> {
        self.read().authenticate(token, strategy)
    }

    /// Re-evaluates a connected socket's identity after an access change: a deleted or
    /// blocked user, or a deleted or expired token, is an error (disconnect it); a user whose
    /// role changed gets its new room.
    pub fn refresh(&self, identity: &Identity) -> Result<Principal, AuthError> {
        self.read().refresh(identity)
    }

    /// Re-checks a connected socket's principal: [`refresh`](Self::refresh), and also refuses
    /// a JWT past its `exp` and an API token whose key was regenerated since the handshake.
    /// The answer keeps the JWT's `exp`.
    pub fn recheck(&self, principal: &Principal) -> Result<Principal, AuthError> {
        self.read().recheck(principal)
    }

    /// Replaces the whole state with `other`'s (a reload); every handle sees the new one.
    pub fn replace_with(&self, other: Access) {
        let new = std::mem::take(&mut *other.handle.write());
        *self.write() = new;
    }

    /// Rooms allowed to receive `action` events of content type `uid` (roles by id, then
    /// tokens by id). Cached per `(uid, action)` until the next access change or token expiry.
    pub fn rooms_for(&self, uid: &str, action: &Action) -> Arc<[RoomName]> {
        self.read().rooms_for(uid, action)
    }

    /// Rooms allowed `action` on content type `uid` by the plugin's rule (the role holds
    /// `uid.action` exactly; see [`PermissionMode::Action`]), whatever `permission_mode` says:
    /// the rooms of `find`/`findOne` events of REST reads.
    ///
    /// [`PermissionMode::Action`]: crate::config::PermissionMode::Action
    pub fn rooms_holding(&self, uid: &str, action: &Action) -> Arc<[RoomName]> {
        self.read().rooms_holding(uid, action)
    }

    /// Whether a socket whose identity is in `rooms` may read content type `uid` under the
    /// current permission mode: an entry (`entry`: `findOne` under the plugin's rule) or the
    /// whole type (`find`). Read mode accepts either permission for both.
    pub fn may_read(&self, rooms: &[RoomName], uid: &str, entry: bool) -> bool {
        let action = Action::Custom(Arc::from(if entry { "findOne" } else { "find" }));
        let allowed = self.rooms_for(uid, &action);
        rooms.iter().any(|r| allowed.contains(r))
    }

    /// Whether any role or token may read content type `uid` (`find` or `findOne`).
    fn anyone_reads(&self, uid: &str) -> bool {
        ["find", "findOne"].into_iter().any(|a| {
            !self
                .rooms_for(uid, &Action::Custom(Arc::from(a)))
                .is_empty()
        })
    }

    /// Whether roles and permissions have been loaded.
    pub fn is_loaded(&self) -> bool {
        self.read().is_loaded()
    }

    /// Names of the roles that have one, by role id: the rooms role events can go to
    /// (`check` compares them with the public role name).
    pub fn role_names(&self) -> Vec<String> {
        self.read().role_names()
    }

    /// The room sockets without a token join.
    pub fn public_role_name(&self) -> String {
        self.read().public_role_name().to_owned()
    }

    /// The current tables as a snapshot, every list sorted by id (for `check` and tests).
    /// Tokens of a type this version does not know are left out.
    pub fn snapshot(&self) -> AccessSnapshot {
        self.read().snapshot()
    }
}

/// The access stage: keeps the state current from the stream and decides each event's rooms.
#[derive(Debug)]
pub struct Access {
    handle: AccessHandle,
}

impl Access {
    /// Loads roles, permissions, users and API tokens from `schema`, plus the
    /// users-permissions `email_confirmation` setting, in one read-only transaction. Missing
    /// tables (a Strapi without API tokens) are read as empty, with a warning.
    pub async fn load(
        client: &tokio_postgres::Client,
        schema: &str,
        cfg: AccessConfig,
    ) -> Result<Access, AccessError> {
        let tables = load::load_tables(client, schema).await?;
        Ok(Access::with_state(State::new(
            cfg,
            tables,
            state::system_clock(),
        )))
    }

    /// [`load`](Self::load) inside a transaction the caller opened (`REPEATABLE READ`, with
    /// `DateStyle = 'ISO'` and `TimeZone = 'UTC'`), so that other reads share its snapshot.
    pub async fn load_in_transaction(
        client: &tokio_postgres::Client,
        schema: &str,
        cfg: AccessConfig,
    ) -> Result<Access, AccessError> {
        let tables = load::read_all(client, schema).await?;
        Ok(Access::with_state(State::new(
            cfg,
            tables,
            state::system_clock(),
        )))
    }

    /// Nothing loaded yet: every handshake is told to come back later, until
    /// [`AccessHandle::replace_with`] installs a loaded state.
    pub fn unloaded() -> Access {
        Access {
            handle: AccessHandle::default(),
        }
    }

    /// The stage over a snapshot instead of the database (tests of later stages); see
    /// [`AccessHandle::from_snapshot`] for the ids it gives rows.
    pub fn from_snapshot(cfg: AccessConfig, snapshot: AccessSnapshot) -> Access {
        Access {
            handle: AccessHandle::from_snapshot(cfg, snapshot),
        }
    }

    #[cfg(test)]
    pub(crate) fn from_snapshot_at(
        cfg: AccessConfig,
        snapshot: AccessSnapshot,
        clock: state::Clock,
    ) -> Access {
        Access {
            handle: AccessHandle::from_snapshot_at(cfg, snapshot, clock),
        }
    }

    fn with_state(state: State) -> Access {
        Access {
            handle: AccessHandle::with_state(state),
        }
    }

    /// A handle on the same state, for the handshake and the HTTP emit API.
    pub fn handle(&self) -> AccessHandle {
        self.handle.clone()
    }

    /// Applies one access change. Rows are matched by `id` (an UPDATE carries the whole new
    /// row; a DELETE may carry only the id); a TRUNCATE empties that table; unreadable
    /// values are logged and read as unknown. A change to values the bridge reads rebuilds
    /// what they imply; one that changes none of them (Strapi's `last_used_at`) does nothing.
    /// Returns the sockets to check again.
    pub fn apply(&mut self, change: AccessChange) -> Recheck {
        let mut state = self.handle.write();
        match change {
            AccessChange::Row {
                table,
                relation,
                op,
            } => {
                debug!(table = table.table_name(), "access change");
                state.apply_row(table, &relation, &op)
            }
            AccessChange::Truncate(table) => state.truncate(table),
            AccessChange::AdvancedSettings(value) => match email_confirmation_setting(&value) {
                Some(on) => state.set_email_confirmation(on),
                None => {
                    debug!("users-permissions advanced settings without email_confirmation");
                    Recheck::default()
                }
            },
        }
    }

    /// The rooms that may read `event`, from memory; `None` when no room may.
    pub fn authorize(&mut self, event: StrapiEvent) -> Option<Delivery> {
        let rooms = self
            .handle
            .rooms_for(&event.content_type.uid, &event.action);
        // No role may receive it; subscribers may, where the mode lets a reader lack the
        // event's own action (`permission_mode = "action"`).
        if rooms.is_empty() && !self.handle.anyone_reads(&event.content_type.uid) {
            debug!(
                uid = %event.content_type.uid,
                action = %event.action,
                "no room may read this event"
            );
            return None;
        }
        Some(Delivery {
            event: event.event_name(),
            rooms,
            payload: event.payload,
            subject: Some(Subject {
                content_type: event.content_type,
                entry_id: event.entry_id,
            }),
        })
    }
}

/// `email_confirmation` from the users-permissions advanced settings: the parsed object, or
/// the core store's JSON text of it. `None` when absent or not a boolean.
fn email_confirmation_setting(value: &serde_json::Value) -> Option<bool> {
    match value {
        serde_json::Value::String(text) => {
            email_confirmation_setting(&serde_json::from_str(text).ok()?)
        }
        serde_json::Value::Object(map) => match map.get("email_confirmation")? {
            serde_json::Value::Bool(on) => Some(*on),
            serde_json::Value::Null => Some(false),
            _ => None,
        },
        _ => None,
    }
}
