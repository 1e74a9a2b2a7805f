//! The replication client: holds a logical replication slot and streams pgoutput.
//!
//! Speaks PostgreSQL's walsender protocol itself, on `postgres-protocol` and tokio: startup
//! with `replication=database`, authentication, TLS, `IDENTIFY_SYSTEM`, slot creation,
//! `START_REPLICATION`, then CopyBoth. It hands every XLogData on in order (in batches) and
//! keeps keepalives and status updates to itself. It confirms to PostgreSQL only what the
//! pipeline reports as handed on ([`Progress`]), so a restart never loses a committed change.
//! It never decodes pgoutput beyond the XLogData header.

use bytes::Bytes;

use crate::lsn::Lsn;

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
    },
    /// XLogData messages, in server order.
    Data(Vec<XLogData>),
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
}
