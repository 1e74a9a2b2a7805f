//! Prometheus metrics served at `/metrics`.
//!
//! Counters are bumped where the occurrence happens (the emitter, the handshake, the webhook
//! handler); gauges that describe a state (sockets per room, replication lag, the confirmed
//! position) are computed when `/metrics` is scraped, from [`Health`] and the live sockets, so
//! they are never stale. Metric family names are the constants below; Prometheus counters are
//! exposed with a `_total` suffix.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::health::Health;

/// Gauge: sockets connected to the default namespace.
pub const SOCKETS_CONNECTED: &str = "strapi_io_sockets_connected";
/// Gauge, label `room`: sockets in each role or token room.
pub const ROOM_SOCKETS: &str = "strapi_io_room_sockets";
/// Counter, labels `content_type` (singularName) and `action`: content-type events emitted
/// (once per event, however many rooms and sockets it reached). Custom action names beyond
/// the first [`MAX_CUSTOM_ACTION_LABELS`] are counted as `other`.
pub const EVENTS_EMITTED: &str = "strapi_io_events_emitted";
/// Counter, label `reason` (`rate_limited`, `webhooks_busy`): client events (and connection /
/// disconnect webhooks) dropped by a limit.
pub const CLIENT_EVENTS_DROPPED: &str = "strapi_io_client_events_dropped";
/// Distinct custom action names given their own `action` label. Custom names come from
/// whoever may emit (the database, the HTTP API); without a cap each new name would add a time
/// series for good.
pub const MAX_CUSTOM_ACTION_LABELS: usize = 32;
/// The `action` label of custom actions past the cap.
pub const OTHER_ACTION: &str = "other";
/// Counter: custom `raw` messages emitted.
pub const RAW_EMITTED: &str = "strapi_io_raw_emitted";
/// Counter: messages a socket missed because its send buffer was full (one per socket and
/// message).
pub const EVENTS_DROPPED: &str = "strapi_io_events_dropped";
/// Counter, label `reason`: handshakes refused.
pub const CONNECTIONS_REFUSED: &str = "strapi_io_connections_refused";
/// Counter, label `event`: webhook calls that failed (non-2xx, timeout, unreachable, bad JSON).
pub const WEBHOOK_FAILURES: &str = "strapi_io_webhook_failures";
/// Gauge: bytes of WAL between the server's position and the position handed on (the WAL
/// kept for the replay window is [`REPLAY_WAL_BYTES`]).
pub const REPLICATION_LAG_BYTES: &str = "strapi_io_replication_lag_bytes";
/// Gauge: seconds since the commit time of the last transaction handed on (0 before the first).
pub const REPLICATION_LAG_SECONDS: &str = "strapi_io_replication_lag_seconds";
/// Gauge: the last position confirmed to PostgreSQL, as a number.
pub const CONFIRMED_LSN: &str = "strapi_io_confirmed_lsn";
/// Gauge: the server's latest WAL position seen, as a number.
pub const SERVER_LSN: &str = "strapi_io_server_lsn";
/// Gauge: 1 when streaming with catalog and access loaded, else 0.
pub const READY: &str = "strapi_io_ready";
/// Counter: connected sockets checked again against access data (after an access change
/// that can affect them, or at their credential's expiry).
pub const SOCKET_RECHECKS: &str = "strapi_io_socket_rechecks";
/// Counter: writes to client connections. Frames queued for a socket together (the events of
/// one transaction) leave in one write; compared with deliveries, it shows how well writes
/// batch.
pub const CONNECTION_WRITES: &str = "strapi_io_connection_writes";
/// Counter: connected sockets whose access was taken away (disconnected).
pub const SOCKETS_REVOKED: &str = "strapi_io_sockets_revoked";
/// Gauge: replication discontinuities since start (the slot had to be created again, or the
/// server is another cluster): changes in between were never seen; state was reloaded.
pub const REPLICATION_DISCONTINUITIES: &str = "strapi_io_replication_discontinuities";
/// Gauge, label `content_type` (uid): subscriptions (`strapi-io:subscribe`,
/// `subscribe-entity`) to the type or to one of its entries, over every socket.
pub const SUBSCRIPTIONS: &str = "strapi_io_subscriptions";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    content_type: String,
    action: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabels {
    content_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RoomLabels {
    room: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WebhookLabels {
    event: String,
}

struct Inner {
    registry: Registry,
    sockets_connected: Gauge,
    room_sockets: Family<RoomLabels, Gauge>,
    events_emitted: Family<EventLabels, Counter>,
    raw_emitted: Counter,
    events_dropped: Counter,
    connections_refused: Family<ReasonLabels, Counter>,
    webhook_failures: Family<WebhookLabels, Counter>,
    client_events_dropped: Family<ReasonLabels, Counter>,
    /// Custom action names that have a label of their own.
    custom_actions: Mutex<std::collections::HashSet<String>>,
    lag_bytes: Gauge,
    lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    confirmed_lsn: Gauge,
    server_lsn: Gauge,
    ready: Gauge,
    socket_rechecks: Counter,
    sockets_revoked: Counter,
    connection_writes: Counter,
    discontinuities: Gauge,
    subscriptions: Family<TypeLabels, Gauge>,
    replay: ReplayGauges,
    /// Serializes scrapes: the per-room family is cleared and refilled on each one.
    scrape: Mutex<()>,
}

/// The bridge's metrics: a registry and its families. Cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered and zeroed.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let sockets_connected = Gauge::default();
        let room_sockets = Family::<RoomLabels, Gauge>::default();
        let events_emitted = Family::<EventLabels, Counter>::default();
        let raw_emitted = Counter::default();
        let events_dropped = Counter::default();
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        let webhook_failures = Family::<WebhookLabels, Counter>::default();
        let client_events_dropped = Family::<ReasonLabels, Counter>::default();
        let lag_bytes = Gauge::default();
        let lag_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let confirmed_lsn = Gauge::default();
        let server_lsn = Gauge::default();
        let ready = Gauge::default();
        let socket_rechecks = Counter::default();
        let sockets_revoked = Counter::default();
        let connection_writes = Counter::default();
        let discontinuities = Gauge::default();
        registry.register(
            CONNECTION_WRITES,
            "Writes to client connections (frames queued together leave in one write)",
            connection_writes.clone(),
        );
        registry.register(
            SOCKETS_CONNECTED,
            "Sockets connected to the default namespace",
            sockets_connected.clone(),
        );
        registry.register(
            ROOM_SOCKETS,
            "Sockets in each role or API-token room",
            room_sockets.clone(),
        );
        registry.register(
            EVENTS_EMITTED,
            "Content-type events emitted, by content type and action",
            events_emitted.clone(),
        );
        registry.register(
            RAW_EMITTED,
            "Custom raw messages emitted",
            raw_emitted.clone(),
        );
        registry.register(
            EVENTS_DROPPED,
            "Messages a socket missed because its send buffer was full",
            events_dropped.clone(),
        );
        registry.register(
            CONNECTIONS_REFUSED,
            "Socket.IO handshakes refused, by reason",
            connections_refused.clone(),
        );
        registry.register(
            WEBHOOK_FAILURES,
            "Webhook calls that failed, by event",
            webhook_failures.clone(),
        );
        registry.register(
            CLIENT_EVENTS_DROPPED,
            "Client events and connection webhooks dropped by a limit, by reason",
            client_events_dropped.clone(),
        );
        registry.register(
            REPLICATION_LAG_BYTES,
            "WAL bytes between the server's position and the position handed on",
            lag_bytes.clone(),
        );
        registry.register(
            REPLICATION_LAG_SECONDS,
            "Seconds since the commit time of the last transaction handed on",
            lag_seconds.clone(),
        );
        registry.register(
            CONFIRMED_LSN,
            "Last WAL position confirmed to PostgreSQL",
            confirmed_lsn.clone(),
        );
        registry.register(
            SERVER_LSN,
            "Latest WAL position reported by the server",
            server_lsn.clone(),
        );
        registry.register(
            READY,
            "1 when streaming with catalog and access loaded",
            ready.clone(),
        );
        registry.register(
            SOCKET_RECHECKS,
            "Connected sockets checked again against access data",
            socket_rechecks.clone(),
        );
        registry.register(
            SOCKETS_REVOKED,
            "Connected sockets whose access was taken away",
            sockets_revoked.clone(),
        );
        registry.register(
            REPLICATION_DISCONTINUITIES,
            "Replication discontinuities since start (slot created again, or another cluster)",
            discontinuities.clone(),
        );
        let subscriptions = Family::<TypeLabels, Gauge>::default();
        registry.register(
            SUBSCRIPTIONS,
            "Subscriptions to a content type or one of its entries, by content type uid",
            subscriptions.clone(),
        );
        let replay = ReplayGauges::register(&mut registry);
        Metrics(Arc::new(Inner {
            registry,
            replay,
            sockets_connected,
            room_sockets,
            events_emitted,
            raw_emitted,
            events_dropped,
            connections_refused,
            webhook_failures,
            client_events_dropped,
            custom_actions: Mutex::new(std::collections::HashSet::new()),
            lag_bytes,
            lag_seconds,
            confirmed_lsn,
            server_lsn,
            ready,
            socket_rechecks,
            sockets_revoked,
            connection_writes,
            discontinuities,
            subscriptions,
            scrape: Mutex::new(()),
        }))
    }

    /// Subscriptions to content type `uid` (and its entries) now number `count`.
    pub fn set_subscriptions(&self, uid: &str, count: usize) {
        self.0
            .subscriptions
            .get_or_create(&TypeLabels {
                content_type: uid.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// One content-type event went out.
    pub fn event_emitted(&self, content_type: &str, action: &str) {
        let action = self.action_label(action);
        self.0
            .events_emitted
            .get_or_create(&EventLabels {
                content_type: content_type.to_owned(),
                action,
            })
            .inc();
    }

    /// The label of an action: itself for data actions and for the first
    /// [`MAX_CUSTOM_ACTION_LABELS`] custom names, else [`OTHER_ACTION`].
    fn action_label(&self, action: &str) -> String {
        if crate::config::DATA_ACTIONS.contains(&action) {
            return action.to_owned();
        }
        let mut seen = match self.0.custom_actions.lock() {
            Ok(seen) => seen,
            Err(poisoned) => poisoned.into_inner(),
        };
        if seen.contains(action) {
            return action.to_owned();
        }
        if seen.len() < MAX_CUSTOM_ACTION_LABELS && action != OTHER_ACTION {
            seen.insert(action.to_owned());
            return action.to_owned();
        }
        OTHER_ACTION.to_owned()
    }

    /// A client event (or a connection webhook) was dropped by a limit; `reason` is a short
    /// fixed word.
    pub fn client_event_dropped(&self, reason: &str) {
        self.0
            .client_events_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Writes to client connections so far (a running total; the counter catches up to it).
    pub fn set_connection_writes(&self, total: u64) {
        let counter = &self.0.connection_writes;
        counter.inc_by(total.saturating_sub(counter.get()));
    }

    /// One custom `raw` message went out.
    pub fn raw_emitted(&self) {
        self.0.raw_emitted.inc();
    }

    /// `sockets` sockets missed a message because their send buffer was full.
    pub fn events_dropped(&self, sockets: u64) {
        self.0.events_dropped.inc_by(sockets);
    }

    /// A handshake was refused; `reason` is a short fixed word (`invalid_token`).
    pub fn connection_refused(&self, reason: &str) {
        self.0
            .connections_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A connected socket was checked again against access data.
    pub fn socket_rechecked(&self) {
        self.0.socket_rechecks.inc();
    }

    /// A connected socket's access was taken away.
    pub fn socket_revoked(&self) {
        self.0.sockets_revoked.inc();
    }

    /// A webhook call for `event` failed.
    pub fn webhook_failed(&self, event: &str) {
        self.0
            .webhook_failures
            .get_or_create(&WebhookLabels {
                event: event.to_owned(),
            })
            .inc();
    }

    /// Prometheus text exposition: the counters as they are, the gauges set from `health`, the
    /// number of `connected` sockets and the socket count of each room in `rooms`.
    pub fn render(
        &self,
        health: &Health,
        connected: usize,
        rooms: impl IntoIterator<Item = (String, usize)>,
    ) -> Result<String, fmt::Error> {
        let inner = &self.0;
        let _scrape = match inner.scrape.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        inner
            .sockets_connected
            .set(saturating_i64(connected as u64));
        inner.room_sockets.clear();
        for (room, count) in rooms {
            inner
                .room_sockets
                .get_or_create(&RoomLabels { room })
                .set(saturating_i64(count as u64));
        }
        inner.lag_bytes.set(saturating_i64(health.lag_bytes()));
        inner.lag_seconds.set(lag_seconds(health));
        inner
            .confirmed_lsn
            .set(saturating_i64(health.confirmed_lsn().0));
        inner.server_lsn.set(saturating_i64(health.server_lsn().0));
        inner.ready.set(i64::from(health.is_ready()));
        inner
            .discontinuities
            .set(saturating_i64(health.discontinuities()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &inner.registry)?;
        Ok(out)
    }
}

/// Gauge: events held in the replay buffer.
pub const REPLAY_EVENTS: &str = "strapi_io_replay_buffer_events";
/// Gauge: bytes held in the replay buffer.
pub const REPLAY_BYTES: &str = "strapi_io_replay_buffer_bytes";
/// Gauge: WAL bytes the slot keeps for the replay window (handed-on minus confirmed position),
/// apart from the replication lag.
pub const REPLAY_WAL_BYTES: &str = "strapi_io_replay_wal_held_bytes";
/// Gauge: events sent from the replay buffer since start (catch-up, slow sockets).
pub const REPLAYED: &str = "strapi_io_replayed_events";
/// Gauge: `strapi-io:resync` sent since start.
pub const RESYNCS: &str = "strapi_io_resyncs";
/// Gauge: sockets that fell behind because their queue was full, since start.
pub const FELL_BEHIND: &str = "strapi_io_sockets_fell_behind";
/// Gauge: sockets taking no live events now (catching up from the buffer).
pub const SOCKETS_BEHIND: &str = "strapi_io_sockets_behind";
/// Gauge: seconds the start-up rebuild of the replay buffer from the slot took.
pub const REPLAY_REBUILD_SECONDS: &str = "strapi_io_replay_rebuild_seconds";
/// Gauge: events the start-up rebuild put in the replay buffer.
pub const REPLAY_REBUILD_EVENTS: &str = "strapi_io_replay_rebuild_events";

/// The replay buffer's state at a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayReport {
    /// Events held.
    pub events: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Events sent from the buffer since start.
    pub replayed: u64,
    /// Resyncs sent since start.
    pub resyncs: u64,
    /// Sockets that fell behind since start.
    pub fell_behind: u64,
    /// Sockets behind now.
    pub behind: u64,
}

struct ReplayGauges {
    events: Gauge,
    bytes: Gauge,
    wal_bytes: Gauge,
    replayed: Gauge,
    resyncs: Gauge,
    fell_behind: Gauge,
    behind: Gauge,
    rebuild_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    rebuild_events: Gauge,
}

impl ReplayGauges {
    fn register(registry: &mut Registry) -> ReplayGauges {
        let g = ReplayGauges {
            events: Gauge::default(),
            bytes: Gauge::default(),
            wal_bytes: Gauge::default(),
            replayed: Gauge::default(),
            resyncs: Gauge::default(),
            fell_behind: Gauge::default(),
            behind: Gauge::default(),
            rebuild_seconds: Gauge::default(),
            rebuild_events: Gauge::default(),
        };
        let gauges: [(&str, &str, &Gauge); 7] = [
            (REPLAY_EVENTS, "Events held in the replay buffer", &g.events),
            (REPLAY_BYTES, "Bytes held in the replay buffer", &g.bytes),
            (
                REPLAY_WAL_BYTES,
                "WAL bytes the slot keeps for the replay window (not replication lag)",
                &g.wal_bytes,
            ),
            (
                REPLAYED,
                "Events sent from the replay buffer since start",
                &g.replayed,
            ),
            (
                RESYNCS,
                "strapi-io:resync events sent since start",
                &g.resyncs,
            ),
            (
                FELL_BEHIND,
                "Sockets that fell behind the live stream (full queue) since start",
                &g.fell_behind,
            ),
            (
                SOCKETS_BEHIND,
                "Sockets catching up from the replay buffer now",
                &g.behind,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            REPLAY_REBUILD_SECONDS,
            "Seconds the start-up rebuild of the replay buffer from the slot took",
            g.rebuild_seconds.clone(),
        );
        registry.register(
            REPLAY_REBUILD_EVENTS,
            "Events the start-up rebuild put in the replay buffer",
            g.rebuild_events.clone(),
        );
        g
    }
}

impl Metrics {
    /// Sets the replay gauges for the next [`Metrics::render`].
    pub fn set_replay(&self, health: &Health, r: ReplayReport) {
        let g = &self.0.replay;
        g.events.set(saturating_i64(r.events));
        g.bytes.set(saturating_i64(r.bytes));
        g.wal_bytes.set(saturating_i64(health.replay_wal_bytes()));
        g.replayed.set(saturating_i64(r.replayed));
        g.resyncs.set(saturating_i64(r.resyncs));
        g.fell_behind.set(saturating_i64(r.fell_behind));
        g.behind.set(saturating_i64(r.behind));
        let (seconds, events) = health.replay_rebuilt();
        g.rebuild_seconds.set(seconds);
        g.rebuild_events.set(saturating_i64(events));
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Now minus the last commit time, in seconds; 0 before the first commit or if the clock is
/// behind the database's.
fn lag_seconds(health: &Health) -> f64 {
    let last = health.last_commit_unix_micros();
    if last <= 0 {
        return 0.0;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    (now.saturating_sub(last).max(0) as f64) / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    #[test]
    fn render_shows_every_family_with_current_values() {
        let m = Metrics::new();
        let health = Health::new();
        health.set_server_lsn(Lsn(0x1_0000_0400));
        health.set_confirmed_lsn(Lsn(0x1_0000_0000));
        m.event_emitted("message", "create");
        m.event_emitted("message", "create");
        m.events_dropped(3);
        let text = m
            .render(&health, 2, [("Public".to_owned(), 2)])
            .unwrap_or_else(|e| panic!("{e}"));
        for needle in [
            "strapi_io_sockets_connected 2",
            "strapi_io_room_sockets{room=\"Public\"} 2",
            "strapi_io_events_emitted_total{content_type=\"message\",action=\"create\"} 2",
            "strapi_io_events_dropped_total 3",
            "strapi_io_replication_lag_bytes 1024",
            "strapi_io_confirmed_lsn 4294967296",
            "strapi_io_replication_lag_seconds 0",
            "strapi_io_ready 0",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        // A room that emptied disappears on the next scrape.
        let text = m.render(&health, 0, []).unwrap_or_else(|e| panic!("{e}"));
        assert!(!text.contains("room=\"Public\""), "{text}");
    }

    #[test]
    fn custom_action_names_cannot_grow_the_labels_without_bound() {
        let m = Metrics::new();
        for i in 0..1000 {
            m.event_emitted("message", &format!("custom{i}"));
        }
        m.event_emitted("message", "delete");
        m.event_emitted("message", "custom0");
        let text = m
            .render(&Health::new(), 0, [])
            .unwrap_or_else(|e| panic!("{e}"));
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("strapi_io_events_emitted_total{"))
            .collect();
        // The first 32 custom names, `other` for the remaining 968, and `delete`.
        assert_eq!(series.len(), MAX_CUSTOM_ACTION_LABELS + 2, "{text}");
        for needle in [
            "strapi_io_events_emitted_total{content_type=\"message\",action=\"custom0\"} 2",
            "strapi_io_events_emitted_total{content_type=\"message\",action=\"custom31\"} 1",
            "strapi_io_events_emitted_total{content_type=\"message\",action=\"other\"} 968",
            "strapi_io_events_emitted_total{content_type=\"message\",action=\"delete\"} 1",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
    }
}
