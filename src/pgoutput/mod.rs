//! pgoutput decoding: bytes in, typed messages out.
//!
//! Receives the payload of each XLogData the replication client reads (one pgoutput message
//! each) and hands on [`Change`]s: `Begin`, rows with their [`Relation`], truncates, logical
//! messages, `Commit`. It keeps the relation descriptions PostgreSQL sends (cached by OID,
//! replaced on resend) and nothing else: it never buffers a transaction and never does I/O.
//! Malformed input is a [`DecodeError`], never a panic (see `fuzz/`).

mod decode;
pub mod message;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

pub use decode::decode;
pub use message::{
    Change, Column, LogicalEmit, LogicalMessage, OldRow, PgTimestamp, Relation, RelationId,
    ReplicaIdentity, RowOp, Tuple, Value,
};

/// Why a pgoutput message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before a field it announces.
    #[error(
        "pgoutput message {:?} truncated: {needed} more bytes needed at offset {offset} of {len}",
        *tag as char
    )]
    Truncated {
        /// Message tag.
        tag: u8,
        /// Where the missing field starts.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Length of the whole message.
        len: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("pgoutput message {:?} invalid at offset {offset}: {what}", *tag as char)]
    Invalid {
        /// Message tag.
        tag: u8,
        /// Where the bad field is.
        offset: usize,
        /// What was wrong.
        what: String,
    },
    /// A tag this decoder does not know (streaming and two-phase messages are never requested).
    #[error("unknown pgoutput message tag {tag:#04x} ({len} bytes)")]
    UnknownTag {
        /// The tag byte.
        tag: u8,
        /// Length of the whole message.
        len: usize,
    },
    /// A row or truncate named a relation that was never described in this session.
    #[error("pgoutput row for relation {0} that was never described")]
    UnknownRelation(u32),
    /// A row's value count differs from its relation's column count.
    #[error("row of {table} has {got} values, its relation has {want} columns")]
    ColumnCount {
        /// Table name.
        table: String,
        /// Values in the row.
        got: usize,
        /// Columns in the relation.
        want: usize,
    },
}

/// Turns a session's pgoutput messages into [`Change`]s, resolving relation OIDs.
///
/// One decoder per replication session: PostgreSQL describes every relation again after a
/// reconnect, so the cache starts empty.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<RelationId, Arc<Relation>>,
}

impl Decoder {
    /// A decoder with an empty relation cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one XLogData payload. Relation, Type and Origin messages update the cache (or
    /// are dropped) and yield `None`; everything else yields a [`Change`].
    pub fn decode(&mut self, payload: &Bytes) -> Result<Option<Change>, DecodeError> {
        let change = match decode(payload)? {
            LogicalMessage::Begin {
                final_lsn,
                commit_time,
                xid,
            } => Change::Begin {
                xid,
                commit_lsn: final_lsn,
                commit_time,
            },
            LogicalMessage::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
                ..
            } => Change::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
            },
            LogicalMessage::Origin { .. } | LogicalMessage::Type { .. } => return Ok(None),
            LogicalMessage::Relation(rel) => {
                self.relations.insert(rel.id, Arc::new(rel));
                return Ok(None);
            }
            LogicalMessage::Row { relation, op } => {
                let relation = self.relation(relation)?;
                check_width(&relation, &op)?;
                Change::Row { relation, op }
            }
            LogicalMessage::Truncate {
                cascade,
                restart_identity,
                relations,
            } => Change::Truncate {
                relations: relations
                    .into_iter()
                    .map(|id| self.relation(id))
                    .collect::<Result<_, _>>()?,
                cascade,
                restart_identity,
            },
            LogicalMessage::Message(m) => Change::Message(m),
        };
        Ok(Some(change))
    }

    /// The cached description of a relation.
    pub fn relation(&self, id: RelationId) -> Result<Arc<Relation>, DecodeError> {
        self.relations
            .get(&id)
            .cloned()
            .ok_or(DecodeError::UnknownRelation(id.0))
    }
}

fn check_width(relation: &Relation, op: &RowOp) -> Result<(), DecodeError> {
    let want = relation.columns.len();
    let tuples: [Option<&Tuple>; 2] = match op {
        RowOp::Insert { new } => [Some(new), None],
        RowOp::Update { old, new } => [Some(new), old.as_ref().map(OldRow::tuple)],
        RowOp::Delete { old } => [Some(old.tuple()), None],
    };
    for t in tuples.into_iter().flatten() {
        if t.len() != want {
            return Err(DecodeError::ColumnCount {
                table: relation.name.clone(),
                got: t.len(),
                want,
            });
        }
    }
    Ok(())
}

/// Entry point for the fuzz target: must return (with any result) for every input.
///
/// The bytes are decoded once as a single message, then read as a session: frames of a
/// big-endian `u16` length and that many bytes (the last frame takes what is left), each fed to
/// one [`Decoder`], so relation descriptions reach the rows that follow them.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let _ = decode(&Bytes::copy_from_slice(data));
    let mut decoder = Decoder::new();
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        let _ = decoder.decode(&Bytes::copy_from_slice(frame));
        rest = next;
    }
}
