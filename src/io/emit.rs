//! Emit: deliveries and raw messages to rooms, and access re-checks of connected sockets.

use socketioxide::adapter::Adapter;
use socketioxide::{BroadcastError, SocketError};
use tracing::{debug, error, warn};

use super::{Emitter, Shared, handshake, subscriptions};
use crate::access::Delivery;
use crate::strapi::RawEmit;

impl<A: Adapter> Emitter<A> {
    /// One emit to every room of the delivery; a socket in several of them gets it once.
    /// No room: nothing is sent (an empty room list must never widen to "everyone").
    pub(super) async fn deliver(&self, delivery: &Delivery) {
        let mut rooms = delivery.rooms.to_vec();
        subscriptions::add_rooms(&self.shared, delivery.subject.as_ref(), &mut rooms);
        if rooms.is_empty() {
            return;
        }
        let (content_type, action) = delivery
            .event
            .split_once(':')
            .unwrap_or((delivery.event.as_str(), ""));
        self.shared.metrics.event_emitted(content_type, action);
        let Some(op) = self.io.of("/") else {
            return;
        };
        let res = op.to(rooms).emit(&delivery.event, &delivery.payload).await;
        self.shared.account(&delivery.event, res);
    }

    /// A custom `raw`: to the rooms (room names or socket ids) or, with none given, to every
    /// socket.
    pub(super) async fn raw(&self, raw: &RawEmit) {
        let Some(op) = self.io.of("/") else {
            return;
        };
        let op = match &raw.rooms {
            None => op,
            Some(rooms) if rooms.is_empty() => return,
            Some(rooms) => op.to(rooms.clone()),
        };
        self.shared.metrics.raw_emitted();
        let res = op.emit(&raw.event, &raw.data).await;
        self.shared.account(&raw.event, res);
    }

    /// Sockets the message would reach: for the HTTP API's answer.
    pub(super) fn count_targets(&self, rooms: Option<&[String]>) -> usize {
        let Some(op) = self.io.of("/") else {
            return 0;
        };
        match rooms {
            None => op.sockets().len(),
            Some([]) => 0,
            Some(rooms) => op.to(rooms.to_vec()).sockets().len(),
        }
    }

    /// Roles, users or tokens changed: every connected socket is checked again.
    pub(super) fn access_changed(&self) {
        self.shared
            .access_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let Some(op) = self.io.of("/") else {
            return;
        };
        for socket in op.sockets() {
            handshake::recheck(&self.shared, socket);
        }
    }
}

/// How often dropped messages are reported in the log at most.
const DROP_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Shared {
    /// Logs dropped messages at most every [`DROP_REPORT_EVERY`], with the count since the last
    /// report.
    fn report_drops(&self, event: &str, dropped: u64) {
        use std::sync::atomic::Ordering;
        let pending = self.drops_unreported.fetch_add(dropped, Ordering::Relaxed) + dropped;
        let now = std::time::Instant::now();
        let mut last = match self.drops_reported_at.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if last.is_some_and(|at| now.duration_since(at) < DROP_REPORT_EVERY) {
            return;
        }
        *last = Some(now);
        self.drops_unreported.store(0, Ordering::Relaxed);
        warn!(
            event,
            dropped = pending,
            "sockets fell more than io.max_buffered_events behind; messages were dropped for \
             them (strapi_io_events_dropped_total counts them all)"
        );
    }

    /// Logs and counts what a broadcast could not do. A full buffer means the socket reads
    /// slower than events arrive: that socket misses this message, the others do not.
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
                    self.report_drops(event, full as u64);
                }
                if closed > 0 {
                    debug!(event, sockets = closed, "sockets closed during emit");
                }
            }
            Err(e) => error!(event, error = %e, "emit failed"),
        }
    }
}
