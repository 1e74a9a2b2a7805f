//! Subscriptions: a socket asks for the events of one content type or one entry, instead of (or
//! besides) everything its role may read.
//!
//! - `auth.subscribe = "explicit"` at the handshake: the socket joins no role room, so it
//!   receives only what it subscribes to (and messages for its socket id or joinable rooms).
//! - `auth.subscriptions = [{ type, id? }, …]` at the handshake: subscribed before the client
//!   is told it is connected, so a catch-up with `auth.offset` includes their events (the
//!   replay buffer knows each data event's type and entry, [`subscribed_to`]); each entry is
//!   checked as `strapi-io:subscribe` would be, and the refused ones are reported right after
//!   the connect with `strapi-io:unsubscribed` (as sent, with `error`).
//! - `strapi-io:subscribe` / `strapi-io:unsubscribe` with `{ type, id? }` (`type`: a
//!   singularName or uid; `id`: an entry, or none for the whole type); the ack is
//!   `{ ok: true }` or `{ error: "…" }`.
//! - The plugin 5.x names: `subscribe-entity` / `unsubscribe-entity` with `{ uid, id }`, and
//!   `join-room` / `leave-room` with a room name from `[io] joinable_rooms`; their ack is
//!   `{ success: true, room }` or `{ success: false, error }`.
//!
//! A subscription is a room, `sub:<uid>` or `sub:<uid>:<id>` ([`type_room`], [`entry_room`]);
//! every delivery about a subscribed type is sent to its role rooms and these rooms in one
//! broadcast, so a socket in several of them gets it once and the payload is serialized once.
//! Subscribing needs read access to the type (`find`/`findOne` as `permission_mode` says); on
//! every access change each subscription is checked again and dropped when that is no longer
//! true (the socket is told with `strapi-io:unsubscribed`). A socket holds at most `[io]
//! max_subscriptions_per_socket`, and its requests draw on its allowance of client events
//! (`[io] client_events_per_second` / `client_events_burst`), like `[[events]]` handlers.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use tracing::{debug, info};

use super::handshake::Session;
use super::{Shared, events};
use crate::access::{AuthError, RoomName, Subject, entry_room, type_room};
use crate::delivery::Entry;
use crate::metrics::Metrics;
use crate::strapi::Catalog;

/// The event that tells a socket a subscription is not held: dropped when its read access was
/// revoked, or refused when it came in `auth.subscriptions`.
const UNSUBSCRIBED_EVENT: &str = "strapi-io:unsubscribed";

/// Subscriptions per content type over every socket: whether a delivery needs the
/// subscription rooms at all, and the `/metrics` gauge.
pub(super) struct Registry {
    counts: Mutex<HashMap<Arc<str>, usize>>,
    metrics: Metrics,
}

impl Registry {
    pub(super) fn new(metrics: Metrics) -> Registry {
        Registry {
            counts: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, usize>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn added(&self, uid: &Arc<str>) {
        let mut counts = self.counts();
        let n = counts.entry(uid.clone()).or_default();
        *n += 1;
        self.metrics.set_subscriptions(uid, *n);
    }

    fn removed(&self, uid: &Arc<str>) {
        let mut counts = self.counts();
        let Some(n) = counts.get_mut(uid) else {
            return;
        };
        *n = n.saturating_sub(1);
        self.metrics.set_subscriptions(uid, *n);
        if *n == 0 {
            counts.remove(uid);
        }
    }

    fn any(&self, uid: &str) -> bool {
        self.counts().contains_key(uid)
    }
}

/// The subscription rooms of `subject` go with `rooms`, when some socket subscribed to its
/// type.
pub(super) fn add_rooms(shared: &Shared, subject: Option<&Subject>, rooms: &mut Vec<RoomName>) {
    let Some(subject) = subject else {
        return;
    };
    let uid = &subject.content_type.uid;
    if !shared.subscriptions.any(uid) {
        return;
    }
    rooms.push(type_room(uid));
    if let Some(id) = subject.entry_id {
        rooms.push(entry_room(uid, id));
    }
}

/// One subscription: a content type, or one of its entries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Sub {
    uid: Arc<str>,
    id: Option<i64>,
}

impl Sub {
    fn room(&self) -> RoomName {
        match self.id {
            Some(id) => entry_room(&self.uid, id),
            None => type_room(&self.uid),
        }
    }
}

/// A socket's subscriptions (in its extensions). Dropped with the socket, which removes its
/// subscriptions from the registry.
struct State {
    explicit: bool,
    subs: Mutex<BTreeSet<Sub>>,
    registry: Arc<Registry>,
}

impl State {
    fn subs(&self) -> std::sync::MutexGuard<'_, BTreeSet<Sub>> {
        self.subs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for State {
    fn drop(&mut self) {
        let subs = std::mem::take(self.subs.get_mut().unwrap_or_else(PoisonError::into_inner));
        for sub in subs {
            self.registry.removed(&sub.uid);
        }
    }
}

/// The extension handle.
#[derive(Clone)]
struct Subs(Arc<State>);

/// `auth.subscriptions` entries refused at the handshake, told to the client once it is
/// connected (in the socket's extensions only when there are some).
#[derive(Clone)]
struct Refused(Arc<Vec<Value>>);

/// `auth.subscribe`: absent or `"roles"` (join the role rooms), or `"explicit"`; and
/// `auth.subscriptions`: absent, or a list of at most `[io] max_subscriptions_per_socket`.
pub(super) fn check_mode(shared: &Shared, auth: Option<&Value>) -> Result<(), AuthError> {
    explicit(auth)?;
    initial(auth, shared.events.max_subscriptions).map(|_| ())
}

/// `auth.subscriptions`, checked for shape and count (each entry is checked when applied).
fn initial(auth: Option<&Value>, max: usize) -> Result<&[Value], AuthError> {
    match auth.and_then(|a| a.get("subscriptions")) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(list)) if list.len() <= max => Ok(list),
        Some(Value::Array(list)) => Err(AuthError::BadSubscriptions(format!(
            "auth.subscriptions has {} entries; a socket may hold at most {max} subscriptions \
             (io.max_subscriptions_per_socket)",
            list.len()
        ))),
        Some(_) => Err(AuthError::BadSubscriptions(
            "auth.subscriptions must be a list of { type, id? }".to_owned(),
        )),
    }
}

fn explicit(auth: Option<&Value>) -> Result<bool, AuthError> {
    match auth.and_then(|a| a.get("subscribe")) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::String(s)) if s == "roles" => Ok(false),
        Some(Value::String(s)) if s == "explicit" => Ok(true),
        Some(_) => Err(AuthError::BadSubscribeMode),
    }
}

/// Sets up a socket that passed the handshake (as the identity whose rooms are `rooms`): its
/// subscription state, the subscriptions of `auth.subscriptions`, and the client events above.
/// Returns whether it joins its role rooms (not with `auth.subscribe = "explicit"`).
pub(super) fn attach<A: Adapter>(
    shared: &Arc<Shared>,
    socket: &SocketRef<A>,
    auth: Option<&Value>,
    rooms: &[RoomName],
) -> bool {
    let explicit = explicit(auth).unwrap_or(false);
    socket.extensions.insert(Subs(Arc::new(State {
        explicit,
        subs: Mutex::new(BTreeSet::new()),
        registry: shared.subscriptions.clone(),
    })));
    subscribe_initial(shared, socket, auth, rooms);
    for (event, native, on) in [
        ("strapi-io:subscribe", true, true),
        ("strapi-io:unsubscribe", true, false),
        ("subscribe-entity", false, true),
        ("unsubscribe-entity", false, false),
    ] {
        let shared = shared.clone();
        socket.on(
            event,
            move |s: SocketRef<A>, TryData(data): TryData<Value>, ack: AckSender<A>| async move {
                let res = within_allowance(&shared, &s)
                    .and_then(|()| data.map_err(|_| "expected one object argument".to_owned()))
                    .and_then(|data| request(&shared.catalog.current(), &data, native))
                    .and_then(|sub| {
                        if !on {
                            return unsubscribe(&s, &sub);
                        }
                        match s.extensions.get::<Session>() {
                            Some(session) => subscribe(&shared, &s, &session.principal.rooms, sub),
                            None => Err("not connected".to_owned()),
                        }
                    });
                answer(event, &s, ack, native, res);
            },
        );
    }
    if !shared.joinable_rooms.is_empty() {
        for (event, join) in [("join-room", true), ("leave-room", false)] {
            let shared = shared.clone();
            socket.on(
                event,
                move |s: SocketRef<A>, TryData(data): TryData<Value>, ack: AckSender<A>| async move {
                    let res = within_allowance(&shared, &s)
                        .and_then(|()| joinable(&shared, data.ok().as_ref()))
                        .inspect(|room| {
                            if join {
                                s.join(room.clone());
                            } else {
                                s.leave(room.clone());
                            }
                        });
                    answer(event, &s, ack, false, res);
                },
            );
        }
    }
    !explicit
}

/// A subscription request takes one client event from the socket's allowance.
fn within_allowance<A: Adapter>(shared: &Shared, socket: &SocketRef<A>) -> Result<(), String> {
    if events::take_allowance(shared, socket) {
        Ok(())
    } else {
        shared.metrics.client_event_dropped("rate_limited");
        Err(events::RATE_LIMITED.to_owned())
    }
}

/// Subscribes to each entry of `auth.subscriptions` (checked by [`check_mode`]) as
/// `strapi-io:subscribe` would; the refused ones wait for [`report_refused`].
fn subscribe_initial<A: Adapter>(
    shared: &Shared,
    socket: &SocketRef<A>,
    auth: Option<&Value>,
    rooms: &[RoomName],
) {
    let list = initial(auth, shared.events.max_subscriptions).unwrap_or_default();
    if list.is_empty() {
        return;
    }
    let catalog = shared.catalog.current();
    let mut refused = Vec::new();
    for item in list {
        let res =
            request(&catalog, item, true).and_then(|sub| subscribe(shared, socket, rooms, sub));
        if let Err(error) = res {
            debug!(socket = %socket.id, error = %error, "auth.subscriptions entry refused");
            refused.push(json!({
                "type": item.get("type"),
                "id": item.get("id"),
                "error": error,
            }));
        }
    }
    if !refused.is_empty() {
        socket.extensions.insert(Refused(Arc::new(refused)));
    }
}

/// Once the socket is connected: tells it, with `strapi-io:unsubscribed`, which entries of
/// its `auth.subscriptions` were refused.
pub(super) fn report_refused<A: Adapter>(socket: &SocketRef<A>) {
    let Some(Refused(refused)) = socket.extensions.remove::<Refused>() else {
        return;
    };
    for notice in refused.iter() {
        if let Err(e) = socket.emit(UNSUBSCRIBED_EVENT, notice) {
            debug!(socket = %socket.id, error = %e, "could not tell the client");
        }
    }
}

/// Whether the socket holds a subscription to what a buffered data event is about (its type,
/// or its entry). For catch-up: an event emitted before the subscription existed (one sent in
/// `auth.subscriptions` at a reconnect) did not go to the subscription's room, but the socket
/// asked for it. Holding a subscription means the socket's identity may read the type (it is
/// dropped when that stops).
pub(super) fn subscribed_to<A: Adapter>(socket: &SocketRef<A>, entry: &Entry) -> bool {
    let Some((uid, _)) = &entry.rule else {
        return false;
    };
    let Some(subs) = socket.extensions.get::<Subs>() else {
        return false;
    };
    let held = subs.0.subs();
    held.iter()
        .any(|s| *s.uid == **uid && (s.id.is_none() || s.id == entry.entry_id))
}

/// Whether the socket is now in one of `rooms` that it joined itself: a subscription (dropped
/// as soon as its identity may no longer read the type) or a joinable room. For events fed
/// from the replay buffer to a socket that fell behind.
pub(super) fn joined_any<A: Adapter>(
    shared: &Shared,
    socket: &SocketRef<A>,
    rooms: &[RoomName],
) -> bool {
    let own = |r: &RoomName| r.starts_with("sub:") || shared.joinable_rooms.contains(r);
    if !rooms.iter().any(own) {
        return false;
    }
    let joined = socket.rooms();
    rooms
        .iter()
        .any(|r| own(r) && joined.iter().any(|j| j.as_ref() == r.as_str()))
}

/// Whether the socket joins role rooms (an access change may move it to other ones).
pub(super) fn joins_role_rooms<A: Adapter>(socket: &SocketRef<A>) -> bool {
    socket
        .extensions
        .get::<Subs>()
        .is_none_or(|subs| !subs.0.explicit)
}

/// After an access change: drops every subscription the socket's identity may no longer
/// read, and tells the client.
pub(super) fn recheck<A: Adapter>(shared: &Shared, socket: &SocketRef<A>) {
    let (Some(subs), Some(session)) = (
        socket.extensions.get::<Subs>(),
        socket.extensions.get::<Session>(),
    ) else {
        return;
    };
    let rooms = &session.principal.rooms;
    let lost: Vec<Sub> = subs
        .0
        .subs()
        .iter()
        .filter(|sub| !shared.access.may_read(rooms, &sub.uid, sub.id.is_some()))
        .cloned()
        .collect();
    for sub in lost {
        if !subs.0.subs().remove(&sub) {
            continue;
        }
        socket.leave(sub.room());
        shared.subscriptions.removed(&sub.uid);
        info!(
            socket = %socket.id,
            content_type = %sub.uid,
            id = ?sub.id,
            "read access revoked; subscription dropped"
        );
        let notice = json!({
            "type": &*sub.uid,
            "id": sub.id,
            "error": format!("no longer allowed to read {}", sub.uid),
        });
        if let Err(e) = socket.emit(UNSUBSCRIBED_EVENT, &notice) {
            debug!(socket = %socket.id, error = %e, "could not tell the client");
        }
    }
}

/// Reads `{ type, id? }` (or, with the plugin 5.x names, `{ uid, id }`) and resolves the
/// content type.
fn request(catalog: &Catalog, data: &Value, native: bool) -> Result<Sub, String> {
    let key = if native { "type" } else { "uid" };
    let Some(name) = data.get(key).and_then(Value::as_str) else {
        return Err(format!(
            "expected {{ {key}: <content type>{} }}",
            if native {
                ", id?: <entry id>"
            } else {
                ", id: <entry id>"
            }
        ));
    };
    let id = match data.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_i64().ok_or("id must be an entry id (an integer)")?),
        Some(Value::String(s)) => Some(
            s.parse::<i64>()
                .map_err(|_| format!("id {s:?} is not an entry id (an integer)"))?,
        ),
        Some(_) => return Err("id must be an entry id (an integer)".to_owned()),
    };
    let content_type = catalog
        .by_uid(name)
        .or_else(|| {
            let mut api = catalog
                .content_types()
                .filter(|ct| ct.is_api() && ct.singular_name == name);
            match (api.next(), api.next()) {
                (Some(ct), None) => Some(ct),
                _ => None,
            }
        })
        .ok_or_else(|| format!("unknown content type {name:?}"))?;
    Ok(Sub {
        uid: Arc::from(content_type.uid.as_str()),
        id,
    })
}

/// Subscribes the socket, whose identity's rooms are `rooms`, if that identity may read the
/// type and the socket holds fewer than `[io] max_subscriptions_per_socket`.
fn subscribe<A: Adapter>(
    shared: &Shared,
    socket: &SocketRef<A>,
    rooms: &[RoomName],
    sub: Sub,
) -> Result<RoomName, String> {
    let Some(subs) = socket.extensions.get::<Subs>() else {
        return Err("not connected".to_owned());
    };
    if !shared.access.may_read(rooms, &sub.uid, sub.id.is_some()) {
        return Err(format!("not allowed to read {}", sub.uid));
    }
    let room = sub.room();
    let uid = sub.uid.clone();
    let max = shared.events.max_subscriptions;
    let mut held = subs.0.subs();
    if held.len() >= max && !held.contains(&sub) {
        return Err(format!(
            "too many subscriptions (at most {max} per socket); unsubscribe first"
        ));
    }
    let added = held.insert(sub);
    drop(held);
    if added {
        // Counted first: a delivery that sees the count then reaches the room as soon as the
        // socket is in it.
        shared.subscriptions.added(&uid);
        socket.join(room.clone());
    }
    Ok(room)
}

fn unsubscribe<A: Adapter>(socket: &SocketRef<A>, sub: &Sub) -> Result<RoomName, String> {
    let room = sub.room();
    let Some(subs) = socket.extensions.get::<Subs>() else {
        return Ok(room);
    };
    if subs.0.subs().remove(sub) {
        socket.leave(room.clone());
        subs.0.registry.removed(&sub.uid);
    }
    Ok(room)
}

/// A room from `[io] joinable_rooms`, given as `"room"` or `{ room: "room" }`.
fn joinable(shared: &Shared, data: Option<&Value>) -> Result<RoomName, String> {
    let room = match data {
        Some(Value::String(room)) => room,
        Some(Value::Object(o)) => match o.get("room") {
            Some(Value::String(room)) => room,
            _ => return Err("expected a room name".to_owned()),
        },
        _ => return Err("expected a room name".to_owned()),
    };
    if shared.joinable_rooms.iter().any(|r| r == room) {
        Ok(room.clone())
    } else {
        Err(format!("room {room:?} is not joinable"))
    }
}

#[derive(Serialize)]
struct Native<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct Plugin5<'a> {
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

fn answer<A: Adapter>(
    event: &str,
    socket: &SocketRef<A>,
    ack: AckSender<A>,
    native: bool,
    res: Result<RoomName, String>,
) {
    if let Err(e) = &res {
        debug!(socket = %socket.id, event, error = %e, "request refused");
    }
    let sent = match (&res, native) {
        (Ok(_), true) => ack.send(&Native {
            ok: Some(true),
            error: None,
        }),
        (Err(e), true) => ack.send(&Native {
            ok: None,
            error: Some(e),
        }),
        (Ok(room), false) => ack.send(&Plugin5 {
            success: true,
            room: Some(room),
            error: None,
        }),
        (Err(e), false) => ack.send(&Plugin5 {
            success: false,
            room: None,
            error: Some(e),
        }),
    };
    if let Err(e) = sent {
        debug!(socket = %socket.id, event, error = %e, "could not send the acknowledgement");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_mode_is_roles_unless_explicit() {
        assert_eq!(explicit(None), Ok(false));
        assert_eq!(explicit(Some(&json!({}))), Ok(false));
        assert_eq!(explicit(Some(&json!({"subscribe": "roles"}))), Ok(false));
        assert_eq!(explicit(Some(&json!({"subscribe": "explicit"}))), Ok(true));
        assert_eq!(
            explicit(Some(&json!({"subscribe": "everything"}))),
            Err(AuthError::BadSubscribeMode)
        );
        assert_eq!(
            explicit(Some(&json!({"subscribe": true}))),
            Err(AuthError::BadSubscribeMode)
        );
    }

    #[test]
    fn handshake_subscriptions_are_a_list_within_the_cap() {
        assert_eq!(initial(None, 2), Ok(&[][..]));
        assert_eq!(
            initial(Some(&json!({"subscriptions": null})), 2),
            Ok(&[][..])
        );
        let two = json!({"subscriptions": [{"type": "a"}, {"type": "b", "id": 1}]});
        assert_eq!(initial(Some(&two), 2).map(<[Value]>::len), Ok(2));
        assert!(matches!(
            initial(Some(&two), 1),
            Err(AuthError::BadSubscriptions(e)) if e.contains("at most 1 subscriptions")
        ));
        assert!(matches!(
            initial(Some(&json!({"subscriptions": {"type": "a"}})), 2),
            Err(AuthError::BadSubscriptions(e)) if e.contains("must be a list")
        ));
    }
}
