//! Flow control per socket: how much of what was queued for a WebSocket is still waiting.
//!
//! socketioxide queues each socket's messages in a channel of `io.max_buffered_events` slots
//! and closes the socket when its heartbeat ping finds that channel full. It does not say how
//! full the channel is, so the bridge counts itself: the bytes of each frame it queued, against
//! the bytes written to the connection ([`WireBytes`]). A socket whose unwritten frames reach
//! the slot limit (less a reserve for pings and acknowledgements) or `io.max_buffered_bytes` is
//! treated as full before the channel is: it falls behind and is fed from the replay buffer as
//! it drains. Memory per slow socket is then bounded in bytes, the WebSocket write buffer (which
//! keeps its largest size) stays below that bound, and the ping always finds a free slot.
//! A polling socket's frames leave in the bodies of the client's `GET`s, on whichever
//! connection each comes: for it the bridge counts the bytes of those bodies, by session id
//! ([`count_polling`]).

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock, PoisonError};

use axum::http::Uri;
use socketioxide::TransportType;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;

use super::serve::WireBytes;
use crate::delivery::{Entry, Sent};

/// Channel slots kept free for what the bridge does not count: pings, acknowledgements,
/// relays.
const RESERVED_SLOTS: usize = 16;

/// Connections of WebSockets that upgraded a polling session, by session id, until the
/// socket's first event.
fn upgrades() -> &'static Mutex<HashMap<String, WireBytes>> {
    static UPGRADES: OnceLock<Mutex<HashMap<String, WireBytes>>> = OnceLock::new();
    UPGRADES.get_or_init(Mutex::default)
}

/// At most this many upgrades wait for their first event (a socket that never gets one leaves
/// its entry behind; past this the oldest are forgotten all at once).
const MAX_UPGRADES: usize = 65_536;

/// A request on a connection: if it upgrades a polling session to WebSocket, remember which
/// connection the session now writes to.
pub(super) fn note_upgrade(uri: &Uri, wire: &WireBytes) {
    if let Some(sid) = session_on(uri, "websocket") {
        let mut map = upgrades().lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_UPGRADES {
            map.clear();
        }
        map.insert(sid.to_owned(), wire.clone());
    }
}

/// Bytes of polling responses, by session id, for sockets whose flow is counted.
fn polling() -> &'static Mutex<HashMap<Sid, WireBytes>> {
    static POLLING: OnceLock<Mutex<HashMap<Sid, WireBytes>>> = OnceLock::new();
    POLLING.get_or_init(Mutex::default)
}

/// The session a request polls for: a `GET` with `transport=polling` and a `sid`.
fn polling_sid(method: &axum::http::Method, uri: &Uri) -> Option<Sid> {
    if method != axum::http::Method::GET {
        return None;
    }
    session_on(uri, "polling")?.parse().ok()
}

/// The engine.io session id (`sid`) of a request on `transport`, from its query.
fn session_on<'a>(uri: &'a Uri, transport: &str) -> Option<&'a str> {
    let mut sid = None;
    let mut on_transport = false;
    for pair in uri.query()?.split('&') {
        match pair.split_once('=') {
            Some(("sid", v)) => sid = Some(v),
            Some(("transport", t)) => on_transport = t == transport,
            _ => {}
        }
    }
    sid.filter(|_| on_transport)
}

/// Middleware on Socket.IO's routes: the body of a polling `GET` (the socket's frames) counts
/// toward its session's written bytes as it is sent.
pub(super) async fn count_polling(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let counter = polling_sid(req.method(), req.uri()).and_then(|sid| {
        polling()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&sid)
            .cloned()
    });
    let res = next.run(req).await;
    match counter {
        Some(wire) => res.map(|body| axum::body::Body::new(Counted { body, wire })),
        None => res,
    }
}

/// A response body that adds the bytes it yields to a counter.
struct Counted {
    body: axum::body::Body,
    wire: WireBytes,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.wire.0.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// One socket's count: bytes queued and where each frame ends.
#[derive(Debug)]
pub(super) struct Flow {
    transport: TransportType,
    wire: WireBytes,
    /// Bytes written to the connection before the first counted frame.
    base: u64,
    queued: u64,
    ends: VecDeque<u64>,
}

impl Flow {
    fn new(transport: TransportType, wire: WireBytes) -> Flow {
        let base = wire.0.load(Ordering::Relaxed);
        Flow {
            transport,
            wire,
            base,
            queued: 0,
            ends: VecDeque::new(),
        }
    }

    /// Whether one more frame fits: fewer than `slots` frames and fewer than `bytes`
    /// unwritten.
    fn has_room(&mut self, slots: usize, bytes: u64) -> bool {
        let written = self
            .wire
            .0
            .load(Ordering::Relaxed)
            .saturating_sub(self.base);
        while self.ends.front().is_some_and(|end| *end <= written) {
            self.ends.pop_front();
        }
        let waiting = self.queued.saturating_sub(written);
        self.ends.len() < slots && waiting < bytes
    }

    fn queued(&mut self, bytes: u64) {
        self.queued += bytes;
        self.ends.push_back(self.queued);
    }
}

/// The counts of every WebSocket that got an event.
#[derive(Debug, Default)]
pub(super) struct Flows {
    /// By socket id, hashed fast: looked up for every event to every socket.
    by_socket: HashMap<Sid, Flow, foldhash::fast::RandomState>,
    slots: usize,
    bytes: u64,
}

impl Flows {
    /// Counts for a channel of `max_buffered_events` slots, holding at most
    /// `max_buffered_bytes` unwritten.
    pub(super) fn new(max_buffered_events: usize, max_buffered_bytes: u64) -> Flows {
        Flows {
            by_socket: HashMap::default(),
            slots: max_buffered_events.saturating_sub(RESERVED_SLOTS).max(1),
            bytes: max_buffered_bytes,
        }
    }

    /// Queues `entry` for `socket` through `send` if it fits now (always, for sockets not
    /// counted), and counts it if it was queued; [`Sent::Full`] if it does not fit.
    pub(super) fn offer<A: Adapter>(
        &mut self,
        socket: &SocketRef<A>,
        entry: &Entry,
        send: impl FnOnce() -> Sent,
    ) -> Sent {
        let (slots, bytes) = (self.slots, self.bytes);
        offer_to(self.flow(socket), slots, bytes, entry, send)
    }

    /// Queues `entries` for `socket` in order through `send`, as [`Flows::offer`] does one,
    /// looking the socket up once. The index of the first that did not fit, if one did not
    /// (the rest are not offered); `None` when all were queued or the socket is gone.
    pub(super) fn offer_run<A: Adapter>(
        &mut self,
        socket: &SocketRef<A>,
        entries: &[std::sync::Arc<Entry>],
        mut send: impl FnMut(&Entry) -> Sent,
    ) -> Option<usize> {
        let (slots, bytes) = (self.slots, self.bytes);
        let mut flow = self.flow(socket);
        for (i, entry) in entries.iter().enumerate() {
            match offer_to(flow.as_deref_mut(), slots, bytes, entry, || send(entry)) {
                Sent::Queued | Sent::NotForIt => {}
                Sent::Full => return Some(i),
                Sent::Gone => return None,
            }
        }
        None
    }

    /// Forgets sockets that are gone.
    pub(super) fn retain(&mut self, alive: impl Fn(Sid) -> bool) {
        self.by_socket.retain(|sid, _| alive(*sid));
        polling()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|sid, _| alive(*sid));
    }

    fn flow<A: Adapter>(&mut self, socket: &SocketRef<A>) -> Option<&mut Flow> {
        let transport = socket.transport_type();
        match self.by_socket.entry(socket.id) {
            // A socket that upgraded from polling is counted on its WebSocket from then on.
            MapEntry::Occupied(e) if e.get().transport == transport => Some(e.into_mut()),
            MapEntry::Occupied(mut e) => {
                let wire = wire_of(socket, transport)?;
                e.insert(Flow::new(transport, wire));
                Some(e.into_mut())
            }
            MapEntry::Vacant(e) => {
                let wire = wire_of(socket, transport)?;
                Some(e.insert(Flow::new(transport, wire)))
            }
        }
    }
}

/// One entry through `send` if `flow` (none: not counted) has room, counted if it was queued.
fn offer_to(
    flow: Option<&mut Flow>,
    slots: usize,
    bytes: u64,
    entry: &Entry,
    send: impl FnOnce() -> Sent,
) -> Sent {
    let Some(flow) = flow else {
        return send();
    };
    if !flow.has_room(slots, bytes) {
        return Sent::Full;
    }
    let sent = send();
    if sent == Sent::Queued {
        flow.queued(frame_bytes(entry, flow.transport));
    }
    sent
}

/// Where the bytes written for `socket` are counted: its WebSocket's connection, or for a
/// polling socket a counter its `GET`s add to from now on.
fn wire_of<A: Adapter>(socket: &SocketRef<A>, transport: TransportType) -> Option<WireBytes> {
    match transport {
        TransportType::Websocket => {
            let upgraded = upgrades()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&socket.id.to_string());
            upgraded.or_else(|| socket.req_parts().extensions.get::<WireBytes>().cloned())
        }
        TransportType::Polling => {
            let mut map = polling().lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() >= MAX_UPGRADES && !map.contains_key(&socket.id) {
                // Swept with the flows; until then this socket is not counted.
                return None;
            }
            Some(map.entry(socket.id).or_default().clone())
        }
    }
}

/// The bytes one entry takes on the wire: `42["event",payload,"offset"]` (engine.io's `4`
/// included), and the WebSocket frame header or, in a polling response, the separator before
/// the next packet. Never more than it takes, so the count never runs ahead of what is written.
fn frame_bytes(entry: &Entry, transport: TransportType) -> u64 {
    let text = entry.event.len() + entry.payload.as_str().len() + entry.offset_text.len() + 10;
    let framing = match (transport, text) {
        (TransportType::Polling, _) => 0,
        (TransportType::Websocket, 0..126) => 2,
        (TransportType::Websocket, 126..65_536) => 4,
        (TransportType::Websocket, _) => 10,
    };
    (text + framing) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_flow_fills_by_frames_and_bytes_and_drains_with_writes() {
        let wire = WireBytes(Arc::new(AtomicU64::new(500)));
        let mut f = Flow::new(TransportType::Websocket, wire.clone());
        const BYTES: u64 = 64 * 1024;
        for _ in 0..3 {
            assert!(f.has_room(3, BYTES));
            f.queued(100);
        }
        assert!(
            !f.has_room(3, BYTES),
            "three frames in flight fill three slots"
        );
        wire.0.fetch_add(150, Ordering::Relaxed);
        assert!(f.has_room(3, BYTES), "the first frame was written");
        f.queued(BYTES);
        assert!(!f.has_room(100, BYTES), "the byte limit");
        wire.0.fetch_add(BYTES + 150, Ordering::Relaxed);
        assert!(f.has_room(100, BYTES));
    }

    #[test]
    fn an_upgrade_is_remembered_by_its_session_id() {
        let wire = WireBytes::default();
        let uri: Uri = "/socket.io/?EIO=4&transport=websocket&sid=abc123"
            .parse()
            .unwrap();
        note_upgrade(&uri, &wire);
        let polling: Uri = "/socket.io/?EIO=4&transport=polling&sid=def"
            .parse()
            .unwrap();
        note_upgrade(&polling, &wire);
        let map = upgrades().lock().unwrap();
        assert!(map.contains_key("abc123"));
        assert!(!map.contains_key("def"));
    }
}
