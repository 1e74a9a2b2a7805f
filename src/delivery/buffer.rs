//! The replay buffer: the events of the last window, in stream order, ready to send again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::Offset;
use crate::lsn::Lsn;
use crate::strapi::{Action, Payload};

/// Who an event was for when it was emitted.
#[derive(Debug, Clone)]
pub enum Target {
    /// These rooms (role rooms, API-token rooms, or for `raw` also socket ids).
    Rooms(Arc<[String]>),
    /// Every socket (a `raw` without rooms).
    Everyone,
}

/// One emitted event, kept so that it can be sent again to a socket that missed it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its place in the stream.
    pub offset: Offset,
    /// `offset` as clients see it (the trailing string argument).
    pub offset_text: String,
    /// Socket.IO event name.
    pub event: String,
    /// The first argument, serialized once.
    pub payload: Payload,
    /// Where it went.
    pub target: Target,
    /// For content-type events, the uid and action, so a replay can check that the socket's
    /// role may still read it; `None` for `raw`.
    pub rule: Option<(String, Action)>,
    /// For content-type events about one entry, its id: a catch-up then reaches the sockets
    /// subscribed to that entry now, even if none was when the event was emitted.
    pub entry_id: Option<i64>,
    /// The position PostgreSQL may be told is flushed while this entry is kept: the end of
    /// the last transaction before this entry's one. The slot then keeps the WAL this entry
    /// came from, and a restarted bridge rebuilds the buffer from it.
    pub keep_from: Lsn,
    /// Wall-clock time (Unix µs) the window counts from: the commit time.
    pub at_micros: i64,
}

impl Entry {
    /// Bytes this entry costs, for `replay_max_bytes`: the text sent plus bookkeeping.
    pub fn cost(&self) -> usize {
        const OVERHEAD: usize = 160;
        let rooms = match &self.target {
            Target::Rooms(r) => r.iter().map(|r| r.len() + 16).sum(),
            Target::Everyone => 0,
        };
        self.payload.as_str().len()
            + self.event.len()
            + self.offset_text.len()
            + rooms
            + self.rule.as_ref().map_or(0, |(uid, _)| uid.len() + 16)
            + OVERHEAD
    }
}

/// The events of the last `window` (at most `max_bytes` of them), oldest first.
#[derive(Debug)]
pub struct ReplayBuffer {
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
    window: Duration,
    max_bytes: usize,
    /// The newest offset that may be missing: an evicted entry, or the slot's start after a
    /// restart. A socket whose position is older than this may have missed events.
    floor: Offset,
    evicted: u64,
}

/// A position older than what the buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    /// The oldest offset held, if any.
    pub oldest: Option<Offset>,
}

impl ReplayBuffer {
    /// An empty buffer trimmed to `window` and `max_bytes`, whichever is reached first.
    pub fn new(window: Duration, max_bytes: usize) -> ReplayBuffer {
        ReplayBuffer {
            entries: VecDeque::new(),
            bytes: 0,
            window,
            max_bytes,
            floor: Offset::default(),
            evicted: 0,
        }
    }

    /// Streaming (re)starts at `start`, the slot's confirmed position: what came before may be
    /// missing unless the buffer still holds it.
    pub fn streaming_from(&mut self, start: Lsn) {
        if self.entries.is_empty() {
            self.floor = self.floor.max(Offset::new(start, 0));
        }
    }

    /// Appends an event (offsets must grow) and trims.
    pub fn push(&mut self, entry: Arc<Entry>, now_micros: i64) {
        self.bytes += entry.cost();
        self.entries.push_back(entry);
        self.trim(now_micros);
    }

    /// Drops what is older than the window or beyond the byte limit.
    pub fn trim(&mut self, now_micros: i64) {
        let window = i64::try_from(self.window.as_micros()).unwrap_or(i64::MAX);
        let oldest_kept = now_micros.saturating_sub(window);
        while let Some(front) = self.entries.front() {
            if self.bytes <= self.max_bytes && front.at_micros >= oldest_kept {
                break;
            }
            self.bytes -= front.cost();
            self.floor = self.floor.max(front.offset);
            self.evicted += 1;
            self.entries.pop_front();
        }
    }

    /// The position that may be confirmed to PostgreSQL while the buffer holds events from the
    /// WAL (entries emitted from outside the stream have `keep_from` zero and need nothing kept).
    pub fn keep_from(&self) -> Option<Lsn> {
        self.entries
            .iter()
            .map(|e| e.keep_from)
            .find(|k| *k > Lsn::ZERO)
    }

    /// The oldest offset held.
    pub fn oldest(&self) -> Option<Offset> {
        self.entries.front().map(|e| e.offset)
    }

    /// The newest offset held.
    pub fn newest(&self) -> Option<Offset> {
        self.entries.back().map(|e| e.offset)
    }

    /// The newest offset that may be missing (see [`ReplayBuffer::streaming_from`]).
    pub fn floor(&self) -> Offset {
        self.floor
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held (as [`Entry::cost`] counts them).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries dropped by the window or the byte limit since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Index of the first entry after `after`, or [`TooOld`] when events after `after` may
    /// have been dropped already.
    pub fn first_after(&self, after: Offset) -> Result<usize, TooOld> {
        if after < self.floor {
            return Err(TooOld {
                oldest: self.oldest(),
            });
        }
        Ok(self.entries.partition_point(|e| e.offset <= after))
    }

    /// The entry at `index` (from [`ReplayBuffer::first_after`]).
    pub fn get(&self, index: usize) -> Option<&Arc<Entry>> {
        self.entries.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(lsn: u64, seq: u32, at: i64) -> Arc<Entry> {
        let offset = Offset::new(Lsn(lsn), seq);
        Arc::new(Entry {
            offset,
            offset_text: offset.to_string(),
            event: "message:create".to_owned(),
            payload: Payload::from_json("{\"x\":1}".to_owned()).unwrap(),
            target: Target::Everyone,
            rule: None,
            entry_id: None,
            keep_from: Lsn(lsn - 1),
            at_micros: at,
        })
    }

    #[test]
    fn finds_what_follows_a_position() {
        let mut b = ReplayBuffer::new(Duration::from_secs(60), 1 << 20);
        for (lsn, seq) in [(10, 0), (10, 1), (20, 0)] {
            b.push(entry(lsn, seq, 0), 0);
        }
        assert_eq!(b.first_after(Offset::new(Lsn(10), 0)), Ok(1));
        assert_eq!(b.first_after(Offset::new(Lsn(10), 1)), Ok(2));
        assert_eq!(b.first_after(Offset::new(Lsn(20), 0)), Ok(3));
        assert_eq!(b.first_after(Offset::default()), Ok(0));
        assert_eq!(b.keep_from(), Some(Lsn(9)));
    }

    #[test]
    fn the_window_trims_the_oldest_and_raises_the_floor() {
        let mut b = ReplayBuffer::new(Duration::from_secs(1), 1 << 20);
        b.push(entry(10, 0, 0), 0);
        b.push(entry(20, 0, 1_500_000), 1_500_000);
        assert_eq!(b.len(), 1);
        assert_eq!(b.oldest(), Some(Offset::new(Lsn(20), 0)));
        assert_eq!(b.keep_from(), Some(Lsn(19)));
        // Whoever had 10 misses nothing; whoever had less may have missed 10.
        assert_eq!(b.first_after(Offset::new(Lsn(10), 0)), Ok(0));
        assert_eq!(
            b.first_after(Offset::new(Lsn(9), 0)),
            Err(TooOld {
                oldest: Some(Offset::new(Lsn(20), 0))
            })
        );
        b.trim(10_000_000);
        assert!(b.is_empty());
        assert_eq!(b.keep_from(), None);
    }

    #[test]
    fn the_byte_limit_trims_the_oldest() {
        let one = entry(1, 0, 0).cost();
        let mut b = ReplayBuffer::new(Duration::from_secs(60), one * 2);
        for lsn in 1..=5 {
            b.push(entry(lsn, 0, 0), 0);
        }
        assert_eq!(b.len(), 2);
        assert_eq!(b.bytes(), one * 2);
        assert_eq!(b.evicted(), 3);
        assert_eq!(b.floor(), Offset::new(Lsn(3), 0));
    }

    #[test]
    fn a_restart_marks_everything_before_the_slot_as_unknown() {
        let mut b = ReplayBuffer::new(Duration::from_secs(60), 1 << 20);
        b.streaming_from(Lsn(100));
        assert!(b.first_after(Offset::new(Lsn(50), 0)).is_err());
        b.push(entry(120, 0, 0), 0);
        // A reconnect with events held changes nothing.
        b.streaming_from(Lsn(150));
        assert_eq!(b.first_after(Offset::new(Lsn(100), 0)), Ok(0));
    }
}
