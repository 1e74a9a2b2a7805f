//! The handshake: a connect middleware on `/` that authenticates the client's `auth` object and
//! puts the socket in its rooms before the client is told it is connected; the re-check of a
//! connected socket after an access change or when its credential expires; and the
//! `strapi-io:auth` event, by which a connected client hands over a fresh token.
//!
//! The plugin reads `socket.handshake.auth.token` (v2 also `auth.strategy`). A missing, `null`
//! or empty token means the public role; anything else is checked and, if refused, the client
//! gets `connect_error` with the [`AuthError`] text and joins nothing: a bad token is never
//! downgraded to public.
//!
//! A connected socket whose access is taken away (blocked or deleted user, deleted, expired or
//! regenerated token, JWT past its `exp`) first leaves every room, which needs nothing from its
//! send buffer, so from that moment no event reaches it; then it is disconnected. When its
//! buffer is full the DISCONNECT packet cannot be queued: it is tried again until it fits or
//! the engine.io heartbeat, which cannot queue its ping either, closes the transport.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use socketioxide::SocketError;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Emitter, Shared, events, subscriptions};
use crate::access::{AuthError, Principal, Recheck};

/// The event a connected client emits with a fresh token (a string, or `{token, strategy}`
/// like the handshake's `auth`) before the current one expires. The acknowledgement, when
/// asked for, is `{"ok":true}` or `{"error":"<the handshake's message>"}`.
pub const AUTH_EVENT: &str = "strapi-io:auth";

/// The room a socket whose access was taken away sits in until it is gone: broadcasts "to
/// everyone" leave it out.
pub(super) const REVOKED_ROOM: &str = "strapi-io:revoked";

/// How often a DISCONNECT that did not fit a full send buffer is tried again.
const DISCONNECT_RETRY: Duration = Duration::from_millis(100);

/// After an expiry sweep, the next one waits at least this long (many tokens expiring at
/// once cost one sweep).
const EXPIRY_SWEEP_MIN_GAP: Duration = Duration::from_millis(250);

/// The longest the expiry sweeper sleeps without looking (a safety net; expiries are noted
/// as they are learnt).
const EXPIRY_SWEEP_MAX_SLEEP: Duration = Duration::from_secs(60);

/// What the bridge remembers about a connected socket (kept in the socket's extensions).
#[derive(Debug, Clone)]
pub(super) struct Session {
    /// Who it is and the rooms it is in.
    pub principal: Arc<Principal>,
    /// The access epoch its handshake saw.
    pub epoch: u64,
    /// Access was taken away: the socket is in no room and is being disconnected.
    pub revoked: bool,
}

/// When the next credential of a connected socket expires, so one task can check sockets
/// then instead of one timer per socket.
#[derive(Debug)]
pub(super) struct Expiries {
    /// The earliest expiry noted since the last sweep (µs since the Unix epoch; `i64::MAX`
    /// when none).
    next: AtomicI64,
    wake: Notify,
}

impl Default for Expiries {
    fn default() -> Self {
        Expiries {
            next: AtomicI64::new(i64::MAX),
            wake: Notify::new(),
        }
    }
}

impl Expiries {
    /// A socket's credential expires at `at`.
    fn note(&self, at: Option<i64>) {
        if let Some(at) = at
            && self.next.fetch_min(at, Ordering::SeqCst) > at
        {
            self.wake.notify_one();
        }
    }
}

/// Microseconds since the Unix epoch.
fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
        AuthError::BadSubscriptions(_) => "bad_subscriptions",
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
    let principal = subscriptions::check_mode(shared, auth)
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
    if subscriptions::attach(shared, socket, auth, &principal.rooms) {
        socket.join(principal.rooms.clone());
    }
    shared.expiries.note(principal.expires_at);
    socket.extensions.insert(Session {
        principal: Arc::new(principal),
        epoch,
        revoked: false,
    });
    events::attach(shared, socket);
    // After the `[[events]]` handlers, so that none of them can take this name over.
    let for_auth = shared.clone();
    socket.on(
        AUTH_EVENT,
        move |s: SocketRef<A>, TryData(data): TryData<Value>, ack: AckSender<A>| async move {
            let answer = match data {
                Ok(data) => reauthenticate(&for_auth, &s, &data),
                Err(_) => Err(AuthError::InvalidToken),
            };
            let body = match answer {
                Ok(()) => json!({ "ok": true }),
                Err(e) => json!({ "error": e.to_string() }),
            };
            if let Err(e) = ack.send(&body) {
                debug!(socket = %s.id, error = %e, "could not acknowledge strapi-io:auth");
            }
        },
    );
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
    subscriptions::report_refused(&socket);
    super::emit::start_catch_up(shared, &socket);
    events::on_connection(shared, &socket);
}

/// `strapi-io:auth`: a fresh token replaces the socket's credential. Accepted, the socket
/// moves to the new identity's rooms and its expiry is the new token's; refused, nothing
/// changes (the old credential still holds until it expires).
fn reauthenticate<A: Adapter>(
    shared: &Shared,
    socket: &SocketRef<A>,
    data: &Value,
) -> Result<(), AuthError> {
    let Some(session) = socket.extensions.get::<Session>() else {
        return Err(AuthError::InvalidToken);
    };
    if session.revoked {
        return Err(AuthError::InvalidToken);
    }
    let auth = match data {
        Value::String(token) => json!({ "token": token }),
        other => other.clone(),
    };
    let (token, strategy) = credentials(Some(&auth))?;
    let new = shared
        .access
        .authenticate(token, strategy)
        .inspect_err(|e| debug!(socket = %socket.id, reason = %e, "fresh token refused"))?;
    debug!(socket = %socket.id, role = %new.role, "socket credential refreshed");
    move_to(shared, socket, &session, new);
    Ok(())
}

/// Checks a connected socket against the current access data: a refused identity (blocked or
/// deleted user, removed, expired or regenerated token, expired JWT) is revoked; one whose
/// rooms changed leaves the old ones and joins the new ones.
pub(super) fn recheck<A: Adapter>(shared: &Shared, socket: SocketRef<A>) {
    let Some(session) = socket.extensions.get::<Session>() else {
        return;
    };
    if session.revoked {
        return;
    }
    shared.metrics.socket_rechecked();
    match shared.access.recheck(&session.principal) {
        // Access data is being reloaded: keep the socket as it is.
        Err(AuthError::NotReady) => {}
        Err(e) => revoke(shared, socket, &session, &e),
        Ok(new) => move_to(shared, &socket, &session, new),
    }
}

/// Puts the socket in `new`'s rooms (leaving only those it no longer has) and remembers it.
fn move_to<A: Adapter>(shared: &Shared, socket: &SocketRef<A>, session: &Session, new: Principal) {
    let old = &session.principal;
    // A socket in explicit subscription mode stays out of role rooms.
    if new.rooms != old.rooms && subscriptions::joins_role_rooms(socket) {
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
        socket.join(join);
        socket.leave(leave);
        info!(
            socket = %socket.id,
            from = ?old.rooms,
            to = ?new.rooms,
            "access changed; socket moved to new rooms"
        );
    }
    if new != **old {
        shared.expiries.note(new.expires_at);
        socket.extensions.insert(Session {
            principal: Arc::new(new),
            epoch: session.epoch,
            revoked: false,
        });
    }
    // Subscriptions the new access no longer allows are dropped.
    subscriptions::recheck(shared, socket);
}

/// Takes access away at once: out of every room and into
/// [`REVOKED_ROOM`], with no send buffer involved; then disconnects, retrying while the
/// buffer is full.
fn revoke<A: Adapter>(shared: &Shared, socket: SocketRef<A>, session: &Session, e: &AuthError) {
    let old = &session.principal;
    info!(
        socket = %socket.id,
        role = %old.role,
        user_id = ?old.user_id,
        reason = %e,
        "access revoked; disconnecting socket"
    );
    socket.leave_all();
    socket.join(REVOKED_ROOM);
    let mut principal = (**old).clone();
    principal.rooms.clear();
    socket.extensions.insert(Session {
        principal: Arc::new(principal),
        epoch: session.epoch,
        revoked: true,
    });
    shared.metrics.socket_revoked();
    let id = socket.id;
    match socket.clone().disconnect() {
        Ok(()) => {}
        Err(SocketError::InternalChannelFull) => {
            warn!(socket = %id, "send buffer full; the socket is in no room and is disconnected as soon as its buffer has room");
            tokio::spawn(async move {
                while socket.connected() {
                    tokio::time::sleep(DISCONNECT_RETRY).await;
                    match socket.clone().disconnect() {
                        Err(SocketError::InternalChannelFull) => {}
                        Ok(()) | Err(_) => break,
                    }
                }
                debug!(socket = %id, "revoked socket disconnected");
            });
        }
        Err(err) => debug!(socket = %id, error = %err, "revoked socket already closing"),
    }
}

impl<A: Adapter> Emitter<A> {
    /// Access data changed: the connected sockets `which` can affect are checked again.
    pub(super) fn recheck_sockets(&self, which: &Recheck) {
        self.shared.access_epoch.fetch_add(1, Ordering::SeqCst);
        if which.is_empty() && !which.subscriptions {
            return;
        }
        let Some(op) = self.io.of("/") else {
            return;
        };
        for socket in op.sockets() {
            let affected = socket
                .extensions
                .get::<Session>()
                .is_some_and(|s| !s.revoked && which.affects(&s.principal));
            if affected {
                recheck(&self.shared, socket);
            } else if which.subscriptions {
                subscriptions::recheck(&self.shared, &socket);
            }
        }
    }

    /// Disconnects sockets whose credential expired (a JWT's `exp`, an API token's
    /// `expires_at`) and that did not send a fresh one with `strapi-io:auth`. Runs until
    /// `stop` is cancelled.
    pub async fn watch_expiries(self, stop: CancellationToken) {
        let expiries = &self.shared.expiries;
        loop {
            let next = expiries.next.load(Ordering::SeqCst);
            let now = now_micros();
            if next <= now {
                expiries.next.store(i64::MAX, Ordering::SeqCst);
                self.sweep_expired(now);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(EXPIRY_SWEEP_MIN_GAP) => {}
                }
                continue;
            }
            let wait = Duration::from_micros(u64::try_from(next - now).unwrap_or(u64::MAX))
                .min(EXPIRY_SWEEP_MAX_SLEEP);
            tokio::select! {
                () = stop.cancelled() => return,
                () = expiries.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Re-checks every socket whose credential expired by `now`, and notes the next expiry.
    fn sweep_expired(&self, now: i64) {
        let Some(op) = self.io.of("/") else {
            return;
        };
        for socket in op.sockets() {
            let Some(session) = socket.extensions.get::<Session>() else {
                continue;
            };
            if session.revoked {
                continue;
            }
            match session.principal.expires_at {
                Some(at) if at <= now => {
                    recheck(&self.shared, socket.clone());
                    // Still there (access data being reloaded): look again in a second.
                    if socket
                        .extensions
                        .get::<Session>()
                        .is_some_and(|s| !s.revoked && s.principal.expires_at <= Some(now))
                    {
                        self.shared
                            .expiries
                            .note(Some(now.saturating_add(1_000_000)));
                    }
                }
                at => self.shared.expiries.note(at),
            }
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
