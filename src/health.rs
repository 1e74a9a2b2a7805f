//! Liveness and readiness shared by every stage, read by `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::lsn::Lsn;

/// Progress and readiness flags, updated by the stages with plain atomic stores.
#[derive(Debug, Default)]
pub struct HealthState {
    streaming: AtomicBool,
    catalog_loaded: AtomicBool,
    access_loaded: AtomicBool,
    server_lsn: AtomicU64,
    confirmed_lsn: AtomicU64,
    last_commit_unix_micros: AtomicI64,
    handed_lsn: AtomicU64,
    rebuild_micros: AtomicU64,
    rebuild_events: AtomicU64,
}

/// A cheap-to-clone handle on [`HealthState`].
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<HealthState>);

impl Health {
    /// A fresh state: nothing ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// The replication stream is (or is no longer) running.
    pub fn set_streaming(&self, on: bool) {
        self.0.streaming.store(on, Ordering::Relaxed);
    }

    /// The content-type catalog is loaded.
    pub fn set_catalog_loaded(&self, on: bool) {
        self.0.catalog_loaded.store(on, Ordering::Relaxed);
    }

    /// Roles, permissions, users and tokens are loaded.
    pub fn set_access_loaded(&self, on: bool) {
        self.0.access_loaded.store(on, Ordering::Relaxed);
    }

    /// The server's latest WAL position, from XLogData and keepalives.
    pub fn set_server_lsn(&self, lsn: Lsn) {
        self.0.server_lsn.fetch_max(lsn.0, Ordering::Relaxed);
    }

    /// The position last confirmed to PostgreSQL as flushed.
    pub fn set_confirmed_lsn(&self, lsn: Lsn) {
        self.0.confirmed_lsn.fetch_max(lsn.0, Ordering::Relaxed);
    }

    /// Commit time (µs since the Unix epoch) of the last transaction handed on.
    pub fn set_last_commit(&self, unix_micros: i64) {
        self.0
            .last_commit_unix_micros
            .store(unix_micros, Ordering::Relaxed);
    }

    /// End of the last transaction the pipeline handed on (emitted).
    pub fn set_handed_lsn(&self, lsn: Lsn) {
        self.0.handed_lsn.fetch_max(lsn.0, Ordering::Relaxed);
    }

    /// The replay buffer was rebuilt from the slot at start: how long it took and how many
    /// events it holds.
    pub fn set_replay_rebuilt(&self, took: std::time::Duration, events: u64) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.0.rebuild_micros.store(micros, Ordering::Relaxed);
        self.0.rebuild_events.store(events, Ordering::Relaxed);
    }

    /// Seconds the start-up rebuild of the replay buffer took, and the events it held.
    pub fn replay_rebuilt(&self) -> (f64, u64) {
        (
            self.0.rebuild_micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.0.rebuild_events.load(Ordering::Relaxed),
        )
    }

    /// WAL the slot keeps for the replay window: handed-on position minus confirmed position.
    pub fn replay_wal_bytes(&self) -> u64 {
        Lsn(self.0.handed_lsn.load(Ordering::Relaxed)).bytes_since(self.confirmed_lsn())
    }

    /// Ready to serve: streaming, with catalog and access loaded.
    pub fn is_ready(&self) -> bool {
        self.is_streaming() && self.is_catalog_loaded() && self.is_access_loaded()
    }

    /// Whether the replication stream runs.
    pub fn is_streaming(&self) -> bool {
        self.0.streaming.load(Ordering::Relaxed)
    }

    /// Whether the catalog is loaded.
    pub fn is_catalog_loaded(&self) -> bool {
        self.0.catalog_loaded.load(Ordering::Relaxed)
    }

    /// Whether access data is loaded.
    pub fn is_access_loaded(&self) -> bool {
        self.0.access_loaded.load(Ordering::Relaxed)
    }

    /// Server WAL position.
    pub fn server_lsn(&self) -> Lsn {
        Lsn(self.0.server_lsn.load(Ordering::Relaxed))
    }

    /// Confirmed position.
    pub fn confirmed_lsn(&self) -> Lsn {
        Lsn(self.0.confirmed_lsn.load(Ordering::Relaxed))
    }

    /// Replication lag in bytes: server position minus the position handed on (the confirmed
    /// one before anything was handed on). The WAL kept for the replay window is
    /// [`Health::replay_wal_bytes`], not lag.
    pub fn lag_bytes(&self) -> u64 {
        let handed = Lsn(self.0.handed_lsn.load(Ordering::Relaxed)).max(self.confirmed_lsn());
        self.server_lsn().bytes_since(handed)
    }

    /// Commit time of the last transaction handed on (µs since the Unix epoch), 0 if none.
    pub fn last_commit_unix_micros(&self) -> i64 {
        self.0.last_commit_unix_micros.load(Ordering::Relaxed)
    }
}
