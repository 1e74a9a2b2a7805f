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

/// The live access state, shared with the handshake. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AccessHandle {}

impl AccessHandle {
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
