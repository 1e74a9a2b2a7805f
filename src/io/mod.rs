//! The Socket.IO stage: server, handshake, role rooms, emit, and the HTTP side routes.
//!
//! Receives the stream's events, in stream order, through [`Emitter::publish_all`]: each one, with
//! its [offset](crate::delivery::Offset) as a trailing argument, goes to the sockets of its
//! rooms (a custom `raw` to its rooms or socket ids or to everyone) and into the replay
//! buffer; an access change ([`Emitter::send`]) re-checks the connected sockets it can affect (and a
//! credential's expiry its socket; clients renew with `strapi-io:auth`). It serves, on one
//! [`axum::Router`]: the Socket.IO endpoint (handshake on the default namespace `/`: the
//! client's `auth.token` and `auth.strategy` are checked by [`AccessHandle::authenticate`] and
//! the socket joins the rooms of its role or token), `GET /healthz`, `GET /readyz`,
//! `GET /metrics`, and, when an admin token is configured, `POST /io/emit` and `POST /io/raw`;
//! with a [`proxy`](crate::proxy), every other request goes to Strapi. `[[events]]` handlers
//! (log, relay, webhook) run on client events, and sockets may subscribe to one content type or
//! entry (`subscriptions`), whose events then reach them with the role rooms' in one broadcast.
//!
//! A client that connects with `auth.offset` first gets, in order, what it missed (if its
//! identity may receive it now), then the live stream; one whose send queue is full stops
//! taking live events and is fed from the buffer as it drains. It never decides who may read
//! what (that is [`access`](crate::access)), never builds payloads (that is
//! [`strapi`](crate::strapi)), and never blocks the pipeline on a slow socket.

mod emit;
mod events;
mod flow;
mod handshake;
mod http_api;
mod serve;
mod server;
mod subscriptions;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use socketioxide::SocketIo;
use socketioxide::adapter::{Adapter, LocalAdapter};

use crate::access::{AccessHandle, Outgoing};
use crate::config::{EventConfig, IoConfig, IoLimits, Secret};
use crate::delivery::{DeliveryConfig, Hub, ReplayStats};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::strapi::CatalogHandle;

pub use events::signature as webhook_signature;
pub use serve::serve;
pub use server::build;

/// What the Socket.IO stage needs from the configuration.
#[derive(Debug, Clone)]
pub struct IoOptions {
    /// `[io]`: path, ping, timeouts, payload limit, transports, CORS.
    pub io: IoConfig,
    /// `[[events]]`: handlers for connection, disconnect and client events.
    pub events: Vec<EventConfig>,
    /// Bearer token of `POST /io/emit` and `POST /io/raw`; `None` turns both routes off.
    pub admin_token: Option<Secret>,
    /// The reverse proxy to Strapi, for every other request; `None`: Socket.IO answers them.
    pub proxy: Option<crate::proxy::Proxy>,
    /// Size and rate limits, webhook signing and safeguards, `/metrics` access.
    pub limits: IoLimits,
    /// `[delivery]`: the replay window.
    pub delivery: DeliveryConfig,
    /// Where `POST /io/emit` and `/io/raw` write their message (`pg_logical_emit_message`),
    /// so it comes back through the stream with an offset, in order, replayable. `None`:
    /// they emit directly (no database; tests).
    pub wal_emit: Option<WalEmit>,
}

/// The database connection and message prefix of the HTTP emit API.
#[derive(Debug, Clone)]
pub struct WalEmit {
    /// The database the bridge streams from.
    pub database: crate::config::DatabaseConfig,
    /// `[messages] prefix`, which the stream turns into custom events.
    pub prefix: String,
    /// `[messages] allow_data_actions`: whether the stream lets a message send a data action.
    pub allow_data_actions: bool,
}

/// State shared by the handshake, the handlers, the routes and the emitter.
struct Shared {
    access: AccessHandle,
    catalog: CatalogHandle,
    health: Health,
    metrics: Metrics,
    events: events::EventHandlers,
    /// Bumped before every access re-check, so a handshake that raced one re-checks itself.
    access_epoch: AtomicU64,
    /// When the next connected socket's credential expires.
    expiries: handshake::Expiries,
    /// Drops not yet reported, and when they were last reported: a client far behind would
    /// otherwise log one line per message.
    drops_unreported: AtomicU64,
    drops_reported_at: std::sync::Mutex<Option<std::time::Instant>>,
    /// Subscriptions per content type.
    subscriptions: Arc<subscriptions::Registry>,
    /// `[io] joinable_rooms`.
    joinable_rooms: Vec<String>,
    /// The replay buffer and the sockets behind the live stream.
    hub: Arc<Hub<socketioxide::socket::Sid>>,
    /// Ends the feeder task.
    stop: tokio_util::sync::CancellationToken,
    /// What each WebSocket still has to write (locked after `hub`).
    flows: std::sync::Mutex<flow::Flows>,
    /// Feeding rounds so far.
    feed_rounds: AtomicU64,
}

/// Hands messages to Socket.IO. Holds the `SocketIo` handle (never a socket), so it is cheap
/// to clone and can live in any task.
pub struct Emitter<A: Adapter = LocalAdapter> {
    io: SocketIo<A>,
    shared: Arc<Shared>,
}

impl<A: Adapter> Clone for Emitter<A> {
    fn clone(&self) -> Self {
        Emitter {
            io: self.io.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<A: Adapter> std::fmt::Debug for Emitter<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("connected", &self.connected())
            .finish()
    }
}

impl<A: Adapter> Emitter<A> {
    /// Hands one message to Socket.IO. Returns once every target socket's buffer has it (or
    /// has refused it); it never waits for a client.
    pub fn send(&self, out: Outgoing) {
        match out {
            Outgoing::Deliver(delivery) => self.deliver(&delivery),
            Outgoing::Raw(raw) => self.raw(&raw),
            Outgoing::AccessChanged(which) => self.recheck_sockets(&which),
        }
    }

    /// Closes every socket's transport (their `disconnect` handlers run) and ends pending
    /// long-poll requests, so that a graceful HTTP shutdown does not wait for clients; clients
    /// see a transport close and reconnect, to the next instance. Afterwards emits do nothing
    /// and handshakes are refused. Call it when shutting down, before or together with the
    /// server's shutdown signal.
    pub async fn close(&self) {
        self.shared.stop.cancel();
        self.io.close().await;
    }

    /// Handshakes wait (up to their connect timeout) until [`Emitter::replay_ready`]: call it
    /// before serving when the buffer is rebuilt from the slot at start.
    pub fn replay_rebuilding(&self) {
        self.shared.hub.set_rebuilding();
    }

    /// The replay buffer holds what the slot had: handshakes go ahead.
    pub fn replay_ready(&self) {
        self.shared.hub.set_ready();
    }

    /// Streaming (re)starts at `start` (the slot's confirmed position).
    pub fn streaming_from(&self, start: crate::lsn::Lsn) {
        self.shared.hub.lock().buffer.streaming_from(start);
    }

    /// Trims the replay buffer to its window and returns the position that may be confirmed
    /// to PostgreSQL while it holds events (`None`: it holds nothing).
    pub fn replay_keep_from(&self) -> Option<crate::lsn::Lsn> {
        let mut replay = self.shared.hub.lock();
        replay.buffer.trim(crate::delivery::now_micros());
        replay.buffer.keep_from()
    }

    /// Counts of the replay buffer, for logs and tests: (events held, bytes held, stats).
    pub fn replay_stats(&self) -> (usize, usize, ReplayStats) {
        let replay = self.shared.hub.lock();
        (replay.buffer.len(), replay.buffer.bytes(), replay.stats)
    }

    /// Sockets connected to the default namespace on this node.
    pub fn connected(&self) -> usize {
        self.io.of("/").map_or(0, |op| op.sockets().len())
    }
}
