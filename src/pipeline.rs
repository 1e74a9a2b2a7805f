//! Wires the stages together: the one place that knows every stage.
//!
//! ```text
//! replication ──mpsc<Replicated>──▶ process: pgoutput::Decoder → strapi::Model → access::Access → io::Emitter
//!      ▲                                                                                   │
//!      └──────── watch<Progress> (end LSN handed on, what the replay buffer keeps) ◀────────┘
//! ```
//!
//! The replication client reads from PostgreSQL into a channel bounded in batches and in bytes
//! ([`replication::MAX_IN_FLIGHT_BYTES`]): a slow emitter fills it, reading stops, PostgreSQL
//! keeps the WAL. One task runs decode → model → authorize →
//! emit for each message in stream order, so an access change applies before the next event,
//! and reports back the end LSN of every transaction whose events were handed to Socket.IO,
//! and how far back the replay buffer reaches: confirmed to PostgreSQL is the older of the two,
//! so the slot keeps the replay window's WAL and a restart rebuilds the buffer from it (sockets
//! wait for that). Each event gets its offset here (commit LSN, position in the transaction);
//! transactions a new replication session sends again are skipped. Shutdown stops reading
//! first, lets this task drain the channel, then confirms and closes.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::access::{Access, Outgoing, Recheck};
use crate::config::Config;
use crate::delivery::{Entry, Offset, Target};
use crate::health::Health;
use crate::io::{self, Emitter, IoOptions};
use crate::lsn::Lsn;
use crate::metrics::Metrics;
use crate::pg;
use crate::pgoutput::{Change, Decoder};
use crate::proxy::{Proxy, ReadEvents};
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
            delivery: cfg.delivery,
            wal_emit: Some(io::WalEmit {
                database: cfg.database.clone(),
                prefix: cfg.message_prefix.clone(),
                allow_data_actions: cfg.allow_data_actions,
            }),
        },
        access.handle(),
        catalog.clone(),
        health.clone(),
        metrics,
    );
    // Handshakes wait until the replay buffer is rebuilt from the slot (see `CaughtUp`).
    emitter.replay_rebuilding();
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
    if let Some(reads) = reads {
        tokio::spawn(emit_reads(reads, emitter.clone()));
    }

    let result = stream(&cfg, catalog, access, &emitter, &health, &shutdown).await;

    emitter.close().await;
    server_stop.cancel();
    if let Err(e) = server.await {
        warn!(error = %e, "HTTP server task failed");
    }
    let _ = expiries.await;
    result
}

/// Hands the proxy's read events to Socket.IO, apart from the replication stream (reads have
/// no place in its order and nothing to confirm). Ends when the proxy is gone.
async fn emit_reads(mut reads: ReadEvents, emitter: Emitter) {
    while let Some(delivery) = reads.next().await {
        emitter.send(Outgoing::Deliver(delivery));
    }
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
    let mut first_session = None;
    let loaded = match preloaded {
        Some(loaded) => loaded,
        None => {
            // The first session has started: the slot exists (created if it was missing), so
            // the stream covers everything after its position and the snapshot read now is at
            // or after it; what it already contains is skipped in the replay.
            let Some(first) = rx.recv().await else {
                // Replication ended before streaming: shut down, or a fatal error.
                return joined(replication).await;
            };
            first_session = Some(first);
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
        stream: StreamPosition::default(),
        shutdown: stop.clone(),
        max_event_bytes: cfg.io.max_event_bytes,
        cfg: cfg.clone(),
        catalog,
        replay: ReplayFilter::default(),
        replayed: false,
        pending: Vec::new(),
    };
    processor.install(loaded.access, loaded.replay);
    // On the thread that started the runtime, not on a worker: the socket writers it wakes
    // keep both workers (commit -> client p50 with 1,000 clients 5-15 % lower), and what it
    // allocates stays apart from theirs (peak memory during a 1,000,000-row transaction 104 MB
    // where it was 171-242 MB on a worker). A transaction's events are queued for each socket
    // back to back; a writer an idle worker runs before the last one is queued writes the rest
    // in a second write.
    let processed = processor.run(first_session, rx).await;
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
    /// Which replayed transactions the loaded state already contains.
    replay: ReplayFilter,
    /// The current transaction is one of those: its access and schema rows are skipped.
    replayed: bool,
    stream: StreamPosition,
    shutdown: CancellationToken,
    /// `[io] max_event_bytes`: larger data events go out with the id only.
    max_event_bytes: usize,
    /// Events built but not yet emitted: a transaction's go out together at its commit (or
    /// every [`MAX_PENDING`], before an access change takes effect, while a change is held).
    pending: Vec<Entry>,
}

/// Where the processing task is in the stream: what gives each event its offset, and what was
/// already handled (a new replication session resends what is not confirmed, and the
/// confirmed position trails by the replay window, so that is skipped).
#[derive(Debug, Default)]
struct StreamPosition {
    /// Commit LSN of the current transaction (or LSN of a non-transactional message).
    lsn: Lsn,
    /// Events of the current transaction so far: the next event's position in it.
    seq: u32,
    /// Commit time of the current transaction (Unix µs).
    at_micros: i64,
    /// Since when the replay buffer is being rebuilt from the slot after a start; `None` once it
    /// is. While it is, an event's window counts from its commit (when the previous run sent
    /// it); after, from when it is emitted now.
    rebuilding_since: Option<std::time::Instant>,
    /// The last transaction (commit LSN) or non-transactional message fully handled.
    done: Lsn,
    /// The current transaction was handled in an earlier session: skip it.
    skipping: bool,
}

/// How a change that failed for a reason reconnecting may cure is retried: first after this
/// long, doubling up to [`RETRY_MAX`]. The pipeline holds meanwhile (nothing later is emitted
/// or confirmed), so the change is never skipped for a lost connection.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Sockets wait at most this long at start for the replay buffer to be rebuilt (PostgreSQL
/// unreachable, or a window too large to decode in time), well within the client's connect
/// timeout.
const REBUILD_LIMIT: Duration = Duration::from_secs(30);

/// At most this many events wait for their transaction's commit before they are emitted.
const MAX_PENDING: usize = 256;

/// Processing a batch of changes pauses this often to let other tasks run.
const YIELD_EVERY: Duration = Duration::from_millis(2);

/// How often the replay buffer is trimmed and the position to confirm updated while the
/// stream is idle.
const TRIM_EVERY: Duration = Duration::from_secs(1);

impl Processor {
    /// Processes the stream; `first` is a session marker already taken from `rx` (the load
    /// waited for it), handled first.
    async fn run(
        &mut self,
        mut first: Option<Replicated>,
        mut rx: mpsc::Receiver<Replicated>,
    ) -> anyhow::Result<()> {
        let mut trim = tokio::time::interval(TRIM_EVERY);
        self.stream.rebuilding_since = Some(std::time::Instant::now());
        loop {
            let item = if let Some(first) = first.take() {
                // Loaded after it: no reload for this one.
                if let Replicated::Session { start, .. } = first {
                    Some(Replicated::Session {
                        start,
                        created: false,
                        discontinuity: None,
                    })
                } else {
                    Some(first)
                }
            } else {
                tokio::select! {
                item = rx.recv() => item,
                _ = trim.tick() => {
                    if self
                        .stream
                        .rebuilding_since
                        .is_some_and(|t| t.elapsed() >= REBUILD_LIMIT)
                    {
                        self.stream.rebuilding_since = None;
                        warn!(
                            "the replay buffer is not rebuilt after {REBUILD_LIMIT:?}; accepting \
                             connections anyway (a client may see an event twice)"
                        );
                        self.emitter.replay_ready();
                    }
                    self.update_progress();
                    continue;
                }
                }
            };
            let Some(item) = item else {
                break;
            };
            match item {
                Replicated::Session {
                    start,
                    created,
                    discontinuity,
                } => {
                    // A new session resends every transaction not yet confirmed; anything of an
                    // unfinished transaction from the old one is void, and what was handled in
                    // an earlier session is skipped.
                    info!(%start, "replication session started");
                    self.decoder = Decoder::new();
                    // The unfinished transaction is sent again whole.
                    self.pending.clear();
                    self.state.in_transaction = false;
                    self.stream.skipping = false;
                    self.state.flushed = self.state.flushed.max(start);
                    self.emitter.streaming_from(start);
                    self.replayed = false;
                    if created || discontinuity.is_some() {
                        self.reload().await?;
                    }
                }
                Replicated::Data(batch) => {
                    let count = batch.len() as u64;
                    let mut since_yield = std::time::Instant::now();
                    for xlog in batch {
                        self.handle(xlog.payload, xlog.wal_start).await;
                        // Emitting runs without awaiting; on a large fan-out, let the writers
                        // and the feeding of sockets behind have their turn now and then.
                        if since_yield.elapsed() >= YIELD_EVERY {
                            tokio::task::yield_now().await;
                            since_yield = std::time::Instant::now();
                        }
                    }
                    self.state.handed += count;
                }
                Replicated::CaughtUp => {
                    if let Some(started) = self.stream.rebuilding_since.take() {
                        let (events, bytes, _) = self.emitter.replay_stats();
                        self.health
                            .set_replay_rebuilt(started.elapsed(), events as u64);
                        info!(
                            events,
                            bytes,
                            took_ms = started.elapsed().as_millis() as u64,
                            "replay buffer rebuilt from the slot; accepting connections"
                        );
                        self.emitter.replay_ready();
                    }
                }
            }
            self.update_progress();
        }
        Ok(())
    }

    /// Reports progress: what was handed on, and what the replay buffer still needs kept.
    /// (Events still pending belong to a transaction whose commit has not come: the position
    /// handed on is before it.)
    fn update_progress(&mut self) {
        self.state.keep = self.emitter.replay_keep_from().unwrap_or(Lsn::ZERO);
        self.health.set_handed_lsn(self.state.flushed);
        self.progress.send_replace(self.state);
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
                xid,
                commit_lsn,
                commit_time,
            } => {
                self.state.in_transaction = true;
                self.replayed = self.replay.contains(*xid, *commit_lsn);
                self.stream.skipping = *commit_lsn <= self.stream.done;
                self.stream.lsn = *commit_lsn;
                self.stream.seq = 0;
                self.stream.at_micros = commit_time.unix_micros();
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
            Change::Message(m) if !m.transactional => {
                if m.lsn <= self.stream.done {
                    return;
                }
                self.stream.lsn = m.lsn;
                self.stream.seq = 0;
                self.stream.at_micros = crate::delivery::now_micros();
            }
            _ => {}
        }
        if self.stream.skipping {
            if let Change::Commit { end_lsn, .. } = &change {
                self.stream.skipping = false;
                self.state.flushed = self.state.flushed.max(*end_lsn);
            }
            return;
        }
        let done = match &change {
            Change::Commit { .. } => Some(self.stream.lsn),
            Change::Message(m) if !m.transactional => Some(m.lsn),
            _ => None,
        };
        let mut delay = RETRY_FIRST;
        loop {
            self.ensure_client().await;
            let mut outputs = std::mem::take(&mut self.outputs);
            outputs.clear();
            match self
                .model
                .handle(&self.client, change.clone(), &mut outputs)
                .await
            {
                Ok(()) => {
                    for output in outputs.drain(..) {
                        self.output(output);
                    }
                    self.outputs = outputs;
                    break;
                }
                Err(e) if e.is_retryable() && !self.shutdown.is_cancelled() => {
                    self.outputs = outputs;
                    // Never skipped (its transaction would be confirmed without it): the
                    // pipeline holds until the database answers again.
                    warn!(%lsn, error = %e, retry_in = ?delay, "could not build events for a change; retrying");
                    // What came before the held change goes out meanwhile.
                    self.flush_pending();
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.cancelled() => {}
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                }
                Err(e) => {
                    self.outputs = outputs;
                    error!(%lsn, error = %e, "could not build events for a change; skipping it");
                    break;
                }
            }
        }
        if let Some(done) = done {
            // A commit or a message outside a transaction: what it brought goes out now.
            self.flush_pending();
            self.stream.done = self.stream.done.max(done);
        }
    }

    /// The next event's offset in the stream.
    fn next_offset(&mut self) -> Offset {
        let offset = Offset::new(self.stream.lsn, self.stream.seq);
        self.stream.seq = self.stream.seq.saturating_add(1);
        offset
    }

    /// A stream event as the delivery stage keeps it.
    fn entry(
        &mut self,
        offset: Offset,
        event: String,
        payload: crate::strapi::Payload,
        target: Target,
        rule: Option<(String, crate::strapi::Action)>,
    ) -> Entry {
        Entry {
            offset,
            offset_text: offset.to_string(),
            event,
            payload,
            target,
            rule,
            entry_id: None,
            keep_from: self.state.flushed,
            // A transaction emitted over many seconds (a burst to many sockets) keeps each of
            // its events for the whole window after it went out, for sockets that fell behind.
            at_micros: if self.stream.rebuilding_since.is_some() {
                self.stream.at_micros
            } else {
                crate::delivery::now_micros()
            },
        }
    }

    fn output(&mut self, output: ModelOutput) {
        match output {
            // The loaded tables already contain this transaction's rows, and newer ones.
            ModelOutput::Access(_) if self.replayed => {}
            ModelOutput::Access(change) => {
                let recheck = self.access.apply(change);
                self.recheck.merge(recheck);
            }
            ModelOutput::Event(event) => {
                self.flush_access_change();
                // Every event takes a position, emitted or not, so offsets stay the same
                // whatever the permissions were when it was (re)read.
                let offset = self.next_offset();
                let rule = (event.content_type.uid.clone(), event.action.clone());
                let Some(event) = strapi::limit_event(event, self.max_event_bytes) else {
                    return;
                };
                if let Some(delivery) = self.access.authorize(event) {
                    let entry_id = delivery.subject.as_ref().and_then(|s| s.entry_id);
                    let rooms = self
                        .emitter
                        .target_rooms(delivery.rooms, delivery.subject.as_ref());
                    let entry = self.entry(
                        offset,
                        delivery.event,
                        delivery.payload,
                        Target::Rooms(rooms),
                        Some(rule),
                    );
                    self.publish(Entry { entry_id, ..entry });
                }
            }
            ModelOutput::Raw(raw) => {
                self.flush_access_change();
                let offset = self.next_offset();
                if !strapi::limit_raw(&raw, self.max_event_bytes) {
                    return;
                }
                let target = match raw.rooms {
                    None => Target::Everyone,
                    Some(rooms) => Target::Rooms(rooms.into()),
                };
                let entry = self.entry(offset, raw.event, raw.data, target, None);
                self.publish(entry);
            }
            ModelOutput::Commit {
                end_lsn,
                commit_time,
            } => {
                self.flush_access_change();
                self.flush_pending();
                self.state.flushed = self.state.flushed.max(end_lsn);
                self.health.set_last_commit(commit_time.unix_micros());
            }
        }
    }

    /// Queues an event to go out with the rest of its transaction.
    fn publish(&mut self, entry: Entry) {
        self.pending.push(entry);
        if self.pending.len() >= MAX_PENDING {
            self.flush_pending();
        }
    }

    /// Emits the pending events, in order.
    fn flush_pending(&mut self) {
        if !self.pending.is_empty() {
            self.emitter
                .publish_all(std::mem::replace(&mut self.pending, Vec::with_capacity(16)));
        }
    }

    /// Sockets are re-checked once per run of access changes, before the next event goes out,
    /// and only those the changes can affect.
    fn flush_access_change(&mut self) {
        let recheck = std::mem::take(&mut self.recheck);
        if !recheck.is_empty() || recheck.subscriptions {
            // Events built under the access before the change go out before it is checked.
            self.flush_pending();
            self.emitter.send(Outgoing::AccessChanged(recheck));
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
        self.flush_access_change();
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
