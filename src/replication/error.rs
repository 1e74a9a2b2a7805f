//! [`ReplicationError`]: why streaming stopped, classified by what the caller does next.

use std::fmt;

use crate::pg::TlsError;

/// An error PostgreSQL sent (an `ErrorResponse`), with the fields a reader needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL` or `PANIC`.
    pub severity: String,
    /// SQLSTATE, e.g. `55006`.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// Optional detail.
    pub detail: Option<String>,
    /// Optional hint.
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(detail) = &self.detail {
            write!(f, "; {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

/// Why the replication stream stopped.
///
/// [`is_retryable`](Self::is_retryable) tells the run loop whether to reconnect (after a
/// back-off) or to give up and return the error: configuration problems that waiting cannot
/// fix are fatal.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The TLS settings are unusable (for instance an unreadable `sslrootcert`). Fatal.
    #[error("{0}")]
    TlsConfig(TlsError),
    /// PostgreSQL could not be reached. Retryable.
    #[error("cannot connect to PostgreSQL at {target}: {message}")]
    Connect {
        /// `user@host:port/dbname`.
        target: String,
        /// What failed, with a hint.
        message: String,
    },
    /// TLS could not be set up. Fatal when the certificate or the server's TLS support is the
    /// problem, retryable when the network failed during the handshake.
    #[error("TLS with PostgreSQL at {target} failed: {source}")]
    Tls {
        /// `user@host:port/dbname`.
        target: String,
        /// What failed.
        source: TlsError,
    },
    /// The server refused the login: wrong password, no `pg_hba.conf` line, unsupported
    /// authentication method. Fatal.
    #[error("PostgreSQL at {target} refused the login: {message}")]
    Auth {
        /// `user@host:port/dbname`.
        target: String,
        /// The server's message with what to change.
        message: String,
    },
    /// The role lacks the `REPLICATION` attribute. Fatal.
    #[error("user {user:?} may not stream changes: {message}")]
    NoReplicationPrivilege {
        /// The role.
        user: String,
        /// The server's message with what to change.
        message: String,
    },
    /// The configured database does not exist. Fatal.
    #[error("database {database:?} does not exist: {message}")]
    DatabaseMissing {
        /// The database name.
        database: String,
        /// What to change.
        message: String,
    },
    /// `wal_level` is below `logical`. Fatal.
    #[error(
        "wal_level is {actual:?}, but logical replication needs wal_level = logical: run \
         `ALTER SYSTEM SET wal_level = logical` as a superuser and restart PostgreSQL"
    )]
    WalLevel {
        /// The server's setting.
        actual: String,
    },
    /// The slot exists but uses another output plugin (or is a physical slot). Fatal.
    #[error(
        "replication slot {slot:?} uses the output plugin {plugin:?}, not pgoutput: drop it \
         (SELECT pg_drop_replication_slot('{slot}')) or configure another slot name"
    )]
    SlotPlugin {
        /// The slot.
        slot: String,
        /// Its plugin (`physical slot` when physical).
        plugin: String,
    },
    /// The slot exists but belongs to another database. Fatal.
    #[error(
        "replication slot {slot:?} belongs to database {database:?}, not {expected:?}: \
         configure another slot name, or drop that slot from {database:?}"
    )]
    SlotDatabase {
        /// The slot.
        slot: String,
        /// The database it decodes.
        database: String,
        /// The configured database.
        expected: String,
    },
    /// The publication does not exist in the database. Fatal.
    #[error(
        "publication {publication:?} does not exist in database {database:?}: run \
         `strapi-io-bridge setup`, or create it (CREATE PUBLICATION \"{publication}\" FOR ALL \
         TABLES)"
    )]
    PublicationMissing {
        /// The publication.
        publication: String,
        /// The database.
        database: String,
    },
    /// Another connection streams from the slot (SQLSTATE 55006). Retryable: it is often a
    /// previous instance whose connection PostgreSQL has not yet noticed is gone.
    #[error("replication slot {slot:?} is in use by another connection{}", pid.map(|p| format!(" (PID {p})")).unwrap_or_default())]
    SlotActive {
        /// The slot.
        slot: String,
        /// The walsender holding it, when the server said.
        pid: Option<i32>,
    },
    /// The slot was invalidated: PostgreSQL removed WAL it needed (it fell behind
    /// `max_slot_wal_keep_size`) or, on a standby, catalog rows it needed. The changes in
    /// between are gone; only a person can decide to start over. Fatal.
    #[error(
        "replication slot {slot:?} is invalidated ({reason}): PostgreSQL no longer has the \
         changes since the bridge last confirmed, so it cannot continue without a gap. To start \
         again from now, drop the slot (SELECT pg_drop_replication_slot('{slot}')) and restart \
         the bridge; clients miss the changes in between and should reload. To avoid it, keep \
         the bridge running or raise max_slot_wal_keep_size"
    )]
    SlotInvalidated {
        /// The slot.
        slot: String,
        /// `invalidation_reason` (`wal_removed`, `rows_removed`, `wal_level_insufficient`,
        /// `idle_timeout`), or the server's message.
        reason: String,
    },
    /// Any other server error. Retryable.
    #[error("PostgreSQL reported {0}")]
    Server(ServerError),
    /// The connection broke, the server ended the stream, or it went silent. Retryable.
    #[error("connection to PostgreSQL at {target} lost: {reason}")]
    ConnectionLost {
        /// `user@host:port/dbname`.
        target: String,
        /// Why.
        reason: String,
    },
    /// The server sent something this client cannot parse. Retryable (a reconnect resyncs).
    #[error("unexpected data from PostgreSQL: {0}")]
    Protocol(String),
}

impl ReplicationError {
    /// Whether reconnecting (after a back-off) may succeed. `false` means a configuration
    /// problem that only a person can fix.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReplicationError::Connect { .. }
            | ReplicationError::SlotActive { .. }
            | ReplicationError::Server(_)
            | ReplicationError::ConnectionLost { .. }
            | ReplicationError::Protocol(_) => true,
            ReplicationError::Tls { source, .. } => {
                matches!(
                    source,
                    TlsError::Handshake {
                        certificate: false,
                        ..
                    }
                )
            }
            ReplicationError::TlsConfig(_)
            | ReplicationError::Auth { .. }
            | ReplicationError::NoReplicationPrivilege { .. }
            | ReplicationError::DatabaseMissing { .. }
            | ReplicationError::WalLevel { .. }
            | ReplicationError::SlotPlugin { .. }
            | ReplicationError::SlotDatabase { .. }
            | ReplicationError::PublicationMissing { .. }
            | ReplicationError::SlotInvalidated { .. } => false,
        }
    }
}

/// The PID in "replication slot "x" is active for PID 1234".
pub(super) fn active_pid(message: &str) -> Option<i32> {
    let (_, rest) = message.rsplit_once("PID ")?;
    rest.trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_pid_is_read_from_the_message() {
        assert_eq!(
            active_pid("replication slot \"strapi_io\" is active for PID 4242"),
            Some(4242)
        );
        assert_eq!(active_pid("replication slot \"x\" is in use"), None);
    }

    #[test]
    fn configuration_problems_are_fatal_and_network_problems_are_not() {
        let fatal = ReplicationError::WalLevel {
            actual: "replica".into(),
        };
        assert!(!fatal.is_retryable());
        let lost = ReplicationError::ConnectionLost {
            target: "t".into(),
            reason: "eof".into(),
        };
        assert!(lost.is_retryable());
        let active = ReplicationError::SlotActive {
            slot: "s".into(),
            pid: Some(7),
        };
        assert!(active.is_retryable());
        assert_eq!(
            active.to_string(),
            "replication slot \"s\" is in use by another connection (PID 7)"
        );
    }
}
