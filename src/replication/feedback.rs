//! Which position to confirm to PostgreSQL as flushed.
//!
//! The pipeline's [`Progress`] says how far it has handed things on. Confirmed is
//! `progress.flushed`, except when nothing is in flight (every XLogData sent into the channel has
//! been consumed and no transaction is open): then the server's own position, as last seen in
//! data already handed on or in a keepalive, is confirmed too, so WAL that produced no change
//! for the publication (other tables, other databases, vacuum) does not stay pinned by the slot.
//! The confirmed position never moves backwards.

use super::Progress;
use crate::lsn::Lsn;

/// The confirmation state of one run.
#[derive(Debug, Default, Clone)]
pub(super) struct Feedback {
    /// Highest position reported to the server as flushed.
    confirmed: Lsn,
    /// Highest server position covered by what was handed on: `wal_end` of XLogData sent into
    /// the channel, and of keepalives read while no XLogData waited to be sent.
    server_end: Lsn,
    /// XLogData sent into the channel since the run started.
    sent: u64,
}

impl Feedback {
    /// A state that never reports below `confirmed` (the slot's position).
    #[cfg(test)]
    pub(super) fn new(confirmed: Lsn) -> Self {
        Feedback {
            confirmed,
            server_end: confirmed,
            sent: 0,
        }
    }

    /// A new session streams from `start`; positions seen in the old one no longer count.
    pub(super) fn new_session(&mut self, start: Lsn) {
        self.confirmed = self.confirmed.max(start);
        self.server_end = start;
    }

    /// `count` XLogData up to `server_end` went into the channel (or, with `count == 0`, a
    /// keepalive said the server is at `server_end` and nothing waits to be sent).
    pub(super) fn handed(&mut self, count: u64, server_end: Lsn) {
        self.sent += count;
        self.server_end = self.server_end.max(server_end);
    }

    /// XLogData sent into the channel so far.
    pub(super) fn sent(&self) -> u64 {
        self.sent
    }

    /// Whether the pipeline has consumed everything sent and is between transactions.
    pub(super) fn idle(&self, progress: &Progress) -> bool {
        progress.handed == self.sent && !progress.in_transaction
    }

    /// The position to report now: never past what the replay buffer needs kept.
    pub(super) fn flush_position(&self, progress: &Progress) -> Lsn {
        let mut position = progress.flushed;
        if self.idle(progress) {
            position = position.max(self.server_end);
        }
        if progress.keep > Lsn::ZERO {
            position = position.min(progress.keep);
        }
        position.max(self.confirmed)
    }

    /// Records that `position` was reported.
    pub(super) fn confirmed(&mut self, position: Lsn) {
        self.confirmed = self.confirmed.max(position);
    }

    /// The highest position reported so far.
    pub(super) fn last_confirmed(&self) -> Lsn {
        self.confirmed
    }

    /// The highest server position handed on in this session.
    pub(super) fn server_end(&self) -> Lsn {
        self.server_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(flushed: u64, handed: u64, in_transaction: bool) -> Progress {
        Progress {
            flushed: Lsn(flushed),
            handed,
            in_transaction,
            keep: Lsn::ZERO,
        }
    }

    #[test]
    fn the_replay_buffer_holds_confirmation_back() {
        let mut f = Feedback::new(Lsn(100));
        f.handed(10, Lsn(900));
        let mut p = progress(500, 10, false);
        p.keep = Lsn(300);
        assert_eq!(f.flush_position(&p), Lsn(300));
        // Never backwards, even if the buffer asks for less than was confirmed.
        f.confirmed(Lsn(400));
        assert_eq!(f.flush_position(&p), Lsn(400));
    }

    #[test]
    fn busy_pipeline_confirms_only_its_flushed_position() {
        let mut f = Feedback::new(Lsn(100));
        f.handed(10, Lsn(500));
        assert_eq!(f.flush_position(&progress(300, 7, false)), Lsn(300));
        assert_eq!(f.flush_position(&progress(300, 10, true)), Lsn(300));
    }

    #[test]
    fn idle_pipeline_confirms_the_server_position() {
        let mut f = Feedback::new(Lsn(100));
        f.handed(10, Lsn(500));
        assert_eq!(f.flush_position(&progress(300, 10, false)), Lsn(500));
        // A keepalive with nothing waiting moves it further.
        f.handed(0, Lsn(900));
        assert_eq!(f.flush_position(&progress(300, 10, false)), Lsn(900));
    }

    #[test]
    fn never_moves_backwards() {
        let mut f = Feedback::new(Lsn(100));
        assert_eq!(f.flush_position(&progress(50, 0, false)), Lsn(100));
        f.confirmed(Lsn(800));
        f.new_session(Lsn(400));
        assert_eq!(f.flush_position(&progress(600, 0, false)), Lsn(800));
        assert_eq!(f.last_confirmed(), Lsn(800));
    }

    #[test]
    fn a_new_session_forgets_the_old_server_position() {
        let mut f = Feedback::new(Lsn(100));
        f.handed(3, Lsn(700));
        f.new_session(Lsn(200));
        assert_eq!(f.server_end(), Lsn(200));
        assert_eq!(f.sent(), 3);
        assert_eq!(f.flush_position(&progress(150, 3, false)), Lsn(200));
    }
}
