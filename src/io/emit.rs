//! Emit: every stream event to the sockets of its rooms with its offset, catch-up and slow
//! sockets fed from the replay buffer, and access re-checks of connected sockets.
//!
//! Each event is offered to each target socket on its own (not as one broadcast), so that a
//! socket whose queue is full is known by its id: it stops taking live events and is fed from
//! the [replay buffer](crate::delivery) as it drains, in order, instead of silently missing
//! the event. Live emits and feeding take the delivery lock in turn, so a socket moving from
//! one to the other sees no gap and no duplicate. The events of a transaction are offered to
//! each socket one after the other, so its writer sends them in one write.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::{BroadcastError, SendError, SocketError};
use tracing::{debug, error, info, warn};

use super::flow::Flows;
use super::{Emitter, Shared, handshake, subscriptions};
use crate::access::{Delivery, RoomName, Subject};
use crate::delivery::{Behind, Entry, Fed, Offset, RESYNC_EVENT, Replay, Sent, Target, now_micros};
use crate::strapi::RawEmit;

/// How often sockets behind the live stream are offered more of the buffer.
const FEED_EVERY: Duration = Duration::from_millis(20);

/// Entries offered to one socket per feeding round, so the lock is never held long.
const FEED_STEP: usize = 512;

/// Entry-socket pairs one run of [`Emitter::publish_all`] offers while it holds the lock.
const OFFERS_PER_LOCK: usize = 65_536;

/// A socket whose handshake started but never completed is forgotten after this long.
const NEVER_STARTED: Duration = Duration::from_secs(120);

impl<A: Adapter> Emitter<A> {
    /// Emits stream events in order: each is kept in the replay buffer and queued for every
    /// socket of its target that takes live events, with its offset as the last argument; a
    /// socket whose queue is full falls behind (it is fed from the buffer later) instead of
    /// missing it. Consecutive events for the same rooms (a transaction's) are queued for each
    /// socket one after the other, so they reach its writer together and leave in one write.
    pub fn publish_all(&self, entries: Vec<Entry>) {
        for entry in &entries {
            if entry.rule.is_some() {
                self.count_event(&entry.event);
            } else {
                self.shared.metrics.raw_emitted();
            }
        }
        self.emit_entries(entries.into_iter().map(Arc::new).collect());
    }

    fn count_event(&self, event: &str) {
        let (content_type, action) = event.split_once(':').unwrap_or((event, ""));
        self.shared.metrics.event_emitted(content_type, action);
    }

    /// Emits `entries` in runs of the same target: each run is kept in the buffer, then every
    /// target socket taking live events gets the run's entries one after the other. A run
    /// offers at most [`OFFERS_PER_LOCK`] entry-socket pairs under the lock (at least one
    /// entry), so a transaction to many sockets does not hold up feeding and handshakes.
    fn emit_entries(&self, entries: Vec<Arc<Entry>>) {
        let mut rest = entries.as_slice();
        while let Some(first) = rest.first() {
            let same = rest.iter().take_while(|e| same_target(e, first)).count();
            let mut replay = self.shared.hub.lock();
            let sockets = self.targets(first);
            let fits = (OFFERS_PER_LOCK / sockets.len().max(1)).clamp(1, same);
            let (run, after) = rest.split_at(fits);
            rest = after;
            // Where a socket resumes if an entry of the run does not fit: the entry before.
            let mut before = Vec::with_capacity(run.len());
            for entry in run {
                before.push(
                    replay
                        .buffer
                        .newest()
                        .unwrap_or_else(|| replay.buffer.floor()),
                );
                replay.buffer.push(entry.clone(), now_micros());
            }
            let mut flows = self.shared.lock_flows();
            let mut fell_behind = 0u64;
            for socket in sockets {
                if replay.behind.contains_key(&socket.id) {
                    continue;
                }
                if let Some(i) = flows.offer_run(&socket, run, |e| send(&socket, e)) {
                    fell_behind += 1;
                    replay.behind.insert(
                        socket.id,
                        Behind::new(before[i], before[i].to_string(), true),
                    );
                }
            }
            drop(flows);
            if fell_behind > 0 {
                replay.stats.fell_behind += fell_behind;
                self.shared.report_behind(&first.event, fell_behind);
            }
        }
    }

    /// The sockets an entry goes to.
    fn targets(&self, entry: &Entry) -> Vec<SocketRef<A>> {
        let Some(op) = self.io.of("/") else {
            return Vec::new();
        };
        match &entry.target {
            Target::Rooms(rooms) if rooms.is_empty() => Vec::new(),
            // Only a custom `raw` may name socket ids; a data event goes to rooms.
            Target::Rooms(rooms) if entry.rule.is_some() => op.to(rooms.to_vec()).sockets(),
            Target::Rooms(rooms) => self.in_rooms(rooms),
            // Everyone, but not sockets whose access was just taken away.
            Target::Everyone => op.except(handshake::REVOKED_ROOM).sockets(),
        }
    }

    /// `rooms`, and the subscription rooms of `subject` when some socket subscribed to its
    /// type: where an event goes. A socket in several of them gets it once.
    pub fn target_rooms(
        &self,
        rooms: Arc<[RoomName]>,
        subject: Option<&Subject>,
    ) -> Arc<[RoomName]> {
        let mut extra = Vec::new();
        subscriptions::add_rooms(&self.shared, subject, &mut extra);
        if extra.is_empty() {
            return rooms;
        }
        rooms.iter().cloned().chain(extra).collect()
    }

    /// A delivery from outside the stream (it has no WAL position): it gets the offset after
    /// the newest one held. The pipeline uses [`Emitter::publish_all`] with the event's own offset.
    pub(super) fn deliver(&self, delivery: &Delivery) {
        let rooms = self.target_rooms(delivery.rooms.clone(), delivery.subject.as_ref());
        if rooms.is_empty() {
            return;
        }
        self.count_event(&delivery.event);
        let offset = self.next_local_offset();
        self.emit_entries(vec![Arc::new(Entry {
            offset,
            offset_text: offset.to_string(),
            event: delivery.event.clone(),
            payload: delivery.payload.clone(),
            target: Target::Rooms(rooms),
            rule: None,
            entry_id: None,
            keep_from: crate::lsn::Lsn::ZERO,
            at_micros: now_micros(),
        })]);
    }

    /// A custom `raw` from outside the stream; see [`Emitter::deliver`].
    pub(super) fn raw(&self, raw: &RawEmit) {
        if raw.rooms.as_ref().is_some_and(Vec::is_empty) {
            return;
        }
        self.shared.metrics.raw_emitted();
        let offset = self.next_local_offset();
        self.emit_entries(vec![Arc::new(Entry {
            offset,
            offset_text: offset.to_string(),
            event: raw.event.clone(),
            payload: raw.data.clone(),
            target: raw
                .rooms
                .as_ref()
                .map_or(Target::Everyone, |r| Target::Rooms(Arc::from(r.as_slice()))),
            rule: None,
            entry_id: None,
            keep_from: crate::lsn::Lsn::ZERO,
            at_micros: now_micros(),
        })]);
    }

    fn next_local_offset(&self) -> Offset {
        let replay = self.shared.hub.lock();
        let last = replay
            .buffer
            .newest()
            .unwrap_or_else(|| replay.buffer.floor());
        Offset::new(last.lsn, last.seq.saturating_add(1))
    }

    /// Sockets the message would reach: for the HTTP API's answer.
    pub(super) fn count_targets(&self, rooms: Option<&[String]>) -> usize {
        let Some(op) = self.io.of("/") else {
            return 0;
        };
        match rooms {
            None => op.sockets().len(),
            Some([]) => 0,
            Some(rooms) => self.in_rooms(rooms).len(),
        }
    }

    /// The sockets in `rooms`, where a room may also be a socket id (for `raw`): sockets have
    /// no room of their own, which would cost every socket a room entry for a rare use.
    /// A socket whose access was taken away is not found by its id.
    fn in_rooms(&self, rooms: &[RoomName]) -> Vec<SocketRef<A>> {
        let Some(op) = self.io.of("/") else {
            return Vec::new();
        };
        let mut sockets = op.to(rooms.to_vec()).sockets();
        for room in rooms {
            let Ok(sid) = room.parse::<Sid>() else {
                continue;
            };
            let Some(socket) = self.io.get_socket(sid) else {
                continue;
            };
            let revoked = socket
                .extensions
                .get::<handshake::Session>()
                .is_none_or(|s| s.revoked);
            if !revoked && !sockets.iter().any(|s| s.id == sid) {
                sockets.push(socket);
            }
        }
        sockets
    }

    /// One feeding round: every socket behind the live stream gets the next part of the
    /// buffer. Whether any socket moved on (then another round may move it further at once).
    pub(super) fn feed_behind(&self) -> bool {
        let mut replay = self.shared.hub.lock();
        let mut flows = self.shared.lock_flows();
        if self.shared.gc_due() {
            flows.retain(|sid| self.io.get_socket(sid).is_some());
        }
        if replay.behind.is_empty() {
            return false;
        }
        let mut moved = false;
        let sids: Vec<Sid> = replay.behind.keys().copied().collect();
        for sid in sids {
            let Some(behind) = replay.behind.remove(&sid) else {
                continue;
            };
            if !behind.started {
                if behind.since.elapsed() < NEVER_STARTED {
                    replay.behind.insert(sid, behind);
                }
                continue;
            }
            let Some(socket) = self.io.get_socket(sid) else {
                continue;
            };
            moved |= feed_socket(&self.shared, &mut replay, &mut flows, &socket, behind);
        }
        moved
    }

    /// Starts the task that feeds sockets behind the live stream; it ends with
    /// [`Emitter::close`].
    pub(super) fn spawn_feeder(&self) {
        let emitter = self.clone();
        let stop = self.shared.stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FEED_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // While sockets drain as fast as they are fed, feed them again at once (after
                // letting their writers run); once every one waits for its connection, on the
                // next tick.
                if emitter.feed_behind() {
                    tokio::task::yield_now().await;
                    if stop.is_cancelled() {
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
            }
        });
    }
}

/// The handshake asked for a catch-up and CONNECT is sent: feed the socket now.
pub(super) fn start_catch_up<A: Adapter>(shared: &Shared, socket: &SocketRef<A>) {
    let mut replay = shared.hub.lock();
    let Some(mut behind) = replay.behind.remove(&socket.id) else {
        return;
    };
    behind.started = true;
    let mut flows = shared.lock_flows();
    feed_socket(shared, &mut replay, &mut flows, socket, behind);
}

/// Feeds one socket (taken out of `replay.behind`) and puts it back if it is still behind.
/// Whether it moved on in the buffer.
fn feed_socket<A: Adapter>(
    shared: &Shared,
    replay: &mut Replay<Sid>,
    flows: &mut Flows,
    socket: &SocketRef<A>,
    mut behind: Behind,
) -> bool {
    let was_at = behind.after;
    let mut reader = Reader::of(socket);
    let fed = replay.feed(&mut behind, FEED_STEP, |entry| {
        if !reader.may_receive(shared, socket, entry) {
            return Sent::NotForIt;
        }
        flows.offer(socket, entry, || send(socket, entry))
    });
    let moved = behind.after != was_at;
    match fed {
        Fed::CaughtUp => {
            debug!(socket = %socket.id, at = %behind.after, "socket caught up; live again");
        }
        Fed::StillBehind => {
            replay.behind.insert(socket.id, behind);
        }
        Fed::Gone => {}
        Fed::TooOld { asked, oldest } => {
            let data = json!({ "offset": asked, "oldest": oldest.map(|o| o.to_string()) });
            match socket.emit(RESYNC_EVENT, &data) {
                Ok(()) => {
                    replay.stats.resyncs += 1;
                    info!(socket = %socket.id, asked = %asked, "events the socket missed are no longer held; sent strapi-io:resync");
                    // Live from the newest event on.
                    if let Some(newest) = replay.buffer.newest() {
                        behind.after = newest;
                    }
                }
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                    // Try again next round; the socket stays off the live stream meanwhile.
                    replay.behind.insert(socket.id, behind);
                }
                Err(_) => {}
            }
        }
    }
    moved
}

/// Whether two entries go to the same sockets (then they are offered together).
fn same_target(a: &Entry, b: &Entry) -> bool {
    a.rule.is_some() == b.rule.is_some()
        && match (&a.target, &b.target) {
            (Target::Everyone, Target::Everyone) => true,
            (Target::Rooms(x), Target::Rooms(y)) => Arc::ptr_eq(x, y) || x == y,
            _ => false,
        }
}

/// Queues one entry for one socket, with its offset as the last argument.
fn send<A: Adapter>(socket: &SocketRef<A>, entry: &Entry) -> Sent {
    match socket.emit(&entry.event, &(&entry.payload, entry.offset_text.as_str())) {
        Ok(()) => Sent::Queued,
        Err(SendError::Socket(SocketError::InternalChannelFull)) => Sent::Full,
        Err(SendError::Socket(SocketError::Closed)) => Sent::Gone,
        Err(e) => {
            error!(event = %entry.event, error = %e, "cannot encode an event");
            Sent::NotForIt
        }
    }
}

/// What decides whether one socket may receive buffered entries, looked up once per feeding.
struct Reader {
    /// `None` when it may receive nothing (no session, or access was taken away).
    session: Option<handshake::Session>,
    /// Its role rooms, unless it is in explicit subscription mode (then in none).
    joins_role_rooms: bool,
    id: String,
    /// The role rooms that may read the last content type and action asked about (a run of
    /// entries mostly shares one).
    last_rule: Option<(String, crate::strapi::Action, Arc<[RoomName]>)>,
}

impl Reader {
    fn of<A: Adapter>(socket: &SocketRef<A>) -> Reader {
        Reader {
            session: socket
                .extensions
                .get::<handshake::Session>()
                .filter(|s| !s.revoked),
            joins_role_rooms: subscriptions::joins_role_rooms(socket),
            id: socket.id.to_string(),
            last_rule: None,
        }
    }

    /// Whether the socket may receive a buffered entry now: it was for one of the socket's
    /// rooms (or its id, or everyone), and for content-type events its role may still read it.
    fn may_receive<A: Adapter>(
        &mut self,
        shared: &Shared,
        socket: &SocketRef<A>,
        entry: &Entry,
    ) -> bool {
        // Access was taken away: nothing more, whatever the entry.
        let Some(session) = &self.session else {
            return false;
        };
        let rooms = match &entry.target {
            Target::Everyone => return true,
            Target::Rooms(rooms) => rooms,
        };
        let mine: &[RoomName] = if self.joins_role_rooms {
            &session.principal.rooms
        } else {
            &[]
        };
        if subscriptions::joined_any(shared, socket, rooms)
            || subscriptions::subscribed_to(socket, entry)
        {
            return true;
        }
        match &entry.rule {
            None => rooms.iter().any(|r| *r == self.id || mine.contains(r)),
            Some((uid, action)) => {
                let now = match &self.last_rule {
                    Some((u, a, now)) if u == uid && a == action => now.clone(),
                    _ => {
                        let now = shared.access.rooms_for(uid, action);
                        self.last_rule = Some((uid.clone(), action.clone(), now.clone()));
                        now
                    }
                };
                rooms
                    .iter()
                    .any(|r| mine.contains(r) && now.iter().any(|n| n == r))
            }
        }
    }
}

/// How often sockets falling behind are reported in the log at most.
const BEHIND_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Feeding rounds between two sweeps of the flow counts of sockets that are gone.
const GC_EVERY_ROUNDS: u64 = 250;

impl Shared {
    fn lock_flows(&self) -> std::sync::MutexGuard<'_, Flows> {
        self.flows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this feeding round sweeps the flow counts.
    fn gc_due(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.feed_rounds
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(GC_EVERY_ROUNDS)
    }

    /// Logs sockets that fell behind at most every [`BEHIND_REPORT_EVERY`], with the count
    /// since the last report.
    fn report_behind(&self, event: &str, sockets: u64) {
        use std::sync::atomic::Ordering;
        let pending = self.drops_unreported.fetch_add(sockets, Ordering::Relaxed) + sockets;
        let now = std::time::Instant::now();
        let mut last = match self.drops_reported_at.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if last.is_some_and(|at| now.duration_since(at) < BEHIND_REPORT_EVERY) {
            return;
        }
        *last = Some(now);
        self.drops_unreported.store(0, Ordering::Relaxed);
        info!(
            event,
            sockets = pending,
            "sockets fell more than io.max_buffered_events behind; they are fed from the \
             replay buffer as they drain"
        );
    }

    /// Logs and counts what a broadcast of a non-replayable message (a relay) could not do.
    /// A full buffer means the socket reads slower than events arrive: it misses this
    /// message (relays are not kept for replay), the others do not.
    pub(super) fn account(&self, event: &str, res: Result<(), BroadcastError>) {
        match res {
            Ok(()) => {}
            Err(BroadcastError::Socket(errors)) => {
                let full = errors
                    .iter()
                    .filter(|e| matches!(e, SocketError::InternalChannelFull))
                    .count();
                let closed = errors.len() - full;
                if full > 0 {
                    self.metrics.events_dropped(full as u64);
                    warn!(
                        event,
                        sockets = full,
                        "a relayed message was dropped for sockets with a full queue"
                    );
                }
                if closed > 0 {
                    debug!(event, sockets = closed, "sockets closed during emit");
                }
            }
            Err(e) => error!(event, error = %e, "emit failed"),
        }
    }
}

/// The handshake: a client that sent `auth.offset` (the last offset it received) takes no
/// live events until it has what it missed; it is fed once its CONNECT is sent
/// ([`start_catch_up`]). An offset this bridge cannot read counts as too old.
pub(super) fn catch_up_from<A: Adapter>(
    shared: &Shared,
    socket: &SocketRef<A>,
    auth: Option<&serde_json::Value>,
) {
    let Some(asked) = auth
        .and_then(|a| a.get("offset"))
        .and_then(serde_json::Value::as_str)
    else {
        return;
    };
    let mut behind = match asked.parse::<Offset>() {
        Ok(after) => Behind::new(after, asked.to_owned(), false),
        Err(e) => {
            debug!(socket = %socket.id, error = %e, "auth.offset unreadable; the client will resync");
            let mut b = Behind::new(Offset::default(), asked.to_owned(), false);
            b.unreadable = true;
            b
        }
    };
    behind.started = false;
    shared.hub.lock().behind.insert(socket.id, behind);
}
