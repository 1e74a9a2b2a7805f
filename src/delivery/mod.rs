//! Delivery: offsets, the replay buffer and per-socket positions, between `access` and `io`.
//!
//! Receives every event the pipeline emits, in stream order, with its [`Offset`] (from the
//! WAL). It keeps them, serialized, with the rooms they went to, for `[delivery]
//! replay_window` or `replay_max_bytes`, whichever is reached first ([`ReplayBuffer`]), and
//! tells the pipeline which position may be confirmed to PostgreSQL so that the slot keeps
//! the WAL of what the buffer holds ([`ReplayBuffer::keep_from`]): a restarted bridge rebuilds
//! the buffer from the slot. It tracks sockets that are behind the live stream ([`Behind`]: a
//! client that reconnected with `auth.offset`, or one whose send queue was full) and feeds
//! them from the buffer, in order, until they reach the live stream, or tells them to resync
//! when what they missed is gone. It never decides who may read what (the caller checks that
//! for every entry it sends) and never talks to sockets itself.

mod buffer;
mod offset;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

pub use buffer::{Entry, ReplayBuffer, Target, TooOld};
pub use offset::{Offset, ParseOffsetError};

/// Default `[delivery] replay_window`: socket.io's own recovery window
/// (`maxDisconnectionDuration`), long enough for a deploy or a network change.
pub const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(120);

/// Default `[delivery] replay_max_bytes`: a bound on the buffer's memory (and on the WAL a
/// burst keeps) whatever the write rate.
pub const DEFAULT_REPLAY_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The event a socket gets when events it should have received are no longer held.
pub const RESYNC_EVENT: &str = "strapi-io:resync";

/// `[delivery]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// How long emitted events stay available for replay.
    pub replay_window: Duration,
    /// How many bytes of events stay available for replay at most.
    pub replay_max_bytes: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            replay_window: DEFAULT_REPLAY_WINDOW,
            replay_max_bytes: DEFAULT_REPLAY_MAX_BYTES,
        }
    }
}

/// Parses a duration like `2m`, `90s`, `500ms` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("expected a number and a unit like \"2m\" or \"90s\"; got {text:?}")
    })?;
    let per = match unit.trim() {
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" | "min" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => {
            return Err(format!(
                "unknown unit in {text:?}; use ms, s, m or h, like \"2m\""
            ));
        }
    };
    per.checked_mul(u32::try_from(n).map_err(|_| format!("{text:?} is too long"))?)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Parses a size like `64MiB`, `512KiB`, `1GiB`, `100MB` or a plain number of bytes.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: usize = number
        .parse()
        .map_err(|_| format!("expected a size like \"64MiB\"; got {text:?}"))?;
    let per: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "unknown unit in {text:?}; use B, KiB, MiB, GiB, kB, MB or GB, like \"64MiB\""
            ));
        }
    };
    n.checked_mul(per)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Now, as Unix microseconds (the clock the window is measured on).
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A socket that does not take live events for now: it gets the buffer's events after
/// `after`, in order, and then goes live.
#[derive(Debug, Clone)]
pub struct Behind {
    /// The socket has every event up to here (that it may receive).
    pub after: Offset,
    /// The offset the client asked for, as it sent it (for `strapi-io:resync`).
    pub asked: String,
    /// Whether the socket can be written to yet (its CONNECT was sent).
    pub started: bool,
    /// When it fell behind (a socket that never started is forgotten after a while).
    pub since: Instant,
    /// The client sent an offset this bridge cannot read: it gets `strapi-io:resync`.
    pub unreadable: bool,
}

impl Behind {
    /// A socket that has everything up to `after`.
    pub fn new(after: Offset, asked: String, started: bool) -> Behind {
        Behind {
            after,
            asked,
            started,
            since: Instant::now(),
            unreadable: false,
        }
    }
}

/// What happened to one entry offered to a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Queued for the socket.
    Queued,
    /// Not for this socket (its identity may not receive it).
    NotForIt,
    /// The socket's queue is full: try again later.
    Full,
    /// The socket is gone.
    Gone,
}

/// Where feeding a socket from the buffer left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fed {
    /// It has everything: it may take live events again.
    CaughtUp,
    /// Its queue filled up (or the step limit was reached): feed it again later.
    StillBehind,
    /// Events it should have had are gone: send it [`RESYNC_EVENT`].
    TooOld {
        /// The offset it asked for.
        asked: String,
        /// The oldest offset held.
        oldest: Option<Offset>,
    },
    /// The socket is gone.
    Gone,
}

/// Counts for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplayStats {
    /// Events sent from the buffer (catch-up after a reconnect, slow sockets).
    pub replayed: u64,
    /// `strapi-io:resync` sent.
    pub resyncs: u64,
    /// Sockets that fell behind because their queue was full.
    pub fell_behind: u64,
}

/// The buffer and the sockets behind, under one lock: emitting live and feeding from the
/// buffer take it in turn, so a socket switching from one to the other sees no gap and no
/// duplicate.
#[derive(Debug)]
pub struct Replay<K> {
    /// The events of the window.
    pub buffer: ReplayBuffer,
    /// Sockets that take no live events now (hashed fast: checked for every event to every
    /// socket).
    pub behind: HashMap<K, Behind, foldhash::fast::RandomState>,
    /// Counts for `/metrics`.
    pub stats: ReplayStats,
}

impl<K: Eq + Hash + Clone> Replay<K> {
    /// Feeds one socket from the buffer: at most `max` entries, each through `send`.
    pub fn feed(
        &mut self,
        behind: &mut Behind,
        max: usize,
        mut send: impl FnMut(&Entry) -> Sent,
    ) -> Fed {
        if behind.unreadable {
            behind.unreadable = false;
            return Fed::TooOld {
                asked: behind.asked.clone(),
                oldest: self.buffer.oldest(),
            };
        }
        let start = match self.buffer.first_after(behind.after) {
            Ok(i) => i,
            Err(TooOld { oldest }) => {
                return Fed::TooOld {
                    asked: behind.asked.clone(),
                    oldest,
                };
            }
        };
        for i in start..start.saturating_add(max) {
            let Some(entry) = self.buffer.get(i) else {
                return Fed::CaughtUp;
            };
            match send(entry) {
                Sent::Queued => {
                    self.stats.replayed += 1;
                    behind.after = entry.offset;
                }
                Sent::NotForIt => behind.after = entry.offset,
                Sent::Full => return Fed::StillBehind,
                Sent::Gone => return Fed::Gone,
            }
        }
        if self.buffer.get(start.saturating_add(max)).is_none() {
            Fed::CaughtUp
        } else {
            Fed::StillBehind
        }
    }
}

/// The shared delivery state: the [`Replay`] under a lock, and whether the buffer is rebuilt
/// (after a start, sockets wait for that before they are let in).
#[derive(Debug)]
pub struct Hub<K> {
    replay: Mutex<Replay<K>>,
    ready: watch::Sender<bool>,
    config: DeliveryConfig,
}

impl<K: Eq + Hash + Clone> Hub<K> {
    /// An empty hub, ready (see [`Hub::set_rebuilding`]).
    pub fn new(config: DeliveryConfig) -> Arc<Hub<K>> {
        Arc::new(Hub {
            replay: Mutex::new(Replay {
                buffer: ReplayBuffer::new(config.replay_window, config.replay_max_bytes),
                behind: HashMap::default(),
                stats: ReplayStats::default(),
            }),
            ready: watch::Sender::new(true),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> DeliveryConfig {
        self.config
    }

    /// The state, locked. Never hold it across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, Replay<K>> {
        self.replay.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The buffer holds everything the slot had: catch-up requests can be served.
    pub fn set_ready(&self) {
        self.ready.send_if_modified(|r| !std::mem::replace(r, true));
    }

    /// The buffer is being rebuilt from the slot: handshakes wait.
    pub fn set_rebuilding(&self) {
        self.ready.send_replace(false);
    }

    /// Whether the buffer is rebuilt.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the buffer is rebuilt, at most `limit`; `false` if it is not by then.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let mut rx = self.ready.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;
    use crate::strapi::Payload;

    fn push(replay: &mut Replay<u32>, lsn: u64) {
        let offset = Offset::new(Lsn(lsn), 0);
        replay.buffer.push(
            Arc::new(Entry {
                offset,
                offset_text: offset.to_string(),
                event: "e".to_owned(),
                payload: Payload::from_json("1".to_owned()).unwrap(),
                target: Target::Everyone,
                rule: None,
                entry_id: None,
                keep_from: Lsn(lsn - 1),
                at_micros: now_micros(),
            }),
            now_micros(),
        );
    }

    #[test]
    fn parses_durations_and_sizes() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("m").is_err());
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("64 MegaBytes").is_err());
    }

    #[test]
    fn feeding_stops_at_a_full_queue_and_resumes_in_order() {
        let hub = Hub::<u32>::new(DeliveryConfig::default());
        let mut replay = hub.lock();
        for lsn in 1..=5 {
            push(&mut replay, lsn * 10);
        }
        let mut got = Vec::new();
        let mut behind = Behind::new(Offset::new(Lsn(10), 0), String::new(), true);
        let fed = replay.feed(&mut behind, 100, |e| {
            if got.len() == 2 {
                return Sent::Full;
            }
            got.push(e.offset.lsn.0);
            Sent::Queued
        });
        assert_eq!(fed, Fed::StillBehind);
        let fed = replay.feed(&mut behind, 100, |e| {
            got.push(e.offset.lsn.0);
            Sent::Queued
        });
        assert_eq!(fed, Fed::CaughtUp);
        assert_eq!(got, [20, 30, 40, 50]);
        assert_eq!(replay.stats.replayed, 4);
    }

    #[test]
    fn a_position_before_the_window_is_too_old() {
        let hub = Hub::<u32>::new(DeliveryConfig::default());
        let mut replay = hub.lock();
        replay.buffer.streaming_from(Lsn(100));
        push(&mut replay, 200);
        let mut behind = Behind::new(Offset::new(Lsn(50), 0), "asked".to_owned(), true);
        assert_eq!(
            replay.feed(&mut behind, 10, |_| Sent::Queued),
            Fed::TooOld {
                asked: "asked".to_owned(),
                oldest: Some(Offset::new(Lsn(200), 0))
            }
        );
    }
}
