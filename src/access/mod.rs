//! Access: who may read what, kept current from the replication stream.
//!
//! Receives the model's outputs in stream order. [`AccessChange`]s update an in-memory copy of
//! Strapi's roles, permissions, users and API tokens (loaded once at start); each
//! [`StrapiEvent`] is turned into a [`Delivery`] naming the rooms whose role may read it, with no
//! database query on that path. Because changes and events share one ordered stream, an event
//! committed after a permission was revoked never reaches that role. The same state answers the
//! Socket.IO handshake through the cheap-to-clone [`AccessHandle`]. It never talks to sockets.

use std::sync::Arc;

use crate::strapi::{Action, Payload, RawEmit};

/// A Socket.IO room: a role's name (`Public`, `Authenticated`), an API token's room, or a
/// socket id.
pub type RoomName = String;

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
    /// The rooms it belongs in (besides its own socket-id room).
    pub rooms: Vec<RoomName>,
    /// Role name, or token name for API tokens (for logs and handlers).
    pub role: String,
    /// The user id, for users.
    pub user_id: Option<i64>,
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
}

/// What the access stage hands to the Socket.IO stage, in stream order.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// Emit an event to rooms.
    Deliver(Delivery),
    /// Emit as given (custom `raw`).
    Raw(RawEmit),
    /// Roles, users or tokens changed: re-check connected sockets (disconnect blocked or
    /// deleted users, move sockets whose role changed).
    AccessChanged,
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
    /// Salt of API-token hashes.
    pub api_token_salt: Option<crate::config::Secret>,
}

/// The live access state, shared with the handshake. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AccessHandle {}

impl AccessHandle {
    /// A handle over a fixed snapshot (start-up load, tests).
    pub fn from_snapshot(config: AccessConfig, snapshot: AccessSnapshot) -> Self {
        let _ = (config, snapshot);
        AccessHandle {}
    }

    /// Authenticates a handshake: `token` from `auth.token`, `strategy` from `auth.strategy`.
    pub fn authenticate(
        &self,
        token: Option<&str>,
        strategy: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let _ = (token, strategy);
        Err(AuthError::NotReady)
    }

    /// Re-evaluates a connected socket's identity after an access change.
    pub fn refresh(&self, identity: &Identity) -> Result<Principal, AuthError> {
        let _ = identity;
        Err(AuthError::NotReady)
    }

    /// Rooms allowed to receive `action` events of content type `uid`.
    pub fn rooms_for(&self, uid: &str, action: &Action) -> Arc<[RoomName]> {
        let _ = (uid, action);
        Arc::from(Vec::new())
    }

    /// Whether roles and permissions have been loaded.
    pub fn is_loaded(&self) -> bool {
        false
    }
}
