//! The commands before streaming: `IDENTIFY_SYSTEM`, server checks (`wal_level`, version,
//! publication), the slot (look up, refuse a foreign one, create a missing one) and
//! `START_REPLICATION`.

use super::conn::{Conn, classify};
use super::error::ReplicationError;
use crate::config::DatabaseConfig;
use crate::lsn::Lsn;
use crate::pg::{quote_ident, quote_literal};

/// What `IDENTIFY_SYSTEM` says about the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct System {
    /// The cluster's unique id; a different one after a reconnect means another cluster.
    pub system_id: String,
    /// Current timeline.
    pub timeline: String,
    /// Current WAL flush position.
    pub xlog_pos: Lsn,
    /// The database this session is attached to.
    pub dbname: String,
}

/// The slot as found or created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    /// Where streaming resumes: the slot's `confirmed_flush_lsn`.
    pub confirmed_flush: Lsn,
    /// Whether this session created it.
    pub created: bool,
}

/// PostgreSQL 14: pgoutput's `messages` option (logical messages) appeared.
pub(super) const PG14: u32 = 140_000;
/// PostgreSQL 15: the parenthesised `CREATE_REPLICATION_SLOT` options appeared.
pub(super) const PG15: u32 = 150_000;
/// PostgreSQL 17: failover slots (`FAILOVER`, `ALTER_REPLICATION_SLOT`, `invalidation_reason`).
pub(super) const PG17: u32 = 170_000;

fn missing(what: &str) -> ReplicationError {
    ReplicationError::Protocol(format!("{what} missing from the server's answer"))
}

fn parse_lsn(text: &str, what: &str) -> Result<Lsn, ReplicationError> {
    text.parse()
        .map_err(|_| ReplicationError::Protocol(format!("{what} is not an LSN: {text:?}")))
}

/// `IDENTIFY_SYSTEM`.
pub(super) async fn identify_system(conn: &mut Conn) -> Result<System, ReplicationError> {
    let rows = conn.simple_query("IDENTIFY_SYSTEM").await?;
    let row = rows.first().ok_or_else(|| missing("IDENTIFY_SYSTEM row"))?;
    Ok(System {
        system_id: row.get("systemid").unwrap_or_default().to_owned(),
        timeline: row.get("timeline").unwrap_or_default().to_owned(),
        xlog_pos: parse_lsn(
            row.get("xlogpos").ok_or_else(|| missing("xlogpos"))?,
            "xlogpos",
        )?,
        dbname: row.get("dbname").unwrap_or_default().to_owned(),
    })
}

/// Refuses a server whose `wal_level` is not `logical`; returns `server_version_num`.
pub(super) async fn check_server(conn: &mut Conn) -> Result<u32, ReplicationError> {
    let rows = conn.simple_query("SHOW wal_level").await?;
    let wal_level = rows
        .first()
        .and_then(|r| r.get("wal_level"))
        .ok_or_else(|| missing("wal_level"))?
        .to_owned();
    if wal_level != "logical" {
        return Err(ReplicationError::WalLevel { actual: wal_level });
    }
    let rows = conn.simple_query("SHOW server_version_num").await?;
    let version = rows
        .first()
        .and_then(|r| r.get("server_version_num"))
        .ok_or_else(|| missing("server_version_num"))?;
    version.trim().parse().map_err(|_| {
        ReplicationError::Protocol(format!("server_version_num is not a number: {version:?}"))
    })
}

/// Refuses to start when the publication does not exist: pgoutput would only notice at the
/// first change, with a less helpful error.
pub(super) async fn check_publication(
    conn: &mut Conn,
    db: &DatabaseConfig,
    dbname: &str,
) -> Result<(), ReplicationError> {
    let sql = format!(
        "SELECT 1 AS present FROM pg_catalog.pg_publication WHERE pubname = {}",
        quote_literal(&db.publication)
    );
    if conn.simple_query(&sql).await?.is_empty() {
        return Err(ReplicationError::PublicationMissing {
            publication: db.publication.clone(),
            database: dbname.to_owned(),
        });
    }
    Ok(())
}

/// Finds the slot, checks it is a pgoutput slot of this database, and creates it if missing.
pub(super) async fn ensure_slot(
    conn: &mut Conn,
    db: &DatabaseConfig,
    dbname: &str,
    server_version: u32,
) -> Result<Slot, ReplicationError> {
    let sql = format!(
        "SELECT slot_type, plugin, database, confirmed_flush_lsn \
         FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
        quote_literal(&db.slot)
    );
    if let Some(row) = conn.simple_query(&sql).await?.first() {
        if row.get("slot_type") != Some("logical") {
            return Err(ReplicationError::SlotPlugin {
                slot: db.slot.clone(),
                plugin: "physical slot".to_owned(),
            });
        }
        let plugin = row.get("plugin").unwrap_or_default();
        if plugin != "pgoutput" {
            return Err(ReplicationError::SlotPlugin {
                slot: db.slot.clone(),
                plugin: plugin.to_owned(),
            });
        }
        let database = row.get("database").unwrap_or_default();
        if database != dbname {
            return Err(ReplicationError::SlotDatabase {
                slot: db.slot.clone(),
                database: database.to_owned(),
                expected: dbname.to_owned(),
            });
        }
        let confirmed_flush = match row.get("confirmed_flush_lsn") {
            Some(text) => parse_lsn(text, "confirmed_flush_lsn")?,
            None => Lsn::ZERO,
        };
        return Ok(Slot {
            confirmed_flush,
            created: false,
        });
    }
    let in_recovery = in_recovery(conn).await?;
    let rows = conn
        .simple_query(&create_slot_command(
            &db.slot,
            server_version,
            server_version >= PG17 && !in_recovery,
        ))
        .await
        .map_err(|e| match e {
            ReplicationError::Server(e) => classify(e, db),
            other => other,
        })?;
    let row = rows
        .first()
        .ok_or_else(|| missing("CREATE_REPLICATION_SLOT row"))?;
    let consistent_point = parse_lsn(
        row.get("consistent_point")
            .ok_or_else(|| missing("consistent_point"))?,
        "consistent_point",
    )?;
    Ok(Slot {
        confirmed_flush: consistent_point,
        created: true,
    })
}

/// `CREATE_REPLICATION_SLOT` without a snapshot: the bridge streams changes from now on and
/// never copies existing rows. With `failover` (PostgreSQL 17+, on a primary) standbys with
/// `sync_replication_slots = on` carry the slot, so it survives a failover.
pub(super) fn create_slot_command(slot: &str, server_version: u32, failover: bool) -> String {
    let slot = quote_ident(slot);
    if server_version >= PG17 && failover {
        format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER)")
    } else if server_version >= PG15 {
        format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT 'nothing')")
    } else {
        format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput NOEXPORT_SNAPSHOT")
    }
}

/// Whether the server is a standby (in recovery): slots there are decoded but cannot fail over.
pub(super) async fn in_recovery(conn: &mut Conn) -> Result<bool, ReplicationError> {
    let rows = conn
        .simple_query("SELECT pg_catalog.pg_is_in_recovery() AS in_recovery")
        .await?;
    Ok(rows.first().and_then(|r| r.get("in_recovery")) == Some("t"))
}

/// The state of an existing slot that decides whether streaming from it can work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SlotState {
    /// `wal_status` (13+): `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// `invalidation_reason` (17+): why PostgreSQL gave up on the slot.
    pub invalidation_reason: Option<String>,
    /// `failover` (17+).
    pub failover: Option<bool>,
}

/// Refuses an invalidated slot with what to do, and on PostgreSQL 17+ primaries turns failover
/// on for a slot created without it (by an older bridge or by hand). Run after the slot is
/// known to exist.
pub(super) async fn check_slot_state(
    conn: &mut Conn,
    db: &DatabaseConfig,
    server_version: u32,
) -> Result<(), ReplicationError> {
    if server_version < 130_000 {
        return Ok(());
    }
    let columns = if server_version >= PG17 {
        "wal_status, invalidation_reason, failover::text AS failover"
    } else {
        "wal_status, NULL AS invalidation_reason, NULL AS failover"
    };
    let sql = format!(
        "SELECT {columns} FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
        quote_literal(&db.slot)
    );
    let Some(row) = conn.simple_query(&sql).await?.into_iter().next() else {
        return Ok(());
    };
    let state = SlotState {
        wal_status: row.get("wal_status").map(str::to_owned),
        invalidation_reason: row.get("invalidation_reason").map(str::to_owned),
        failover: row.get("failover").map(|v| v == "true"),
    };
    if let Some(reason) = invalidated(&state) {
        return Err(ReplicationError::SlotInvalidated {
            slot: db.slot.clone(),
            reason,
        });
    }
    if state.failover == Some(false) && !in_recovery(conn).await? {
        conn.simple_query(&format!(
            "ALTER_REPLICATION_SLOT {} (FAILOVER true)",
            quote_ident(&db.slot)
        ))
        .await?;
        tracing::info!(slot = %db.slot, "turned failover on for the replication slot");
    }
    Ok(())
}

/// Why the slot can no longer be streamed from, if it cannot.
pub(super) fn invalidated(state: &SlotState) -> Option<String> {
    match (
        state.invalidation_reason.as_deref(),
        state.wal_status.as_deref(),
    ) {
        (Some(reason), _) => Some(reason.to_owned()),
        (None, Some("lost")) => Some("wal_removed".to_owned()),
        _ => None,
    }
}

/// `START_REPLICATION` from the slot's confirmed position (`0/0`), protocol 1 (no streaming
/// of in-progress transactions: only committed ones arrive), with logical messages when the
/// server can send them.
pub(super) fn start_replication_command(
    slot: &str,
    publication: &str,
    server_version: u32,
) -> String {
    let mut options = format!(
        "proto_version '1', publication_names '{}'",
        // The replication grammar's literals know only doubled quotes, no backslash escapes.
        quote_ident(publication).replace('\'', "''")
    );
    if server_version >= PG14 {
        options.push_str(", messages 'true'");
    }
    format!(
        "START_REPLICATION SLOT {} LOGICAL 0/0 ({options})",
        quote_ident(slot)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("strapi_io"), "\"strapi_io\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
        assert!(start_replication_command("s", "a\\b", PG15).contains("'\"a\\b\"'"));
    }

    #[test]
    fn start_replication_asks_for_messages_only_from_postgres_14() {
        assert_eq!(
            start_replication_command("strapi_io", "strapi", 150_004),
            "START_REPLICATION SLOT \"strapi_io\" LOGICAL 0/0 (proto_version '1', \
             publication_names '\"strapi\"', messages 'true')"
        );
        assert_eq!(
            start_replication_command("s", "it's", 130_000),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/0 (proto_version '1', \
             publication_names '\"it''s\"')"
        );
    }

    #[test]
    fn slot_creation_syntax_follows_the_server_version() {
        assert_eq!(
            create_slot_command("s", 150_000, true),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'nothing')"
        );
        assert_eq!(
            create_slot_command("s", 140_010, true),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput NOEXPORT_SNAPSHOT"
        );
        assert_eq!(
            create_slot_command("s", 170_000, true),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER)"
        );
        // A standby cannot create a failover slot.
        assert_eq!(
            create_slot_command("s", 180_001, false),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'nothing')"
        );
    }

    #[test]
    fn a_lost_or_invalidated_slot_is_recognised() {
        let state = |wal: Option<&str>, reason: Option<&str>| SlotState {
            wal_status: wal.map(str::to_owned),
            invalidation_reason: reason.map(str::to_owned),
            failover: None,
        };
        assert_eq!(invalidated(&state(Some("reserved"), None)), None);
        assert_eq!(invalidated(&state(Some("unreserved"), None)), None);
        assert_eq!(
            invalidated(&state(Some("lost"), None)).as_deref(),
            Some("wal_removed")
        );
        assert_eq!(
            invalidated(&state(Some("lost"), Some("rows_removed"))).as_deref(),
            Some("rows_removed")
        );
    }
}
