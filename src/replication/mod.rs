//! The replication client: holds a logical replication slot and streams pgoutput.
//!
//! Speaks PostgreSQL's walsender protocol itself, on `postgres-protocol` and tokio: startup
//! with `replication=database`, authentication, TLS, `IDENTIFY_SYSTEM`, slot creation,
//! `START_REPLICATION`, then CopyBoth. It hands every XLogData on in order (in batches) and
//! keeps keepalives and status updates to itself. It confirms to PostgreSQL only what the
//! pipeline reports as handed on ([`Progress`]), and no further back than its replay buffer
//! reaches (`Progress::keep`), so a restart never loses a committed change and can rebuild the
//! buffer; it says when a session has caught up with what the server had at its start
//! ([`Replicated::CaughtUp`]), and lets a server that is shutting down have its confirmation.
//! It never decodes pgoutput beyond the XLogData header.
//!
//! Files by job: `conn` (socket, TLS, login, simple queries), `copy_both` (framing), `slot`
//! (commands before streaming), `feedback` (which position to confirm), `backoff` (reconnect
//! delays), `error`; this file holds the run loop.

mod backoff;
mod conn;
mod copy_both;
mod error;
mod feedback;
mod slot;

use std::time::Duration;

use bytes::Bytes;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

pub use error::{ReplicationError, ServerError};

use crate::config::DatabaseConfig;
use crate::health::Health;
use crate::lsn::Lsn;
use crate::pg::{self, TlsPolicy};
use backoff::Backoff;
use conn::Conn;
use copy_both::{Frame, ReplicationMessage, StatusUpdate};
use feedback::Feedback;

/// One pgoutput message as the server sent it in an XLogData (`w`) CopyData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    /// WAL position of the data (start).
    pub wal_start: Lsn,
    /// The server's current end of WAL.
    pub wal_end: Lsn,
    /// The pgoutput message.
    pub payload: Bytes,
}

/// What the replication client hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replicated {
    /// A (re)connected session starts streaming from `start`. Anything received before and not
    /// yet committed is void: PostgreSQL sends it again.
    Session {
        /// The position streaming starts from (the slot's confirmed position).
        start: Lsn,
        /// This session created the slot: nothing committed before `start` will ever be
        /// streamed, so state loaded before it may miss changes (the pipeline loads again).
        created: bool,
        /// Continuity was lost since the previous session (the slot had to be created again,
        /// or the server is another cluster): what happened, logged as an error and reported
        /// on `/readyz` and `/metrics`.
        discontinuity: Option<String>,
    },
    /// XLogData messages, in server order.
    Data(Vec<XLogData>),
    /// Everything the server had written when this session started has been handed on (a
    /// restarted bridge has rebuilt its replay buffer from the slot).
    CaughtUp,
}

/// What the pipeline reports back: how far it has handed things on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// End LSN of the last transaction fully handed on: what may be confirmed as flushed.
    pub flushed: Lsn,
    /// How many XLogData messages the pipeline has consumed since the program started.
    pub handed: u64,
    /// Whether the pipeline is inside a transaction (between Begin and Commit).
    pub in_transaction: bool,
    /// The furthest position that may be confirmed while the replay buffer holds events
    /// ([`Lsn::ZERO`]: no limit): confirmation trails by the replay window, so the slot keeps
    /// that WAL and a restarted bridge can rebuild the buffer from it.
    pub keep: Lsn,
}

/// At most this many bytes of XLogData handed on and not yet consumed by the pipeline: memory
/// between the two is bounded in bytes, whatever the size of the rows (the channel alone bounds
/// only the number of batches). A single larger message still goes through, alone.
pub const MAX_IN_FLIGHT_BYTES: u64 = 32 * 1024 * 1024;

/// A status update goes out at least this often. Half of 10 s, the smallest
/// `wal_sender_timeout` met in practice (managed services, the test clusters): the server then
/// never times the connection out, even while a slow pipeline keeps this client from reading.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// After progress moves, a status update waits this long for more progress before it goes out.
/// Confirmations then cost at most ten small messages a second under load, and the slot lags the
/// pipeline by at most 100 ms, which only matters for how much is sent again after a crash.
const STATUS_COALESCE: Duration = Duration::from_millis(100);

/// When the server has been silent this long, the next status update asks it to answer:
/// an idle walsender sends nothing on its own while it gets status updates.
const SILENCE_PROBE: Duration = STATUS_INTERVAL;

/// No byte from the server for this long, despite asking, means the connection is dead (a
/// half-open TCP connection would otherwise go unnoticed for many minutes).
const SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// How long a status update or CopyDone may take to write before the connection counts as lost.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// On shutdown, how long to wait for the pipeline to hand on what it was sent, so the final
/// confirmation covers it.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// On shutdown, how long to wait for the server to end the stream after CopyDone.
const SHUTDOWN_SERVER: Duration = Duration::from_secs(5);

/// A session that streamed this long resets the back-off: the next failure is a new incident.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// Streams the slot's changes into `out` until `shutdown` is cancelled, reconnecting after any
/// retryable failure.
///
/// Every (re)connection first sends [`Replicated::Session`], then [`Replicated::Data`] batches
/// (all XLogData of one socket read). `out` is bounded: when the pipeline is slow this client
/// stops reading and PostgreSQL keeps the WAL. `progress` is how far the pipeline has handed
/// things on; only that is confirmed to the server. `health` gets the streaming flag and the
/// server and confirmed positions.
///
/// Returns `Ok(())` after a clean shutdown (final position confirmed, stream ended), or when the
/// pipeline dropped its end of `out` or `progress`. Returns a fatal [`ReplicationError`] when
/// retrying cannot help (see [`ReplicationError::is_retryable`]).
pub async fn run(
    db: DatabaseConfig,
    out: mpsc::Sender<Replicated>,
    progress: watch::Receiver<Progress>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), ReplicationError> {
    let tls = TlsPolicy::new(pg::effective_mode(&db), db.ssl_root_cert.as_deref())
        .map_err(ReplicationError::TlsConfig)?;
    let mut runner = Runner {
        db,
        out,
        progress,
        health,
        shutdown,
        feedback: Feedback::default(),
        system_id: None,
        session_start: None,
        streamed: false,
        catch_up_to: None,
        pings: PingRun::default(),
        timeline: None,
        in_flight: InFlight::default(),
    };
    let mut backoff = Backoff::default();
    loop {
        let mut streamed_since = None;
        let result = runner.session(&tls, &mut streamed_since).await;
        runner.health.set_streaming(false);
        let err = match result {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if !err.is_retryable() {
            return Err(err);
        }
        // `/readyz` says why it is not ready.
        runner.health.set_waiting(Some(err.to_string()));
        if streamed_since.is_some_and(|t: Instant| t.elapsed() >= BACKOFF_RESET_AFTER) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        if let ReplicationError::SlotActive { .. } = err {
            tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64,
                "waiting for the replication slot to be released");
        } else {
            tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64,
                "replication interrupted; reconnecting");
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = runner.shutdown.cancelled() => return Ok(()),
        }
    }
}

/// An XLogData batch (or the session marker) read but not yet accepted by the channel.
struct Pending {
    item: Replicated,
    /// Hand on [`Replicated::CaughtUp`] after `item`.
    then_caught_up: bool,
    /// XLogData in `item`.
    count: u64,
    /// Highest server position in the read that produced `item`.
    server_end: Lsn,
    /// Payload bytes of the XLogData in `item`.
    bytes: u64,
}

/// When to send the next status update.
struct Clock {
    last_status: Instant,
    /// Progress or the server position moved since the last status update.
    dirty: bool,
    /// Last time the server was heard (or reading resumed after waiting for the pipeline).
    last_heard: Instant,
}

impl Clock {
    fn deadline(&self) -> Instant {
        self.last_status
            + if self.dirty {
                STATUS_COALESCE
            } else {
                STATUS_INTERVAL
            }
    }
}

struct Runner {
    db: DatabaseConfig,
    out: mpsc::Sender<Replicated>,
    progress: watch::Receiver<Progress>,
    health: Health,
    shutdown: CancellationToken,
    feedback: Feedback,
    system_id: Option<String>,
    /// How the session being set up starts: created the slot, and any discontinuity.
    session_start: Option<(bool, Option<String>)>,
    /// A session of this run has streamed: a slot created later was lost in between.
    streamed: bool,
    /// The server's WAL position when this session started; reaching it means caught up.
    catch_up_to: Option<Lsn>,
    /// Keepalives asking for a reply, back to back at the same position: how a walsender
    /// waits, while the server shuts down, for everything it sent to be confirmed.
    pings: PingRun,
    /// The timeline of the last session's server: it moves when a standby is promoted.
    timeline: Option<String>,
    /// Bytes handed on that the pipeline has not consumed yet.
    in_flight: InFlight,
}

/// The bytes of XLogData handed on and not yet consumed, learnt from [`Progress::handed`]
/// (the count of messages the pipeline consumed), which every consumer reports.
#[derive(Debug, Default)]
struct InFlight {
    /// Messages handed on since the start.
    sent: u64,
    /// Per batch handed on and not yet consumed: the `sent` count at its end, and its bytes.
    batches: std::collections::VecDeque<(u64, u64)>,
    bytes: u64,
}

impl InFlight {
    fn sent(&mut self, count: u64, bytes: u64) {
        if count == 0 {
            return;
        }
        self.sent += count;
        self.batches.push_back((self.sent, bytes));
        self.bytes += bytes;
    }

    /// Forgets what the pipeline consumed; whether more may be handed on now.
    fn has_room(&mut self, consumed: u64) -> bool {
        while let Some(&(end, bytes)) = self.batches.front() {
            if end > consumed {
                break;
            }
            self.batches.pop_front();
            self.bytes -= bytes;
        }
        self.bytes < MAX_IN_FLIGHT_BYTES
    }
}

/// A run of reply-requesting keepalives at one position, each right after the last.
#[derive(Debug, Default)]
struct PingRun {
    at: Lsn,
    count: u32,
    last: Option<Instant>,
}

/// Back-to-back reply requests at one position that mean "the server is shutting down": the
/// walsender then waits until everything it sent is confirmed, and asks again after each
/// answer. Normal keepalives ask at most every `wal_sender_timeout / 2`.
const STOPPING_PINGS: u32 = 3;

impl PingRun {
    /// A reply-requesting keepalive at `at`.
    fn ping(&mut self, at: Lsn) {
        let quick = self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_millis(1000));
        if quick && at == self.at {
            self.count += 1;
        } else {
            self.count = 1;
        }
        self.at = at;
        self.last = Some(Instant::now());
    }

    /// Data arrived: not a shutdown.
    fn reset(&mut self) {
        self.count = 0;
    }

    fn server_stopping(&self) -> bool {
        self.count >= STOPPING_PINGS
    }
}

impl Runner {
    /// One connection: set up, stream, and on shutdown end cleanly. `Ok` means stop running.
    async fn session(
        &mut self,
        tls: &TlsPolicy,
        streamed_since: &mut Option<Instant>,
    ) -> Result<(), ReplicationError> {
        let shutdown = self.shutdown.clone();
        let (mut conn, start) = tokio::select! {
            setup = self.setup(tls) => setup?,
            () = shutdown.cancelled() => return Ok(()),
        };
        *streamed_since = Some(Instant::now());
        self.stream(&mut conn, start).await?;
        conn.terminate().await;
        Ok(())
    }

    /// Connects and runs everything up to CopyBoth. Returns the connection and the position
    /// streaming starts from.
    async fn setup(&mut self, tls: &TlsPolicy) -> Result<(Conn, Lsn), ReplicationError> {
        let db = &self.db;
        let mut conn = Conn::connect(db, tls).await?;
        let reclassify = |e: ReplicationError| match e {
            ReplicationError::Server(e) => conn::classify(e, db),
            other => other,
        };
        let system = slot::identify_system(&mut conn).await.map_err(reclassify)?;
        let mut discontinuity = None;
        if let Some(previous) = &self.system_id
            && previous != &system.system_id
        {
            discontinuity = Some(format!(
                "connected to another PostgreSQL cluster than before (system id {previous}, now \
                 {}): a restore or a failover to a server that is not a copy",
                system.system_id
            ));
        }
        let streamed_before = self.streamed;
        self.system_id = Some(system.system_id.clone());
        self.catch_up_to = Some(system.xlog_pos);
        let version = slot::check_server(&mut conn).await.map_err(reclassify)?;
        let dbname = if system.dbname.is_empty() {
            db.pg.get_dbname().unwrap_or_default().to_owned()
        } else {
            system.dbname.clone()
        };
        slot::check_publication(&mut conn, db, &dbname)
            .await
            .map_err(reclassify)?;
        let found = slot::ensure_slot(&mut conn, db, &dbname, version)
            .await
            .map_err(reclassify)?;
        if found.created && streamed_before && discontinuity.is_none() {
            discontinuity = Some(format!(
                "the replication slot {} was gone and had to be created again at {} (dropped, \
                 invalidated, or a failover to a server without it): changes committed between \
                 the last confirmed position {} and it were never seen",
                db.slot,
                found.confirmed_flush,
                self.feedback.last_confirmed()
            ));
        } else if found.created {
            tracing::info!(slot = %db.slot, at = %found.confirmed_flush,
                "created the replication slot");
        } else {
            slot::check_slot_state(&mut conn, db, version)
                .await
                .map_err(reclassify)?;
        }
        if let Some(what) = &discontinuity {
            tracing::error!(slot = %db.slot, "replication discontinuity: {what}; reloading the \
                content types and access data");
            self.health.report_discontinuity(what.clone());
        }
        self.session_start = Some((found.created, discontinuity));
        note_failover(
            &mut self.timeline,
            &conn,
            &system,
            found.created,
            &db.slot,
            self.feedback.last_confirmed(),
        );
        conn.start_copy_both(&slot::start_replication_command(
            &db.slot,
            &db.publication,
            version,
        ))
        .await
        .map_err(reclassify)?;
        tracing::info!(
            target_db = %conn.target,
            slot = %db.slot,
            publication = %db.publication,
            start = %found.confirmed_flush,
            server_wal = %system.xlog_pos,
            timeline = %system.timeline,
            tls = conn.tls,
            walsender_pid = conn.backend_pid,
            "streaming changes"
        );
        Ok((conn, found.confirmed_flush))
    }

    /// CopyBoth: read, hand on, confirm, until shutdown (Ok) or a failure (Err).
    async fn stream(&mut self, conn: &mut Conn, start: Lsn) -> Result<(), ReplicationError> {
        self.feedback.new_session(start);
        self.health.new_session(start);
        self.health.set_waiting(None);
        self.streamed = true;
        self.health.set_streaming(true);
        let shutdown = self.shutdown.clone();
        // A handle of our own: a reserved slot borrows the sender while `self` is used.
        let out = self.out.clone();
        let (created, discontinuity) = self.session_start.take().unwrap_or_default();
        let mut pending = Some(Pending {
            item: Replicated::Session {
                start,
                created,
                discontinuity,
            },
            then_caught_up: false,
            count: 0,
            server_end: start,
            bytes: 0,
        });
        let now = Instant::now();
        let mut clock = Clock {
            last_status: now,
            dirty: true,
            last_heard: now,
        };
        loop {
            let deadline = self.status_deadline(&clock);
            let consumed = self.progress.borrow().handed;
            let room = self.in_flight.has_room(consumed);
            tokio::select! {
                () = shutdown.cancelled() => return self.finish(conn, true).await,
                permit = out.reserve(), if pending.is_some() && room => {
                    let Ok(permit) = permit else {
                        tracing::debug!("the pipeline closed its input; ending the stream");
                        return self.finish(conn, false).await;
                    };
                    if let Some(p) = pending.take() {
                        permit.send(p.item);
                        self.in_flight.sent(p.count, p.bytes);
                        self.feedback.handed(p.count, p.server_end);
                        if p.then_caught_up {
                            pending = Some(Pending {
                                item: Replicated::CaughtUp,
                                then_caught_up: false,
                                count: 0,
                                server_end: p.server_end,
                                bytes: 0,
                            });
                        }
                    }
                    // Nothing was read while the pipeline was full; the server was not silent.
                    clock.last_heard = Instant::now();
                    clock.dirty = true;
                }
                read = conn.read_more(), if pending.is_none() => {
                    read?;
                    clock.last_heard = Instant::now();
                    let reply_requested = self.take_frames(conn, &mut pending)?;
                    if reply_requested {
                        self.send_status(conn, false).await?;
                        clock.last_status = Instant::now();
                        clock.dirty = false;
                    } else {
                        clock.dirty = true;
                    }
                }
                changed = self.progress.changed() => {
                    if changed.is_err() {
                        tracing::debug!("the pipeline dropped its progress; ending the stream");
                        return self.finish(conn, false).await;
                    }
                    clock.dirty = true;
                }
                () = sleep_until(deadline) => {}
            }
            // Checked after every event, so a stream that always has data to read still
            // confirms on time.
            if Instant::now() >= self.status_deadline(&clock) {
                self.tick(conn, &mut clock, pending.is_none()).await?;
            }
        }
    }

    /// When the next status update is due: soon while not caught up (each one asks the server
    /// for its position).
    fn status_deadline(&self, clock: &Clock) -> Instant {
        if self.catch_up_to.is_some() {
            clock.last_status + STATUS_COALESCE
        } else {
            clock.deadline()
        }
    }

    /// The status-update timer fired: confirm if the position moved or the interval elapsed,
    /// probe a silent server, and give up on one silent for too long.
    async fn tick(
        &mut self,
        conn: &mut Conn,
        clock: &mut Clock,
        reading: bool,
    ) -> Result<(), ReplicationError> {
        let silent = clock.last_heard.elapsed();
        if reading && silent >= SILENCE_LIMIT {
            return Err(conn.lost(format!(
                "no message from the server for {} s",
                silent.as_secs()
            )));
        }
        // Until caught up, every status update asks for a keepalive: its position says when
        // the server has sent everything it had at the start.
        let probe = reading && (silent >= SILENCE_PROBE || self.catch_up_to.is_some());
        let position = self.feedback.flush_position(&self.progress.borrow());
        if probe
            || position > self.feedback.last_confirmed()
            || clock.last_status.elapsed() >= STATUS_INTERVAL
        {
            self.send_status(conn, probe).await?;
            clock.last_status = Instant::now();
        }
        clock.dirty = false;
        Ok(())
    }

    /// Splits what was read into XLogData (a pending batch) and keepalives. Returns whether the
    /// server asked for an immediate status update.
    fn take_frames(
        &mut self,
        conn: &mut Conn,
        pending: &mut Option<Pending>,
    ) -> Result<bool, ReplicationError> {
        let mut batch = Vec::new();
        let mut server_end = Lsn::ZERO;
        let mut reply_requested = false;
        let mut caught_up = false;
        while let Some(frame) =
            copy_both::next_frame(&mut conn.read_buf).map_err(ReplicationError::Protocol)?
        {
            match frame {
                Frame::CopyData(data) => {
                    match copy_both::parse_copy_data(data).map_err(ReplicationError::Protocol)? {
                        ReplicationMessage::XLogData(x) => {
                            server_end = server_end.max(x.wal_end);
                            self.pings.reset();
                            batch.push(x);
                        }
                        ReplicationMessage::Keepalive(k) => {
                            server_end = server_end.max(k.wal_end);
                            reply_requested |= k.reply_requested;
                            if k.reply_requested {
                                self.pings.ping(k.wal_end);
                            }
                            // The server has sent everything up to `wal_end`: once that covers
                            // what it had when the session started, the stream is caught up.
                            if self.catch_up_to.is_some_and(|to| k.wal_end >= to) {
                                self.catch_up_to = None;
                                caught_up = true;
                            }
                        }
                    }
                }
                Frame::Other(Message::ErrorResponse(body)) => {
                    return Err(conn::classify(conn::server_error(&body), &self.db));
                }
                Frame::Other(Message::NoticeResponse(_) | Message::ParameterStatus(_)) => {}
                // A walsender that stops (server shutdown, slot dropped) ends the COPY; during a
                // shutdown it sends CommandComplete once everything sent was acknowledged.
                Frame::Other(
                    Message::CopyDone | Message::CommandComplete(_) | Message::ReadyForQuery(_),
                ) => {
                    return Err(conn.lost("the server ended the replication stream".to_owned()));
                }
                Frame::Other(other) => {
                    return Err(ReplicationError::Protocol(format!(
                        "{} during streaming",
                        copy_both::message_name(&other)
                    )));
                }
                Frame::CopyBothResponse => {
                    return Err(ReplicationError::Protocol(
                        "CopyBothResponse during streaming".to_owned(),
                    ));
                }
            }
        }
        if server_end > Lsn::ZERO {
            self.health.set_server_lsn(server_end);
        }
        if batch.is_empty() {
            // Keepalives only: nothing waits to be handed on, so their position counts now.
            self.feedback.handed(0, server_end);
            if caught_up {
                *pending = Some(Pending {
                    item: Replicated::CaughtUp,
                    then_caught_up: false,
                    count: 0,
                    server_end,
                    bytes: 0,
                });
            }
        } else {
            *pending = Some(Pending {
                count: batch.len() as u64,
                bytes: batch.iter().map(|x| x.payload.len() as u64).sum(),
                item: Replicated::Data(batch),
                then_caught_up: caught_up,
                server_end,
            });
        }
        Ok(reply_requested)
    }

    /// Sends a standby status update with the position [`Feedback`] allows.
    async fn send_status(
        &mut self,
        conn: &mut Conn,
        reply_requested: bool,
    ) -> Result<(), ReplicationError> {
        let mut progress = *self.progress.borrow();
        if self.pings.server_stopping() && progress.keep > Lsn::ZERO {
            // The server waits for this to shut down: confirm what was handed on. The replay
            // buffer in memory still holds the window; only a restart of the bridge before
            // the server is back loses the WAL for it.
            tracing::info!("the server is shutting down; confirming everything handed on");
            progress.keep = Lsn::ZERO;
        }
        let flushed = self.feedback.flush_position(&progress);
        let update = StatusUpdate {
            written: flushed.max(self.feedback.server_end()),
            flushed,
            applied: flushed,
            now: copy_both::pg_now(),
            reply_requested,
        };
        copy_both::put_status_update(conn.buffer(), &update);
        timeout(WRITE_TIMEOUT, conn.flush())
            .await
            .map_err(|_| conn.lost("a status update could not be written".to_owned()))??;
        self.feedback.confirmed(flushed);
        self.health.set_confirmed_lsn(flushed);
        tracing::trace!(%flushed, reply_requested, "status update sent");
        Ok(())
    }

    /// Ends the stream on shutdown: waits (bounded) for the pipeline to hand on everything sent
    /// when `drain`, confirms the final position, and exchanges CopyDone with the server.
    /// Failures here are logged, not returned: the process is stopping either way, and whatever
    /// was not confirmed is sent again next time.
    async fn finish(&mut self, conn: &mut Conn, drain: bool) -> Result<(), ReplicationError> {
        self.health.set_streaming(false);
        if drain {
            self.drain(conn).await;
        }
        match self.end_stream(conn).await {
            Ok(()) => tracing::info!(confirmed = %self.feedback.last_confirmed(),
                "replication stream ended"),
            Err(e) => tracing::warn!(error = %e, confirmed = %self.feedback.last_confirmed(),
                "the replication stream did not end cleanly"),
        }
        Ok(())
    }

    /// Waits until the pipeline has handed on everything sent, at most [`SHUTDOWN_DRAIN`].
    /// Status updates keep going meanwhile (nothing is read now, so the server's keepalive
    /// requests go unseen), or the server would time the connection out before the final one.
    async fn drain(&mut self, conn: &mut Conn) {
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        loop {
            let handed = self.progress.borrow_and_update().handed;
            if handed >= self.feedback.sent() {
                return;
            }
            if self.send_status(conn, false).await.is_err() {
                return;
            }
            let next_status = Instant::now() + STATUS_INTERVAL;
            tokio::select! {
                changed = self.progress.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = sleep_until(next_status) => {}
                () = sleep_until(deadline) => {
                    tracing::warn!(
                        sent = self.feedback.sent(),
                        handed,
                        "the pipeline did not hand on everything before shutdown; the rest is \
                         sent again next time"
                    );
                    return;
                }
            }
        }
    }

    async fn end_stream(&mut self, conn: &mut Conn) -> Result<(), ReplicationError> {
        self.send_status(conn, false).await?;
        frontend::copy_done(conn.buffer());
        timeout(WRITE_TIMEOUT, conn.flush())
            .await
            .map_err(|_| conn.lost("CopyDone could not be written".to_owned()))??;
        let wait_for_server = async {
            loop {
                match conn.read_message().await? {
                    // Data sent before the server saw CopyDone: not handed on, so not
                    // confirmed; it comes again next time.
                    Frame::CopyData(_) => {}
                    Frame::Other(Message::ReadyForQuery(_)) => return Ok(()),
                    Frame::Other(Message::ErrorResponse(body)) => {
                        return Err(ReplicationError::Server(conn::server_error(&body)));
                    }
                    Frame::Other(_) | Frame::CopyBothResponse => {}
                }
            }
        };
        timeout(SHUTDOWN_SERVER, wait_for_server)
            .await
            .map_err(|_| ReplicationError::ConnectionLost {
                target: self.db.display_target(),
                reason: "the server did not end the stream after CopyDone".to_owned(),
            })?
    }
}

/// Reports a failover seen at reconnect: the server's timeline moved (a standby was
/// promoted), and whether the slot came along. A slot created again after an earlier
/// session had one is an error: what was committed between the last confirmed position and
/// the new slot's start is not sent (the pipeline handles that discontinuity).
fn note_failover(
    timeline: &mut Option<String>,
    conn: &Conn,
    system: &slot::System,
    created: bool,
    slot: &str,
    last_confirmed: Lsn,
) {
    let previous = timeline.replace(system.timeline.clone());
    let Some(previous) = previous else {
        return;
    };
    if created {
        tracing::error!(
            host = %conn.target,
            slot = %slot,
            last_confirmed = %last_confirmed,
            timeline_before = %previous,
            timeline_now = %system.timeline,
            "the replication slot was missing on this server, so it was created again: \
             after a failover the new primary has the slot only on PostgreSQL 17+ with \
             failover slots synchronised to the standby (sync_replication_slots); changes \
             committed since the last confirmed position are not sent"
        );
    } else if previous != system.timeline {
        tracing::warn!(
            host = %conn.target,
            slot = %slot,
            timeline_before = %previous,
            timeline_now = %system.timeline,
            "the server is on a new timeline (a standby was promoted); the replication slot \
             was carried over, streaming continues from its confirmed position"
        );
    }
}

#[cfg(test)]
mod in_flight_tests {
    use super::{InFlight, MAX_IN_FLIGHT_BYTES};

    #[test]
    fn bytes_handed_on_are_bounded_until_the_pipeline_consumes_them() {
        let mut f = InFlight::default();
        assert!(f.has_room(0));
        // Two batches of 3 and 2 messages, together at the bound.
        f.sent(3, MAX_IN_FLIGHT_BYTES / 2);
        f.sent(0, 0);
        f.sent(2, MAX_IN_FLIGHT_BYTES / 2);
        assert!(!f.has_room(0), "full until the pipeline consumes");
        assert!(!f.has_room(2), "the first batch is not consumed whole yet");
        assert!(f.has_room(3), "the first batch consumed frees its bytes");
        assert!(f.has_room(5));
        assert_eq!(f.bytes, 0);
        // One message larger than the bound still goes, alone.
        f.sent(1, MAX_IN_FLIGHT_BYTES * 3);
        assert!(!f.has_room(5));
        assert!(f.has_room(6));
    }
}
