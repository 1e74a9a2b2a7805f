//! The handshake: a connect middleware on `/` that authenticates the client's `auth` object and
//! puts the socket in its rooms before the client is told it is connected, and the re-check of
//! a connected socket after an access change.
//!
//! The plugin reads `socket.handshake.auth.token` (v2 also `auth.strategy`). A missing, `null`
//! or empty token means the public role; anything else is checked and, if refused, the client
//! gets `connect_error` with the [`AuthError`] text and joins nothing: a bad token is never
//! downgraded to public.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use tracing::{debug, info, warn};

use super::{Shared, events, subscriptions};
use crate::access::{AuthError, Principal};

/// What the bridge remembers about a connected socket (kept in the socket's extensions).
#[derive(Debug, Clone)]
pub(super) struct Session {
    /// Who it is and the rooms it is in (besides its socket-id room).
    pub principal: Arc<Principal>,
    /// The access epoch its handshake saw.
    pub epoch: u64,
}

/// `auth.token` and `auth.strategy` from the client's auth object.
fn credentials(auth: Option<&Value>) -> Result<(Option<&str>, Option<&str>), AuthError> {
    let Some(Value::Object(auth)) = auth else {
        return Ok((None, None));
    };
    let token = match auth.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.as_str()),
        // A number or object is a token that cannot be valid; refusing it is the plugin's
        // behaviour (jsonwebtoken throws), and it must not fall back to the public role.
        Some(_) => return Err(AuthError::InvalidToken),
    };
    let strategy = auth.get("strategy").and_then(Value::as_str);
    Ok((token, strategy))
}

/// A short, fixed label for metrics.
fn reason(e: &AuthError) -> &'static str {
    match e {
        AuthError::InvalidToken => "invalid_token",
        AuthError::InvalidCredentials => "invalid_credentials",
        AuthError::TokenExpired => "token_expired",
        AuthError::NotReady => "not_ready",
        AuthError::BadSubscribeMode => "bad_subscribe_mode",
    }
}

/// The connect middleware: authenticate, join rooms, attach the event handlers. Runs before
/// socketioxide sends CONNECT, so a client that sees `connect` is already in its rooms.
pub(super) fn authenticate<A: Adapter>(
    shared: &Arc<Shared>,
    socket: &SocketRef<A>,
    auth: Option<&Value>,
) -> Result<(), AuthError> {
    let epoch = shared.access_epoch.load(Ordering::SeqCst);
    let principal = subscriptions::check_mode(auth)
        .and_then(|()| credentials(auth))
        .and_then(|(token, strategy)| shared.access.authenticate(token, strategy));
    let principal = match principal {
        Ok(p) => p,
        Err(e) => {
            shared.metrics.connection_refused(reason(&e));
            debug!(socket = %socket.id, reason = %e, "handshake refused");
            return Err(e);
        }
    };
    super::emit::catch_up_from(shared, socket, auth);
    socket.join(socket.id.to_string());
    if subscriptions::attach(shared, socket, auth) {
        socket.join(principal.rooms.clone());
    }
    socket.extensions.insert(Session {
        principal: Arc::new(principal),
        epoch,
    });
    events::attach(shared, socket);
    Ok(())
}

/// The connect handler, after CONNECT was sent: re-check if an access change raced the
/// handshake, then run the `connection` handlers.
pub(super) fn connected<A: Adapter>(shared: &Arc<Shared>, socket: SocketRef<A>) {
    let Some(session) = socket.extensions.get::<Session>() else {
        return;
    };
    if shared.access_epoch.load(Ordering::SeqCst) != session.epoch {
        recheck(shared, socket.clone());
    }
    super::emit::start_catch_up(shared, &socket);
    events::on_connection(shared, &socket);
}

/// Checks a connected socket against the current access data: a refused identity (blocked or
/// deleted user, removed token) is disconnected; one whose rooms changed leaves the old ones
/// and joins the new ones.
pub(super) fn recheck<A: Adapter>(shared: &Shared, socket: SocketRef<A>) {
    let Some(session) = socket.extensions.get::<Session>() else {
        return;
    };
    let old = &session.principal;
    match shared.access.refresh(&old.identity) {
        // Access data is being reloaded: keep the socket as it is.
        Err(AuthError::NotReady) => {}
        Err(e) => {
            info!(
                socket = %socket.id,
                role = %old.role,
                user_id = ?old.user_id,
                reason = %e,
                "access revoked; disconnecting socket"
            );
            let id = socket.id;
            if let Err(err) = socket.disconnect() {
                warn!(socket = %id, error = %err, "could not disconnect socket");
            }
        }
        Ok(new) => {
            if new.rooms != old.rooms && subscriptions::joins_role_rooms(&socket) {
                let leave: Vec<String> = old
                    .rooms
                    .iter()
                    .filter(|r| !new.rooms.contains(r))
                    .cloned()
                    .collect();
                let join: Vec<String> = new
                    .rooms
                    .iter()
                    .filter(|r| !old.rooms.contains(r))
                    .cloned()
                    .collect();
                socket.leave(leave);
                socket.join(join);
                info!(
                    socket = %socket.id,
                    from = ?old.rooms,
                    to = ?new.rooms,
                    "access changed; socket moved to new rooms"
                );
            }
            if new != **old {
                socket.extensions.insert(Session {
                    principal: Arc::new(new),
                    epoch: session.epoch,
                });
            }
            subscriptions::recheck(shared, &socket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_read_token_and_strategy() {
        let cases = [
            (None, Ok((None, None))),
            (Some(json!({})), Ok((None, None))),
            (Some(json!({"token": null})), Ok((None, None))),
            (Some(json!({"token": ""})), Ok((None, None))),
            (Some(json!({"token": "abc"})), Ok((Some("abc"), None))),
            (
                Some(json!({"token": "abc", "strategy": "apiToken"})),
                Ok((Some("abc"), Some("apiToken"))),
            ),
            (Some(json!({"token": 12})), Err(AuthError::InvalidToken)),
            (Some(json!("just a string")), Ok((None, None))),
        ];
        for (auth, want) in cases {
            assert_eq!(credentials(auth.as_ref()), want, "{auth:?}");
        }
    }
}
