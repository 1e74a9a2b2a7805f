//! Flow control per socket: how much of what was queued for a WebSocket is still waiting.
//!
//! socketioxide queues each socket's messages in a channel of `io.max_buffered_events` slots
//! and closes the socket when its heartbeat ping finds that channel full. It does not say how
//! full the channel is, so the bridge counts itself: the bytes of each frame it queued, against
//! the bytes written to the connection ([`WireBytes`]). A socket whose unwritten frames reach
//! the slot limit (less a reserve for pings and acknowledgements) or [`SOCKET_QUEUE_BYTES`] is
//! treated as full before the channel is: it falls behind and is fed from the replay buffer as
//! it drains. Memory per slow socket is then bounded in bytes, the WebSocket write buffer (which
//! keeps its largest size) stays below that bound, and the ping always finds a free slot.
//! Polling sockets are not counted (their responses go out on whichever request comes): for
//! them a full channel is the signal.

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
use crate::delivery::Entry;

/// Bytes queued for one socket and not yet written, at most (plus one event).
pub const SOCKET_QUEUE_BYTES: u64 = 1 << 20;

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
    let Some(query) = uri.query() else {
        return;
    };
    let mut sid = None;
    let mut websocket = false;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sid", v)) => sid = Some(v),
            Some(("transport", "websocket")) => websocket = true,
            _ => {}
        }
    }
    if let (Some(sid), true) = (sid, websocket) {
        let mut map = upgrades().lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_UPGRADES {
            map.clear();
        }
        map.insert(sid.to_owned(), wire.clone());
    }
}

/// One WebSocket's count: bytes queued and where each frame ends.
#[derive(Debug)]
pub(super) struct Flow {
    wire: WireBytes,
    /// Bytes written to the connection before the first counted frame.
    base: u64,
    queued: u64,
    ends: VecDeque<u64>,
}

impl Flow {
    fn new(wire: WireBytes) -> Flow {
        let base = wire.0.load(Ordering::Relaxed);
        Flow {
            wire,
            base,
            queued: 0,
            ends: VecDeque::new(),
        }
    }

    /// Whether one more frame fits: fewer than `slots` frames and [`SOCKET_QUEUE_BYTES`]
    /// unwritten.
    fn has_room(&mut self, slots: usize) -> bool {
        let written = self
            .wire
            .0
            .load(Ordering::Relaxed)
            .saturating_sub(self.base);
        while self.ends.front().is_some_and(|end| *end <= written) {
            self.ends.pop_front();
        }
        let waiting = self.queued.saturating_sub(written);
        self.ends.len() < slots && waiting < SOCKET_QUEUE_BYTES
    }

    fn queued(&mut self, bytes: u64) {
        self.queued += bytes;
        self.ends.push_back(self.queued);
    }
}

/// The counts of every WebSocket that got an event.
#[derive(Debug, Default)]
pub(super) struct Flows {
    by_socket: HashMap<Sid, Flow>,
    slots: usize,
}

impl Flows {
    /// Counts for a channel of `max_buffered_events` slots.
    pub(super) fn new(max_buffered_events: usize) -> Flows {
        Flows {
            by_socket: HashMap::new(),
            slots: max_buffered_events.saturating_sub(RESERVED_SLOTS).max(1),
        }
    }

    /// Whether `entry` may be queued for `socket` now (always, for sockets not counted).
    pub(super) fn has_room<A: Adapter>(&mut self, socket: &SocketRef<A>) -> bool {
        let slots = self.slots;
        self.flow(socket).is_none_or(|f| f.has_room(slots))
    }

    /// `entry` was queued for `socket`.
    pub(super) fn sent<A: Adapter>(&mut self, socket: &SocketRef<A>, entry: &Entry) {
        if let Some(f) = self.flow(socket) {
            f.queued(frame_bytes(entry));
        }
    }

    /// Forgets sockets that are gone.
    pub(super) fn retain(&mut self, alive: impl Fn(Sid) -> bool) {
        self.by_socket.retain(|sid, _| alive(*sid));
    }

    fn flow<A: Adapter>(&mut self, socket: &SocketRef<A>) -> Option<&mut Flow> {
        match self.by_socket.entry(socket.id) {
            MapEntry::Occupied(e) => Some(e.into_mut()),
            MapEntry::Vacant(e) => {
                if socket.transport_type() != TransportType::Websocket {
                    return None;
                }
                let upgraded = upgrades()
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&socket.id.to_string());
                let wire = upgraded
                    .or_else(|| socket.req_parts().extensions.get::<WireBytes>().cloned())?;
                Some(e.insert(Flow::new(wire)))
            }
        }
    }
}

/// The bytes one entry takes on the wire: `42["event",payload,"offset"]`, engine.io's `4`,
/// and the WebSocket frame header.
fn frame_bytes(entry: &Entry) -> u64 {
    let text = entry.event.len() + entry.payload.as_str().len() + entry.offset_text.len() + 10;
    let header = match text {
        0..126 => 2,
        126..65_536 => 4,
        _ => 10,
    };
    (text + header) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_flow_fills_by_frames_and_bytes_and_drains_with_writes() {
        let wire = WireBytes(Arc::new(AtomicU64::new(500)));
        let mut f = Flow::new(wire.clone());
        for _ in 0..3 {
            assert!(f.has_room(3));
            f.queued(100);
        }
        assert!(!f.has_room(3), "three frames in flight fill three slots");
        wire.0.fetch_add(150, Ordering::Relaxed);
        assert!(f.has_room(3), "the first frame was written");
        f.queued(SOCKET_QUEUE_BYTES);
        assert!(!f.has_room(100), "the byte limit");
        wire.0
            .fetch_add(SOCKET_QUEUE_BYTES + 150, Ordering::Relaxed);
        assert!(f.has_room(100));
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
