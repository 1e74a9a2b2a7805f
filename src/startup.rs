//! Start-up and reload: the catalog and the access tables read at one snapshot, the check that
//! the publication carries the access tables, and the filter that keeps replayed rows from
//! undoing that snapshot.
//!
//! The stream resumes at the slot's confirmed position, which is older than anything loaded
//! now: transactions the loaded snapshot already contains come again. Their content events are
//! sent again (at-least-once) to whoever may read them *now*, but their access rows and
//! Strapi's schema row are skipped: applying them would bring back a deleted token or user,
//! unblock a user, restore an old API-token key or reinstall an older (less private) schema
//! until the stream caught up. [`ReplayFilter`] says which transactions those are.
//!
//! The load happens when the slot exists: at start when it exists already, else once the
//! first replication session has created it. The stream then covers everything from the
//! slot's position on and the snapshot is at or after that position: nothing falls between
//! the two. After a discontinuity (the slot created again, another cluster) the pipeline loads
//! again.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::access::{Access, AccessConfig};
use crate::config::Config;
use crate::health::Health;
use crate::lsn::Lsn;
use crate::pg::{self, quote_ident};
use crate::strapi::catalog::{CORE_STORE_TABLE, load_catalog};
use crate::strapi::{AccessTable, Catalog, CatalogHandle, Model, ModelConfig};

/// Why loading failed, and whether trying again may help.
#[derive(Debug)]
pub enum LoadError {
    /// PostgreSQL unreachable, starting up, or the connection dropped.
    Transient(anyhow::Error),
    /// Wrong password, missing database, bad `content_types`, access tables not published…:
    /// a person must act.
    Fatal(anyhow::Error),
}

impl LoadError {
    fn new(transient: bool, error: anyhow::Error) -> LoadError {
        if transient {
            LoadError::Transient(error)
        } else {
            LoadError::Fatal(error)
        }
    }
}

/// What a load produced: the SQL connection it used, the model over the fresh catalog, the
/// access stage over the fresh tables, and the filter for the replay.
pub struct Loaded {
    /// The SQL connection (the model re-reads rows with it later).
    pub client: Client,
    /// The model, its catalog installed in the shared handle.
    pub model: Model,
    /// The access stage over the tables as of the snapshot.
    pub access: Access,
    /// Which replayed transactions the snapshot already contains.
    pub replay: ReplayFilter,
}

/// Connects and loads, retrying with backoff while PostgreSQL is unreachable (it may start
/// after the bridge); `/readyz` says why meanwhile. `None` when shut down meanwhile.
pub async fn load_with_retry(
    cfg: &Config,
    catalog: &CatalogHandle,
    health: &Health,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Loaded>> {
    let mut delay = Duration::from_millis(200);
    loop {
        match load(cfg, catalog).await {
            Ok(loaded) => {
                health.set_waiting(None);
                return Ok(Some(loaded));
            }
            Err(LoadError::Fatal(e)) => {
                health.set_waiting(Some(format!("{e:#}")));
                return Err(e);
            }
            Err(LoadError::Transient(e)) => {
                let text = format!("{e:#}");
                warn!(error = %text, retry_in = ?delay, "cannot load yet; retrying");
                health.set_waiting(Some(text));
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Whether the configured slot exists already (then loading now is at or after the position
/// the stream resumes from). `false` when that cannot be told (PostgreSQL unreachable): the
/// caller then loads once replication has the slot.
pub async fn slot_exists(cfg: &Config) -> bool {
    let Ok(client) = pg::connect(&cfg.database).await else {
        return false;
    };
    client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_replication_slots \
             WHERE slot_name = $1 AND database = current_database()",
            &[&cfg.database.slot],
        )
        .await
        .is_ok_and(|row| row.is_some())
}

/// Connects, checks the publication, and reads the catalog and the access tables in one
/// `REPEATABLE READ` transaction whose snapshot becomes the [`ReplayFilter`]; then builds the
/// model (published-state copies are read after it, as before).
pub async fn load(cfg: &Config, catalog: &CatalogHandle) -> Result<Loaded, LoadError> {
    let client = pg::connect(&cfg.database).await.map_err(|e| {
        // No SQLSTATE: the network; 57P03: the server is starting or stopping.
        let transient = e.code().is_none_or(|c| c.code() == "57P03");
        let what = format!("connecting to {}", cfg.database.display_target());
        LoadError::new(transient, anyhow::Error::from(e).context(what))
    })?;
    let db_error = |what: &'static str| {
        move |e: tokio_postgres::Error| {
            let transient = e.is_closed() || e.code().is_none();
            LoadError::new(transient, anyhow::Error::from(e).context(what))
        }
    };
    check_publication(&client, &cfg.database.publication, &cfg.database.schema)
        .await
        .map_err(|e| match e {
            PublicationCheck::Db(e) => db_error("checking the publication")(e),
            PublicationCheck::Missing(text) => LoadError::Fatal(anyhow::anyhow!(text)),
        })?;

    client
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL DateStyle = 'ISO'; SET LOCAL TimeZone = 'UTC'",
        )
        .await
        .map_err(db_error("starting the load transaction"))?;
    let read = read_at_snapshot(&client, cfg).await;
    let end = if read.is_ok() { "COMMIT" } else { "ROLLBACK" };
    if let Err(e) = client.batch_execute(end).await {
        warn!(error = %e, "ending the load transaction failed");
    }
    let (replay, loaded_catalog, access) = read?;
    catalog.replace(loaded_catalog);
    let model = Model::load(&client, ModelConfig::from_config(cfg), catalog.clone())
        .await
        .map_err(|e| {
            let transient = e.is_retryable();
            LoadError::new(
                transient,
                anyhow::Error::from(e).context("loading Strapi's content types"),
            )
        })?;
    info!(snapshot = %replay, "catalog and access tables loaded");
    Ok(Loaded {
        client,
        model,
        access,
        replay,
    })
}

/// Inside the load transaction: the snapshot, the catalog row, the access tables.
async fn read_at_snapshot(
    client: &Client,
    cfg: &Config,
) -> Result<(ReplayFilter, Catalog, Access), LoadError> {
    let retryable = |e: &tokio_postgres::Error| e.is_closed() || e.code().is_none();
    // The transaction's snapshot is taken by this, its first query; the insert position is
    // read after it (see `ReplayFilter`).
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| LoadError::new(retryable(&e), anyhow::Error::from(e)))?;
    // On a standby (logical decoding on standby, 16+) the WAL position to compare with is the
    // replay position: a transaction a standby's snapshot sees has had its commit record
    // replayed, so that record starts before the replay position read after the snapshot.
    let sql = if version >= 130_000 {
        "SELECT pg_current_snapshot()::text, CASE WHEN pg_is_in_recovery() \
         THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END::text"
    } else {
        "SELECT txid_current_snapshot()::text, CASE WHEN pg_is_in_recovery() \
         THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END::text"
    };
    let row = client
        .query_one(sql, &[])
        .await
        .map_err(|e| LoadError::new(retryable(&e), anyhow::Error::from(e)))?;
    let (snapshot, insert): (String, String) = (
        row.try_get(0).map_err(|e| LoadError::Fatal(e.into()))?,
        row.try_get(1).map_err(|e| LoadError::Fatal(e.into()))?,
    );
    let replay = ReplayFilter::new(
        Snapshot::parse(&snapshot)
            .with_context(|| format!("snapshot {snapshot:?}"))
            .map_err(LoadError::Fatal)?,
        insert
            .parse()
            .map_err(|_| LoadError::Fatal(anyhow::anyhow!("insert position {insert:?}")))?,
    );

    let schema = &cfg.database.schema;
    // A missing core-store table would abort the transaction: look first.
    let core_store = format!("{}.{}", quote_ident(schema), quote_ident(CORE_STORE_TABLE));
    let present: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&core_store])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| LoadError::new(retryable(&e), anyhow::Error::from(e)))?;
    let catalog = if present {
        load_catalog(client, schema).await.map_err(|e| {
            let transient = e.is_retryable();
            LoadError::new(
                transient,
                anyhow::Error::from(e).context("loading Strapi's content types"),
            )
        })?
    } else {
        warn!(table = %core_store, "no core store table: no content types known yet");
        Catalog::default()
    };
    let access = Access::load_in_transaction(client, schema, AccessConfig::from_auth(&cfg.auth))
        .await
        .map_err(|e| {
            let transient = e.is_retryable();
            LoadError::new(
                transient,
                anyhow::Error::from(e)
                    .context("loading Strapi's roles, permissions, users and API tokens"),
            )
        })?;
    Ok((replay, catalog, access))
}

/// Why the publication check failed.
enum PublicationCheck {
    Db(tokio_postgres::Error),
    /// Access tables are not published: the text says which and the SQL that fixes it.
    Missing(String),
}

/// Refuses a publication that leaves out an access table (or the core store) the schema has:
/// without their changes the bridge would keep granting what Strapi took away, silently. A
/// missing publication is left to the replication client, which names `setup`.
async fn check_publication(
    client: &Client,
    publication: &str,
    schema: &str,
) -> Result<(), PublicationCheck> {
    let all = client
        .query_opt(
            "SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(PublicationCheck::Db)?;
    let Some(all) = all else {
        return Ok(());
    };
    if all.try_get::<_, bool>(0).map_err(PublicationCheck::Db)? {
        return Ok(());
    }
    let wanted: Vec<String> = AccessTable::ALL
        .iter()
        .map(|t| t.table_name().to_owned())
        .chain([CORE_STORE_TABLE.to_owned()])
        .collect();
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = ANY($2) AND c.relkind IN ('r', 'p') \
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables p \
                             WHERE p.pubname = $3 AND p.schemaname = n.nspname \
                             AND p.tablename = c.relname) \
             ORDER BY 1",
            &[&schema, &wanted, &publication],
        )
        .await
        .map_err(PublicationCheck::Db)?;
    let missing: Vec<String> = rows
        .iter()
        .filter_map(|r| r.try_get::<_, String>(0).ok())
        .map(|t| format!("{}.{}", quote_ident(schema), quote_ident(&t)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(PublicationCheck::Missing(format!(
        "publication {pubname} does not include {list}: the bridge would never see users \
         blocked, tokens deleted or permissions revoked. Fix: ALTER PUBLICATION {pubname} ADD \
         TABLE {list};",
        pubname = quote_ident(publication),
        list = missing.join(", "),
    )))
}

/// A transaction snapshot (`pg_current_snapshot()`): which transactions it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every transaction below this had ended when the snapshot was taken.
    xmin: u64,
    /// No transaction at or above this had ended.
    xmax: u64,
    /// Transactions between the two that were still running.
    xip: Vec<u64>,
}

impl Snapshot {
    /// Parses `xmin:xmax:xip1,xip2,…` (full 64-bit transaction ids).
    pub fn parse(text: &str) -> anyhow::Result<Snapshot> {
        let mut parts = text.trim().splitn(3, ':');
        let mut number = |what: &str| -> anyhow::Result<u64> {
            let part = parts.next().with_context(|| format!("no {what}"))?;
            part.parse().with_context(|| format!("{what} {part:?}"))
        };
        let xmin = number("xmin")?;
        let xmax = number("xmax")?;
        let xip = match parts.next() {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|x| x.parse().with_context(|| format!("xip {x:?}")))
                .collect::<anyhow::Result<_>>()?,
        };
        Ok(Snapshot { xmin, xmax, xip })
    }

    /// Whether a *committed* transaction with this 32-bit id (as pgoutput sends it) is
    /// visible in the snapshot. The id is widened to the one nearest `xmax`: the transactions
    /// asked about started within 2³¹ transactions of the snapshot.
    pub fn sees(&self, xid: u32) -> bool {
        // Wrapping difference: a transaction a little after xmax is after it, not 2^32 before.
        let diff = i64::from(xid.wrapping_sub(self.xmax as u32) as i32);
        let Some(full) = self.xmax.checked_add_signed(diff) else {
            return false;
        };
        full < self.xmin || (full < self.xmax && !self.xip.contains(&full))
    }
}

/// Which replayed transactions the loaded state already contains: their access rows and
/// schema rows are skipped.
///
/// The exact boundary. The load reads, in one statement at the start of its `REPEATABLE
/// READ` transaction, the snapshot S and then `pg_current_wal_insert_lsn()` = L (on a standby,
/// `pg_last_wal_replay_lsn()`: what its snapshots see has been replayed before it). A commit
/// record is inserted into the WAL *before* its transaction becomes visible to snapshots, so
/// a transaction S sees has a commit record that starts before L. The reverse does not hold:
/// a transaction whose commit record is before L may still have been running for S (it was
/// waiting for its WAL flush or a synchronous standby), so its rows are not in the load and
/// must be applied; comparing positions alone would lose them. Hence:
///
/// - commit record at or after L (`Begin.commit_lsn >= L`): inserted after S was taken, so
///   not in S: applied.
/// - commit record before L: skipped exactly when S sees its transaction id (below `xmin`,
///   or below `xmax` and not among the running ones). Such a transaction started before S
///   was taken, so its 32-bit id is unambiguous next to S's.
///
/// The filter stays for the whole run (until the next load): a reconnect may stream
/// transactions from before L again, and they must be skipped again.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// `None` when nothing was loaded.
    inner: Option<(Snapshot, Lsn)>,
}

impl ReplayFilter {
    /// The filter for a load at snapshot `snapshot`, WAL insert position `insert` read after.
    pub fn new(snapshot: Snapshot, insert: Lsn) -> ReplayFilter {
        ReplayFilter {
            inner: Some((snapshot, insert)),
        }
    }

    /// Whether the loaded state already contains the transaction `xid` whose commit record is
    /// at `commit_lsn` (call at each `Begin`, in stream order).
    pub fn contains(&self, xid: u32, commit_lsn: Lsn) -> bool {
        match &self.inner {
            Some((snapshot, insert)) => commit_lsn < *insert && snapshot.sees(xid),
            None => false,
        }
    }
}

impl std::fmt::Display for ReplayFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("none"),
            Some((s, insert)) => write!(f, "xmin {} xmax {} at {insert}", s.xmin, s.xmax),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_sees_ended_transactions_only() {
        let s = Snapshot::parse("100:110:103,107").unwrap_or_else(|e| panic!("{e}"));
        assert!(s.sees(99), "ended before xmin");
        assert!(s.sees(102), "between, not running");
        assert!(!s.sees(103), "running");
        assert!(!s.sees(110), "at xmax");
        assert!(!s.sees(111), "after");
        assert!(Snapshot::parse("5:5:").is_ok_and(|s| s.xip.is_empty()));
        assert!(Snapshot::parse("5").is_err());
        assert!(Snapshot::parse("a:5:").is_err());
    }

    #[test]
    fn transaction_ids_are_widened_around_xmax() {
        // xmax just past a 32-bit wrap: epoch 1.
        let base = 1u64 << 32;
        let s = Snapshot {
            xmin: base - 10,
            xmax: base + 5,
            xip: vec![base + 1],
        };
        assert!(s.sees((base - 20) as u32), "epoch 0, before xmin");
        assert!(s.sees(2), "epoch 1, ended");
        assert!(!s.sees(1), "epoch 1, running");
        assert!(!s.sees(6), "epoch 1, after xmax");
        // Just below 2^32: before the wrap, ended.
        assert!(s.sees(u32::MAX - 3));
    }

    #[test]
    fn the_filter_skips_what_the_snapshot_sees_below_the_insert_position() {
        let s = Snapshot::parse("100:110:105").unwrap_or_else(|e| panic!("{e}"));
        let f = ReplayFilter::new(s, Lsn(1000));
        assert!(f.contains(101, Lsn(500)));
        assert!(!f.contains(105, Lsn(600)), "running for the snapshot");
        assert!(!f.contains(111, Lsn(700)), "began after the snapshot");
        assert!(
            !f.contains(102, Lsn(1000)),
            "commit record at the insert position"
        );
        // Streamed again after a reconnect: skipped again.
        assert!(f.contains(101, Lsn(500)));
        assert!(!ReplayFilter::default().contains(1, Lsn(1)));
    }
}
