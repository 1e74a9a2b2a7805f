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

use crate::access::{Access, AccessConfig, Outgoing};
use crate::config::Config;
use crate::health::Health;
use crate::io::{self, Emitter, IoOptions};
use crate::metrics::Metrics;
use crate::pg;
use crate::pgoutput::{Change, Decoder};
use crate::proxy::{Proxy, ReadEvents};
use crate::replication::{self, Progress, Replicated};
use crate::strapi::{self, CatalogHandle, Model, ModelConfig, ModelOutput};

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

    let Some((client, model, access)) = load_with_retry(&cfg, &catalog, &shutdown).await? else {
        return Ok(());
    };
    health.set_catalog_loaded(true);
    health.set_access_loaded(true);

    let (proxy, reads) = match &cfg.proxy {
        Some(p) => {
            let (proxy, reads) = Proxy::new(
                p,
                cfg.content_types.clone(),
                cfg.io.max_event_bytes,
                catalog.clone(),
                access.handle(),
            );
            info!(upstream = %p.upstream, "proxying other HTTP requests to Strapi");
            (Some(proxy), Some(reads))
        }
        None => (None, None),
    };
    let (router, emitter) = io::build(
        IoOptions {
            io: cfg.io.clone(),
            events: cfg.events.clone(),
            admin_token: cfg.admin_token.clone(),
            proxy,
            limits: cfg.limits.clone(),
        },
        access.handle(),
        catalog,
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

    if let Some(reads) = reads {
        tokio::spawn(emit_reads(reads, emitter.clone()));
    }

    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let replication = tokio::spawn(replication::run(
        cfg.database.clone(),
        tx,
        progress_rx,
        health.clone(),
        shutdown.clone(),
    ));

    let mut processor = Processor {
        client,
        db: cfg.database.clone(),
        decoder: Decoder::new(),
        model,
        access,
        emitter: emitter.clone(),
        health: health.clone(),
        progress: progress_tx,
        state: Progress::default(),
        access_changed: false,
        outputs: Vec::new(),
        max_event_bytes: cfg.io.max_event_bytes,
    };
    let processed = processor.run(rx).await;

    // The processing task ends when the replication client drops its sender: on shutdown, or
    // after a fatal replication error.
    let replicated = replication
        .await
        .context("replication task panicked")
        .and_then(|r| r.map_err(anyhow::Error::from));

    emitter.close().await;
    server_stop.cancel();
    if let Err(e) = server.await {
        warn!(error = %e, "HTTP server task failed");
    }
    processed?;
    replicated
}

/// Hands the proxy's read events to Socket.IO, apart from the replication stream (reads have
/// no place in its order and nothing to confirm). Ends when the proxy is gone.
async fn emit_reads(mut reads: ReadEvents, emitter: Emitter) {
    while let Some(delivery) = reads.next().await {
        emitter.send(Outgoing::Deliver(delivery)).await;
    }
}

/// Why loading failed, and whether trying again may help.
enum LoadError {
    /// PostgreSQL unreachable, starting up, or the connection dropped.
    Transient(anyhow::Error),
    /// Wrong password, missing database, bad `content_types`…: a person must act.
    Fatal(anyhow::Error),
}

/// Connects and loads the catalog and the access tables, retrying with backoff while
/// PostgreSQL is unreachable (it may start after the bridge). `None` when shut down meanwhile.
async fn load_with_retry(
    cfg: &Config,
    catalog: &CatalogHandle,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<(tokio_postgres::Client, Model, Access)>> {
    let mut delay = Duration::from_millis(200);
    loop {
        match load(cfg, catalog).await {
            Ok(loaded) => return Ok(Some(loaded)),
            Err(LoadError::Fatal(e)) => return Err(e),
            Err(LoadError::Transient(e)) => {
                warn!(error = format!("{e:#}"), retry_in = ?delay, "cannot start yet; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

impl LoadError {
    fn new(transient: bool, error: anyhow::Error) -> LoadError {
        if transient {
            LoadError::Transient(error)
        } else {
            LoadError::Fatal(error)
        }
    }
}

async fn load(
    cfg: &Config,
    catalog: &CatalogHandle,
) -> Result<(tokio_postgres::Client, Model, Access), LoadError> {
    let client = pg::connect(&cfg.database).await.map_err(|e| {
        // No SQLSTATE: the network; 57P03: the server is starting or stopping.
        let transient = e.code().is_none_or(|c| c.code() == "57P03");
        let what = format!("connecting to {}", cfg.database.display_target());
        LoadError::new(transient, anyhow::Error::from(e).context(what))
    })?;
    let model = Model::load(&client, ModelConfig::from_config(cfg), catalog.clone())
        .await
        .map_err(|e| {
            let transient = e.is_retryable();
            let what = "loading Strapi's content types";
            LoadError::new(transient, anyhow::Error::from(e).context(what))
        })?;
    let access = Access::load(
        &client,
        &cfg.database.schema,
        AccessConfig::from_auth(&cfg.auth),
    )
    .await
    .map_err(|e| {
        let transient = e.is_retryable();
        let what = "loading Strapi's roles, permissions, users and API tokens";
        LoadError::new(transient, anyhow::Error::from(e).context(what))
    })?;
    Ok((client, model, access))
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
    access_changed: bool,
    outputs: Vec<ModelOutput>,
    /// `[io] max_event_bytes`: larger data events go out with the id only.
    max_event_bytes: usize,
}

impl Processor {
    async fn run(&mut self, mut rx: mpsc::Receiver<Replicated>) -> anyhow::Result<()> {
        while let Some(item) = rx.recv().await {
            match item {
                Replicated::Session { start } => {
                    // A new session resends every transaction not yet confirmed; anything of an
                    // unfinished transaction from the old one is void.
                    info!(%start, "replication session started");
                    self.decoder = Decoder::new();
                    self.state.in_transaction = false;
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
            Change::Begin { .. } => self.state.in_transaction = true,
            Change::Commit { .. } => self.state.in_transaction = false,
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
            ModelOutput::Access(change) => {
                self.access.apply(change);
                self.access_changed = true;
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

    /// Sockets are re-checked once per run of access changes, before the next event goes out.
    async fn flush_access_change(&mut self) {
        if std::mem::take(&mut self.access_changed) {
            self.emitter.send(Outgoing::AccessChanged).await;
        }
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
