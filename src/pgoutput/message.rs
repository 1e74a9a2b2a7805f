//! The typed messages pgoutput sends, as this crate hands them on.
//!
//! Two layers: [`LogicalMessage`] is one decoded wire message, relations still named by OID;
//! [`Change`] is what the rest of the pipeline receives, each row carrying its [`Relation`].

use std::sync::Arc;

use bytes::Bytes;

use crate::lsn::Lsn;

/// PostgreSQL's object id of a table (`pg_class.oid`); pgoutput names relations by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelationId(pub u32);

/// Microseconds since 2000-01-01 00:00:00 UTC, PostgreSQL's timestamp epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// Seconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
    pub const UNIX_OFFSET_SECS: i64 = 946_684_800;

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        self.0.saturating_add(Self::UNIX_OFFSET_SECS * 1_000_000)
    }
}

/// Which old values PostgreSQL logs for UPDATE and DELETE (`ALTER TABLE … REPLICA IDENTITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key only. UPDATE carries no old row unless the key changed; DELETE
    /// carries only the key.
    Default,
    /// `n`: nothing. UPDATE and DELETE cannot be published for such a table.
    Nothing,
    /// `f`: the whole old row, on every UPDATE and DELETE.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

/// One column of a relation as pgoutput describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name (`attname`), e.g. `published_at`.
    pub name: String,
    /// Type OID (`atttypid`), e.g. 1114 for `timestamp without time zone`.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`), -1 when none.
    pub type_modifier: i32,
    /// Part of the replica identity (flag bit 1 in the Relation message).
    pub is_key: bool,
}

/// A table as pgoutput last described it. Sent before the first row of a table in a session
/// and again after its schema changes; cached by OID and replaced on every resend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The table's OID.
    pub id: RelationId,
    /// Schema name; pgoutput sends "" for `pg_catalog`, kept as sent.
    pub namespace: String,
    /// Table name, e.g. `messages`.
    pub name: String,
    /// What old values UPDATE/DELETE of this table carry.
    pub replica_identity: ReplicaIdentity,
    /// Columns in table order; tuple values are in this order.
    pub columns: Vec<Column>,
}

impl Relation {
    /// A description made outside the stream (rows read with SQL, tests): columns in order with
    /// their type OIDs, no type modifiers, `id` as the key.
    pub fn described(
        id: RelationId,
        namespace: &str,
        name: &str,
        replica_identity: ReplicaIdentity,
        columns: &[(&str, u32)],
    ) -> Relation {
        Relation {
            id,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            replica_identity,
            columns: columns
                .iter()
                .map(|(column, type_oid)| Column {
                    name: (*column).to_owned(),
                    type_oid: *type_oid,
                    type_modifier: -1,
                    is_key: *column == "id",
                })
                .collect(),
        }
    }

    /// Index of the column named `name`, if the table has it.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// One column value inside a row, exactly as pgoutput sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `n`: SQL NULL.
    Null,
    /// `t`: the value in PostgreSQL's text output format (what `psql` prints).
    Text(Bytes),
    /// `b`: the value in binary format (only with the `binary` option, which the bridge does not
    /// request).
    Binary(Bytes),
    /// `u`: an unchanged TOASTed value that PostgreSQL did not send. It is not NULL and not
    /// empty: the real value is in the old row (REPLICA IDENTITY FULL) or in the table.
    UnchangedToast,
}

impl Value {
    /// The text form, when the value was sent as text.
    pub fn as_text(&self) -> Option<&[u8]> {
        match self {
            Value::Text(b) => Some(b),
            _ => None,
        }
    }
}

/// A row's values, in the relation's column order.
pub type Tuple = Vec<Value>;

/// The old values an UPDATE or DELETE carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldRow {
    /// `K`: only the replica-identity key columns are meaningful; the others are `Null`.
    Key(Tuple),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full(Tuple),
}

impl OldRow {
    /// The tuple, whichever kind it is.
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldRow::Key(t) | OldRow::Full(t) => t,
        }
    }
}

/// What happened to one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOp {
    /// A new row.
    Insert {
        /// The inserted values.
        new: Tuple,
    },
    /// A changed row. `old` is present with REPLICA IDENTITY FULL (`Full`), or when a key
    /// column changed under DEFAULT/INDEX identity (`Key`); otherwise `None`.
    Update {
        /// The old values, when PostgreSQL logged them.
        old: Option<OldRow>,
        /// The new values; unchanged TOASTed columns are [`Value::UnchangedToast`].
        new: Tuple,
    },
    /// A removed row: its key (DEFAULT/INDEX identity) or the whole row (FULL).
    Delete {
        /// The old values PostgreSQL logged.
        old: OldRow,
    },
}

/// A wire message decoded from one XLogData payload. Rows name their table by OID; the
/// [`Decoder`](super::Decoder) resolves it into a [`Change`].
#[derive(Debug, Clone, PartialEq)]
pub enum LogicalMessage {
    /// `B`: a transaction starts.
    Begin {
        /// LSN of the commit record (the transaction's final LSN).
        final_lsn: Lsn,
        /// Commit time.
        commit_time: PgTimestamp,
        /// Transaction id.
        xid: u32,
    },
    /// `C`: the transaction committed.
    Commit {
        /// Flags (currently always 0).
        flags: u8,
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// End of the commit record: what to confirm once the transaction is handed on.
        end_lsn: Lsn,
        /// Commit time.
        commit_time: PgTimestamp,
    },
    /// `O`: the transaction came from another replication origin.
    Origin {
        /// Commit LSN on the origin server.
        commit_lsn: Lsn,
        /// Origin name.
        name: String,
    },
    /// `R`: a table's description.
    Relation(Relation),
    /// `Y`: a non-builtin type's name.
    Type {
        /// Type OID.
        id: u32,
        /// Schema name.
        namespace: String,
        /// Type name.
        name: String,
    },
    /// `I`, `U` or `D`: a row change.
    Row {
        /// The table's OID.
        relation: RelationId,
        /// What happened.
        op: RowOp,
    },
    /// `T`: tables were truncated.
    Truncate {
        /// `TRUNCATE … CASCADE`.
        cascade: bool,
        /// `TRUNCATE … RESTART IDENTITY`.
        restart_identity: bool,
        /// The truncated tables.
        relations: Vec<RelationId>,
    },
    /// `M`: a `pg_logical_emit_message` call.
    Message(LogicalEmit),
}

/// A message written with `pg_logical_emit_message(transactional, prefix, content)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalEmit {
    /// Sent inside its transaction, only if it committed; otherwise sent at once.
    pub transactional: bool,
    /// LSN of the message record.
    pub lsn: Lsn,
    /// The prefix the writer chose (the bridge listens to its configured one).
    pub prefix: String,
    /// The content, as written.
    pub content: Bytes,
}

/// What the decoding stage hands on: committed changes in commit order, each row with its table.
///
/// Every transaction arrives as `Begin`, its rows and transactional messages, then `Commit`.
/// Non-transactional messages arrive alone, between transactions.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A committed transaction starts.
    Begin {
        /// Transaction id.
        xid: u32,
        /// LSN of its commit record.
        commit_lsn: Lsn,
        /// Commit time.
        commit_time: PgTimestamp,
    },
    /// A row changed in a table.
    Row {
        /// The table, as last described by PostgreSQL.
        relation: Arc<Relation>,
        /// What happened to the row.
        op: RowOp,
    },
    /// Tables were truncated (no per-row changes follow).
    Truncate {
        /// The truncated tables.
        relations: Vec<Arc<Relation>>,
        /// `TRUNCATE … CASCADE`.
        cascade: bool,
        /// `TRUNCATE … RESTART IDENTITY`.
        restart_identity: bool,
    },
    /// A logical message (`pg_logical_emit_message`).
    Message(LogicalEmit),
    /// The transaction committed; `end_lsn` is what may be confirmed once it is handed on.
    Commit {
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// End of the commit record.
        end_lsn: Lsn,
        /// Commit time.
        commit_time: PgTimestamp,
    },
}
