//! Wires the stages together: the one place that knows every stage.
//!
//! ```text
//! replication ──mpsc<Replicated>──▶ process: pgoutput::Decoder → strapi::Model → access::Access → io::Emitter
//!      ▲                                                                                   │
//!      └──────────────────── watch<Progress> (end LSN of transactions handed on) ◀─────────┘
//! ```
//!
//! The replication client reads from PostgreSQL into a bounded channel (a slow emitter fills
//! it, reading stops, PostgreSQL keeps the WAL). One task runs decode → model → authorize →
//! emit for each message in stream order, so an access change applies before the next event,
//! and reports back the end LSN of every transaction whose events were handed to Socket.IO:
//! only that is confirmed to PostgreSQL. Shutdown stops reading first, lets this task drain the
//! channel, then confirms and closes.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::access::{Access, Outgoing, Recheck};
use crate::config::Config;
use crate::health::Health;
use crate::io::{self, Emitter, IoOptions};
use crate::metrics::Metrics;
use crate::pg;
use crate::pgoutput::{Change, Decoder};
use crate::replication::{self, Progress, Replicated};
use crate::startup::{self, ReplayFilter};
use crate::strapi::catalog::CORE_STORE_TABLE;
use crate::strapi::{self, CatalogHandle, Model, ModelOutput};

/// Batches of XLogData between the replication client and the processing task. Each batch is
/// what one socket read held, so this bounds memory to a few MB while keeping the reader busy.
const CHANNEL_BATCHES: usize = 64;

/// How long shutdown waits for sockets to close before giving up on a graceful close.
const SERVER_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the bridge until `shutdown` is cancelled (then drains and returns `Ok`) or a fatal
/// error stops it. `listener` is bound by the caller so that tests can use port 0.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let health = Health::new();
    let metrics = Metrics::new();
    let catalog = CatalogHandle::with_private_attributes(cfg.strapi.private_attributes.clone());
    // Nothing loaded yet: handshakes are told to come back, `/readyz` says what it waits for,
    // `/healthz` answers from the start.
    let access = Access::unloaded();

    let (router, emitter) = io::build(
        IoOptions {
            io: cfg.io.clone(),
            events: cfg.events.clone(),
            admin_token: cfg.admin_token.clone(),
            limits: cfg.limits.clone(),
        },
        access.handle(),
        catalog.clone(),
        health.clone(),
        metrics,
    );
    let local = listener.local_addr().ok();
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(io::serve(
        listener,
        router,
        server_stop.clone(),
        SERVER_SHUTDOWN_GRACE,
    ));
    if let Some(addr) = local {
        info!(%addr, path = %cfg.io.path, "Socket.IO listening");
    }
    let expiries = tokio::spawn(emitter.clone().watch_expiries(server_stop.clone()));

    let result = stream(&cfg, catalog, access, &emitter, &health, &shutdown).await;

    emitter.close().await;
    server_stop.cancel();
    if let Err(e) = server.await {
        warn!(error = %e, "HTTP server task failed");
    }
    let _ = expiries.await;
    result
}

/// Loads, then runs replication and processing until shutdown or a fatal error.
async fn stream(
    cfg: &Config,
    catalog: CatalogHandle,
    access: Access,
    emitter: &Emitter,
    health: &Health,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // Replication stops on shutdown, or when processing stopped on a fatal load error.
    let stop = shutdown.child_token();
    // The load must be at or after the position the stream resumes from. A slot that exists
    // already is at or before now: load now, so handshakes are answered even while the slot
    // is held elsewhere (a second instance waiting). Otherwise load once the first session
    // has created it (a session that creates the slot anyway makes the processor load again).
    let preloaded = if startup::slot_exists(cfg).await {
        match startup::load_with_retry(cfg, &catalog, health, &stop).await? {
            Some(loaded) => Some(loaded),
            None => return Ok(()),
        }
    } else {
        None
    };
    let (tx, mut rx) = mpsc::channel(CHANNEL_BATCHES);
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let replication = tokio::spawn(replication::run(
        cfg.database.clone(),
        tx,
        progress_rx,
        health.clone(),
        stop.clone(),
    ));
    let joined = |replication: tokio::task::JoinHandle<_>| async move {
        replication
            .await
            .context("replication task panicked")
            .and_then(|r: Result<(), replication::ReplicationError>| r.map_err(anyhow::Error::from))
    };
    let loaded = match preloaded {
        Some(loaded) => loaded,
        None => {
            // The first session has started: the slot exists (created if it was missing), so
            // the stream covers everything after its position and the snapshot read now is at
            // or after it; what it already contains is skipped in the replay.
            if rx.recv().await.is_none() {
                // Replication ended before streaming: shut down, or a fatal error.
                return joined(replication).await;
            }
            match startup::load_with_retry(cfg, &catalog, health, &stop).await {
                Ok(Some(loaded)) => loaded,
                Ok(None) => {
                    drop(rx);
                    return joined(replication).await;
                }
                Err(e) => {
                    stop.cancel();
                    drop(rx);
                    let _ = joined(replication).await;
                    return Err(e);
                }
            }
        }
    };
    let mut processor = Processor {
        client: loaded.client,
        db: cfg.database.clone(),
        decoder: Decoder::new(),
        model: loaded.model,
        access,
        emitter: emitter.clone(),
        health: health.clone(),
        progress: progress_tx,
        state: Progress::default(),
        recheck: Recheck::default(),
        outputs: Vec::new(),
        cfg: cfg.clone(),
        catalog,
        shutdown: stop.clone(),
        replay: ReplayFilter::default(),
        replayed: false,
        max_event_bytes: cfg.io.max_event_bytes,
    };
    processor.install(loaded.access, loaded.replay);
    let processed = processor.run(rx).await;
    if processed.is_err() {
        stop.cancel();
    }
    drop(processor);

    // The processing task ends when the replication client drops its sender: on shutdown, or
    // after a fatal replication error.
    let replicated = joined(replication).await;
    processed?;
    replicated
}

/// The processing task's state: one instance of each stage, run in stream order.
struct Processor {
    client: tokio_postgres::Client,
    db: crate::config::DatabaseConfig,
    decoder: Decoder,
    model: Model,
    access: Access,
    emitter: Emitter,
    health: Health,
    progress: watch::Sender<Progress>,
    state: Progress,
    /// Sockets to check again before the next event goes out.
    recheck: Recheck,
    outputs: Vec<ModelOutput>,
    /// For reloads.
    cfg: Config,
    catalog: CatalogHandle,
    shutdown: CancellationToken,
    /// Which replayed transactions the loaded state already contains.
    replay: ReplayFilter,
    /// The current transaction is one of those: its access and schema rows are skipped.
    replayed: bool,
    /// `[io] max_event_bytes`: larger data events go out with the id only.
    max_event_bytes: usize,
}

impl Processor {
    async fn run(&mut self, mut rx: mpsc::Receiver<Replicated>) -> anyhow::Result<()> {
        while let Some(item) = rx.recv().await {
            match item {
                Replicated::Session {
                    start,
                    created,
                    discontinuity,
                } => {
                    // A new session resends every transaction not yet confirmed; anything of an
                    // unfinished transaction from the old one is void.
                    info!(%start, "replication session started");
                    self.decoder = Decoder::new();
                    self.state.in_transaction = false;
                    self.replayed = false;
                    if created || discontinuity.is_some() {
                        self.reload().await?;
                    }
                }
                Replicated::Data(batch) => {
                    let count = batch.len() as u64;
                    for xlog in batch {
                        self.handle(xlog.payload, xlog.wal_start).await;
                    }
                    self.state.handed += count;
                }
            }
            self.progress.send_replace(self.state);
        }
        Ok(())
    }

    async fn handle(&mut self, payload: bytes::Bytes, lsn: crate::lsn::Lsn) {
        let change = match self.decoder.decode(&payload) {
            Ok(Some(change)) => change,
            Ok(None) => return,
            Err(e) => {
                error!(%lsn, error = %e, "cannot decode a pgoutput message; skipping it");
                return;
            }
        };
        match &change {
            Change::Begin {
                xid, commit_lsn, ..
            } => {
                self.state.in_transaction = true;
                self.replayed = self.replay.contains(*xid, *commit_lsn);
            }
            Change::Commit { .. } => self.state.in_transaction = false,
            Change::Row { relation, .. }
                if self.replayed
                    && relation.name == CORE_STORE_TABLE
                    && relation.namespace == self.cfg.database.schema =>
            {
                // The loaded catalog and settings are newer than this row.
                return;
            }
            _ => {}
        }
        self.ensure_client().await;
        let mut outputs = std::mem::take(&mut self.outputs);
        if let Err(e) = self.model.handle(&self.client, change, &mut outputs).await {
            error!(%lsn, error = %e, "could not build events for a change; skipping it");
        }
        for output in outputs.drain(..) {
            self.output(output).await;
        }
        self.outputs = outputs;
    }

    async fn output(&mut self, output: ModelOutput) {
        match output {
            // The loaded tables already contain this transaction's rows, and newer ones.
            ModelOutput::Access(_) if self.replayed => {}
            ModelOutput::Access(change) => {
                let recheck = self.access.apply(change);
                self.recheck.merge(recheck);
            }
            ModelOutput::Event(event) => {
                self.flush_access_change().await;
                let Some(event) = strapi::limit_event(event, self.max_event_bytes) else {
                    return;
                };
                if let Some(delivery) = self.access.authorize(event) {
                    self.emitter.send(Outgoing::Deliver(delivery)).await;
                }
            }
            ModelOutput::Raw(raw) => {
                self.flush_access_change().await;
                if !strapi::limit_raw(&raw, self.max_event_bytes) {
                    return;
                }
                self.emitter.send(Outgoing::Raw(raw)).await;
            }
            ModelOutput::Commit {
                end_lsn,
                commit_time,
            } => {
                self.flush_access_change().await;
                self.state.flushed = self.state.flushed.max(end_lsn);
                self.health.set_last_commit(commit_time.unix_micros());
            }
        }
    }

    /// Sockets are re-checked once per run of access changes, before the next event goes out,
    /// and only those the changes can affect.
    async fn flush_access_change(&mut self) {
        let recheck = std::mem::take(&mut self.recheck);
        if !recheck.is_empty() {
            self.emitter.send(Outgoing::AccessChanged(recheck)).await;
        }
    }

    /// Makes freshly loaded access tables current, with the filter for the replay ahead.
    fn install(&mut self, access: Access, replay: ReplayFilter) {
        self.access.handle().replace_with(access);
        self.replay = replay;
        self.health.set_catalog_loaded(true);
        self.health.set_access_loaded(true);
    }

    /// A session created the slot after the load (nothing before its position will come) or
    /// continuity was lost: the catalog and the access tables are read again, now that the
    /// stream covers everything after, and every socket is checked against them.
    async fn reload(&mut self) -> anyhow::Result<()> {
        self.health.set_catalog_loaded(false);
        self.health.set_access_loaded(false);
        let Some(loaded) =
            startup::load_with_retry(&self.cfg, &self.catalog, &self.health, &self.shutdown)
                .await?
        else {
            return Ok(());
        };
        self.client = loaded.client;
        self.model = loaded.model;
        self.install(loaded.access, loaded.replay);
        self.recheck = Recheck::everything();
        self.flush_access_change().await;
        Ok(())
    }

    /// Reconnects the SQL connection the model uses for rare re-reads, if it dropped.
    async fn ensure_client(&mut self) {
        let mut delay = Duration::from_millis(100);
        while self.client.is_closed() {
            match pg::connect(&self.db).await {
                Ok(client) => {
                    info!("SQL connection re-established");
                    self.client = client;
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?delay, "SQL connection lost; reconnecting");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
