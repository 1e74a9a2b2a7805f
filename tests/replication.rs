//! The replication client against real PostgreSQL: what arrives, in which order, how it logs
//! in, which slots it refuses, and that nothing committed is lost across stops, crashes and
//! server restarts.
//!
//! Each test drives `replication::run` with a small consumer that decodes with
//! `pgoutput::Decoder` and publishes `Progress` after each Commit, as the pipeline does.

use std::collections::BTreeSet;
use std::sync::Arc;

use strapi_io_bridge::config::DatabaseConfig;
use strapi_io_bridge::health::Health;
use strapi_io_bridge::lsn::Lsn;
use strapi_io_bridge::pgoutput::{Change, Decoder, OldRow, RowOp, Value};
use strapi_io_bridge::replication::{self, Progress, Replicated, ReplicationError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::pg::{ClusterOptions, SUPERUSER, SUPERUSER_PASSWORD, TempCluster, TestDb};
use crate::support::wait::{self, DEFAULT_TIMEOUT};

/// Small, so tests also run with the channel full now and then.
const CHANNEL_CAPACITY: usize = 4;

/// What the test consumer saw.
#[derive(Debug, Clone)]
enum Seen {
    Session(Lsn),
    Change(Change),
}

/// One committed transaction as it arrived.
#[derive(Debug, Clone)]
struct Tx {
    commit_lsn: Lsn,
    end_lsn: Lsn,
    changes: Vec<Change>,
}

impl Tx {
    /// The `id` column (first) of every inserted row.
    fn inserted_ids(&self) -> Vec<i64> {
        self.changes
            .iter()
            .filter_map(|c| match c {
                Change::Row {
                    op: RowOp::Insert { new },
                    ..
                } => Some(texts(new)[0].as_deref()?.parse().ok()?),
                _ => None,
            })
            .collect()
    }
}

/// A running `replication::run` with its consumer.
struct Stream {
    task: Option<JoinHandle<Result<(), ReplicationError>>>,
    seen: mpsc::UnboundedReceiver<Seen>,
    shutdown: CancellationToken,
    health: Health,
}

impl Stream {
    fn start(config: DatabaseConfig) -> Stream {
        Self::start_pausing(config, None)
    }

    /// A stream whose consumer stops for good after passing on the transaction that inserts
    /// `pause_after` (a pipeline that got stuck).
    fn start_pausing(config: DatabaseConfig, pause_after: Option<i64>) -> Stream {
        crate::support::init_tracing();
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(consume(rx, progress_tx, seen_tx, pause_after));
        let shutdown = CancellationToken::new();
        let health = Health::new();
        let task = tokio::spawn(replication::run(
            config,
            tx,
            progress_rx,
            health.clone(),
            shutdown.clone(),
        ));
        Stream {
            task: Some(task),
            seen,
            shutdown,
            health,
        }
    }

    #[track_caller]
    fn next(&mut self) -> impl Future<Output = Seen> + '_ {
        wait::recv(&mut self.seen, DEFAULT_TIMEOUT)
    }

    /// Waits for the first session marker.
    async fn session(&mut self) -> Lsn {
        match self.next().await {
            Seen::Session(start) => start,
            other => panic!("expected a session marker, got {other:?}"),
        }
    }

    /// The next change, skipping session markers.
    async fn change(&mut self) -> Change {
        loop {
            if let Seen::Change(c) = self.next().await {
                return c;
            }
        }
    }

    /// The next whole transaction, skipping session markers (and a transaction cut by one).
    async fn transaction(&mut self) -> Tx {
        'outer: loop {
            let commit_lsn = match self.change().await {
                Change::Begin { commit_lsn, .. } => commit_lsn,
                other => panic!("expected Begin, got {other:?}"),
            };
            let mut changes = Vec::new();
            loop {
                match self.next().await {
                    Seen::Session(_) => continue 'outer,
                    Seen::Change(Change::Commit {
                        commit_lsn: c,
                        end_lsn,
                        ..
                    }) => {
                        assert_eq!(c, commit_lsn, "Commit does not match Begin");
                        return Tx {
                            commit_lsn,
                            end_lsn,
                            changes,
                        };
                    }
                    Seen::Change(Change::Begin { .. }) => panic!("Begin inside a transaction"),
                    Seen::Change(c) => changes.push(c),
                }
            }
        }
    }

    /// Transactions until one inserts `last_id`; returns them with the session markers between.
    async fn until_id(&mut self, last_id: i64) -> Vec<Seen> {
        let mut out = Vec::new();
        loop {
            let seen = self.next().await;
            let done = matches!(&seen, Seen::Change(Change::Row { op: RowOp::Insert { new }, .. })
                if texts(new)[0].as_deref() == Some(&last_id.to_string()));
            out.push(seen);
            if done {
                // Through the Commit.
                loop {
                    let seen = self.next().await;
                    let commit = matches!(seen, Seen::Change(Change::Commit { .. }));
                    out.push(seen);
                    if commit {
                        return out;
                    }
                }
            }
        }
    }

    /// Cancels and waits for `run` to return.
    async fn stop(mut self) -> Result<(), ReplicationError> {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        wait::within("replication::run after shutdown", DEFAULT_TIMEOUT, task)
            .await
            .expect("run panicked")
    }

    /// Waits for `run` to give up and returns its error.
    async fn failure(mut self) -> ReplicationError {
        let task = self.task.take().expect("running");
        match wait::within("replication::run to fail", DEFAULT_TIMEOUT, task)
            .await
            .expect("run panicked")
        {
            Ok(()) => panic!("run returned Ok, expected an error"),
            Err(e) => e,
        }
    }

    /// Kills `run` without a clean shutdown, as a crash would.
    fn abort(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Everything the consumer still passes on after the stream is gone.
    async fn drain(&mut self) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Some(seen) =
            wait::within("the consumer to finish", DEFAULT_TIMEOUT, self.seen.recv()).await
        {
            out.push(seen);
        }
        out
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.abort();
    }
}

/// The pipeline stand-in: decodes, passes changes on, reports progress after each Commit.
async fn consume(
    mut rx: mpsc::Receiver<Replicated>,
    progress: watch::Sender<Progress>,
    seen: mpsc::UnboundedSender<Seen>,
    pause_after: Option<i64>,
) {
    let mut decoder = Decoder::new();
    let mut p = Progress::default();
    let mut pause_at_commit = false;
    while let Some(item) = rx.recv().await {
        match item {
            Replicated::Session { start } => {
                decoder = Decoder::new();
                p.in_transaction = false;
                progress.send_replace(p);
                let _ = seen.send(Seen::Session(start));
            }
            Replicated::CaughtUp => {}
            Replicated::Data(batch) => {
                for x in batch {
                    p.handed += 1;
                    let change = decoder
                        .decode(&x.payload)
                        .unwrap_or_else(|e| panic!("undecodable XLogData at {}: {e}", x.wal_start));
                    let Some(change) = change else { continue };
                    let end = match &change {
                        Change::Begin { .. } => {
                            p.in_transaction = true;
                            None
                        }
                        Change::Row {
                            op: RowOp::Insert { new },
                            ..
                        } => {
                            let id = texts(new)[0].as_deref().and_then(|v| v.parse().ok());
                            pause_at_commit |= id.is_some() && id == pause_after;
                            None
                        }
                        Change::Commit { end_lsn, .. } => Some(*end_lsn),
                        _ => None,
                    };
                    let _ = seen.send(Seen::Change(change));
                    if let Some(end_lsn) = end {
                        p.in_transaction = false;
                        p.flushed = end_lsn;
                        progress.send_replace(p);
                        if pause_at_commit {
                            // Stuck for good, still holding the channel.
                            std::future::pending::<()>().await;
                        }
                    }
                }
                progress.send_replace(p);
            }
        }
    }
}

fn texts(tuple: &[Value]) -> Vec<Option<String>> {
    tuple
        .iter()
        .map(|v| match v {
            Value::Null => None,
            Value::Text(b) => Some(String::from_utf8_lossy(b).into_owned()),
            other => panic!("unexpected value {other:?}"),
        })
        .collect()
}

fn some(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some((*v).to_owned())).collect()
}

async fn exec(client: &tokio_postgres::Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn slot_row(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Option<(String, String, Option<i32>, Option<Lsn>)> {
    client
        .query_opt(
            "SELECT plugin::text, database::text, active_pid, confirmed_flush_lsn::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("query pg_replication_slots")
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get::<_, Option<String>>(3)
                    .map(|s| s.parse().expect("an LSN")),
            )
        })
}

async fn confirmed_flush(client: &tokio_postgres::Client, slot: &str) -> Lsn {
    slot_row(client, slot)
        .await
        .and_then(|r| r.3)
        .unwrap_or_else(|| panic!("slot {slot} has no confirmed_flush_lsn"))
}

async fn current_wal_lsn(client: &tokio_postgres::Client) -> Lsn {
    let text: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("pg_current_wal_lsn")
        .get(0);
    text.parse().expect("an LSN")
}

/// A table `t (id int primary key, label text)` published by the test database's publication.
async fn simple_table(db: &TestDb<'_>) -> tokio_postgres::Client {
    let client = db.client().await;
    exec(
        &client,
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, label text); \
             CREATE PUBLICATION {} FOR TABLE t",
            db.publication()
        ),
    )
    .await;
    client
}

/// Transaction by transaction, the ids inserted, with `None` at each session boundary.
fn ids_by_session(seen: &[Seen]) -> Vec<Option<(i64, Lsn)>> {
    let mut out = Vec::new();
    let mut current: Vec<i64> = Vec::new();
    for s in seen {
        match s {
            Seen::Session(_) => {
                current.clear();
                out.push(None);
            }
            Seen::Change(Change::Row {
                op: RowOp::Insert { new },
                ..
            }) => current.push(
                texts(new)[0]
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1),
            ),
            Seen::Change(Change::Commit { end_lsn, .. }) => {
                for id in current.drain(..) {
                    out.push(Some((id, *end_lsn)));
                }
            }
            Seen::Change(_) => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// What arrives
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn changes_arrive_decoded_with_their_values_and_types() {
    let db = TestDb::new(TempCluster::shared());
    let client = db.client().await;
    exec(
        &client,
        &format!(
            "CREATE TABLE items (id int PRIMARY KEY, name text, done boolean, price numeric(10,2), \
                                 at timestamptz, meta jsonb, note text); \
             CREATE TABLE logs (id int PRIMARY KEY, body text); \
             ALTER TABLE logs REPLICA IDENTITY FULL; \
             CREATE PUBLICATION {} FOR ALL TABLES",
            db.publication()
        ),
    )
    .await;
    let mut stream = Stream::start(db.config());
    stream.session().await;

    // One statement per query: a multi-statement simple query is one transaction.
    for sql in [
        "INSERT INTO items VALUES (1, 'first', true, 12.5, '2024-05-01 10:00:00+00', \
                                  '{\"a\": 1}', NULL)",
        "UPDATE items SET name = 'renamed' WHERE id = 1",
        "UPDATE items SET id = 2 WHERE id = 1",
        "DELETE FROM items WHERE id = 2",
        "INSERT INTO logs VALUES (1, 'x')",
        "UPDATE logs SET body = 'y'",
        "DELETE FROM logs",
        "TRUNCATE items",
        "BEGIN",
        "SELECT pg_logical_emit_message(true, 'bridge', 'inside')",
        "INSERT INTO items (id, name) VALUES (3, 'third')",
        "COMMIT",
        "SELECT pg_logical_emit_message(false, 'bridge', 'outside')",
    ] {
        exec(&client, sql).await;
    }

    // INSERT: every value as text, NULL as NULL, with the columns' types.
    let tx = stream.transaction().await;
    let [
        Change::Row {
            relation,
            op: RowOp::Insert { new },
        },
    ] = &tx.changes[..]
    else {
        panic!("expected one insert, got {:?}", tx.changes);
    };
    assert_eq!(
        (relation.namespace.as_str(), relation.name.as_str()),
        ("public", "items")
    );
    let types: Vec<u32> = relation.columns.iter().map(|c| c.type_oid).collect();
    assert_eq!(types, [23, 25, 16, 1700, 1184, 3802, 25]);
    let keys: Vec<bool> = relation.columns.iter().map(|c| c.is_key).collect();
    assert_eq!(keys, [true, false, false, false, false, false, false]);
    let mut want = some(&[
        "1",
        "first",
        "t",
        "12.50",
        "2024-05-01 10:00:00+00",
        "{\"a\": 1}",
    ]);
    want.push(None);
    assert_eq!(texts(new), want);
    assert!(tx.end_lsn > tx.commit_lsn);

    // UPDATE without a key change: no old row under DEFAULT identity.
    let tx = stream.transaction().await;
    let [
        Change::Row {
            op: RowOp::Update { old: None, new },
            ..
        },
    ] = &tx.changes[..]
    else {
        panic!("expected an update without old row, got {:?}", tx.changes);
    };
    assert_eq!(texts(new)[..2], some(&["1", "renamed"])[..]);

    // UPDATE of the key: the old key arrives.
    let tx = stream.transaction().await;
    let [
        Change::Row {
            op:
                RowOp::Update {
                    old: Some(OldRow::Key(old)),
                    new,
                },
            ..
        },
    ] = &tx.changes[..]
    else {
        panic!("expected an update with the old key, got {:?}", tx.changes);
    };
    assert_eq!(texts(old)[0].as_deref(), Some("1"));
    assert_eq!(texts(new)[0].as_deref(), Some("2"));

    // DELETE under DEFAULT identity: only the key.
    let tx = stream.transaction().await;
    let [
        Change::Row {
            op: RowOp::Delete {
                old: OldRow::Key(old),
            },
            ..
        },
    ] = &tx.changes[..]
    else {
        panic!("expected a delete with the key, got {:?}", tx.changes);
    };
    let mut want = some(&["2"]);
    want.extend(std::iter::repeat_n(None, 6));
    assert_eq!(texts(old), want);

    // REPLICA IDENTITY FULL: whole old rows.
    let tx = stream.transaction().await;
    assert!(matches!(
        &tx.changes[..],
        [Change::Row {
            op: RowOp::Insert { .. },
            ..
        }]
    ));
    let tx = stream.transaction().await;
    let [
        Change::Row {
            op:
                RowOp::Update {
                    old: Some(OldRow::Full(old)),
                    new,
                },
            ..
        },
    ] = &tx.changes[..]
    else {
        panic!(
            "expected an update with the full old row, got {:?}",
            tx.changes
        );
    };
    assert_eq!(
        (texts(old), texts(new)),
        (some(&["1", "x"]), some(&["1", "y"]))
    );
    let tx = stream.transaction().await;
    let [
        Change::Row {
            op: RowOp::Delete {
                old: OldRow::Full(old),
            },
            ..
        },
    ] = &tx.changes[..]
    else {
        panic!(
            "expected a delete with the full old row, got {:?}",
            tx.changes
        );
    };
    assert_eq!(texts(old), some(&["1", "y"]));

    // TRUNCATE.
    let tx = stream.transaction().await;
    let [
        Change::Truncate {
            relations,
            cascade: false,
            restart_identity: false,
        },
    ] = &tx.changes[..]
    else {
        panic!("expected a truncate, got {:?}", tx.changes);
    };
    assert_eq!(relations.len(), 1);
    assert_eq!(relations[0].name, "items");

    // PostgreSQL 13's pgoutput has no `messages` option: messages are decoded and dropped
    // there, so the transaction carries the insert alone and the other message never comes.
    if db.cluster().version_num() < 140_000 {
        let tx = stream.transaction().await;
        let [
            Change::Row {
                op: RowOp::Insert { new },
                ..
            },
        ] = &tx.changes[..]
        else {
            panic!(
                "expected the insert alone on PostgreSQL 13, got {:?}",
                tx.changes
            );
        };
        assert_eq!(texts(new)[..2], some(&["3", "third"])[..]);
        stream.stop().await.expect("clean shutdown");
        return;
    }

    // A transactional message arrives inside its transaction, in place.
    let tx = stream.transaction().await;
    let [
        Change::Message(m),
        Change::Row {
            op: RowOp::Insert { new },
            ..
        },
    ] = &tx.changes[..]
    else {
        panic!("expected a message then an insert, got {:?}", tx.changes);
    };
    assert!(m.transactional);
    assert_eq!(
        (m.prefix.as_str(), &m.content[..]),
        ("bridge", &b"inside"[..])
    );
    assert_eq!(texts(new)[..2], some(&["3", "third"])[..]);

    // A non-transactional message arrives alone.
    let Change::Message(m) = stream.change().await else {
        panic!("expected the non-transactional message");
    };
    assert!(!m.transactional);
    assert_eq!(&m.content[..], b"outside");

    assert!(stream.health.is_streaming());
    stream.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn transactions_arrive_in_commit_order() {
    let db = TestDb::new(TempCluster::shared());
    let first = simple_table(&db).await;
    let second = db.client().await;
    let mut stream = Stream::start(db.config());
    stream.session().await;

    exec(&first, "BEGIN; INSERT INTO t VALUES (1, 'began first');").await;
    exec(
        &second,
        "BEGIN; INSERT INTO t VALUES (2, 'began second'); COMMIT;",
    )
    .await;
    exec(&first, "INSERT INTO t VALUES (3, 'began first'); COMMIT;").await;

    let a = stream.transaction().await;
    let b = stream.transaction().await;
    assert_eq!(a.inserted_ids(), [2]);
    assert_eq!(b.inserted_ids(), [1, 3]);
    assert!(a.end_lsn <= b.commit_lsn, "commit LSNs increase");
}

#[tokio::test]
async fn rolled_back_transaction_never_arrives() {
    let db = TestDb::new(TempCluster::shared());
    let client = simple_table(&db).await;
    let mut stream = Stream::start(db.config());
    stream.session().await;

    exec(
        &client,
        "BEGIN; INSERT INTO t VALUES (1, 'ghost'); ROLLBACK",
    )
    .await;
    exec(
        &client,
        "BEGIN; INSERT INTO t VALUES (2, 'kept'); SAVEPOINT s; \
         INSERT INTO t VALUES (3, 'undone'); ROLLBACK TO s; COMMIT",
    )
    .await;
    exec(&client, "INSERT INTO t VALUES (4, 'marker')").await;

    assert_eq!(stream.transaction().await.inserted_ids(), [2]);
    assert_eq!(stream.transaction().await.inserted_ids(), [4]);
}

// ---------------------------------------------------------------------------------------------
// Slots and server checks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_slot_is_created_with_pgoutput_in_this_database() {
    let db = TestDb::new(TempCluster::shared());
    let client = simple_table(&db).await;
    assert!(slot_row(&client, &db.slot()).await.is_none());

    let mut stream = Stream::start(db.config());
    let start = stream.session().await;

    let (plugin, database, active_pid, confirmed) = slot_row(&client, &db.slot())
        .await
        .expect("the slot exists");
    assert_eq!(
        (plugin.as_str(), database.as_str()),
        ("pgoutput", db.name())
    );
    assert!(active_pid.is_some(), "the slot is held by the stream");
    assert_eq!(confirmed, Some(start));
    assert!(stream.health.is_streaming());
}

#[tokio::test]
async fn slot_of_another_plugin_is_refused() {
    let db = TestDb::new(TempCluster::shared());
    let client = simple_table(&db).await;
    exec(
        &client,
        &format!(
            "SELECT pg_create_logical_replication_slot('{}', 'test_decoding')",
            db.slot()
        ),
    )
    .await;

    let err = Stream::start(db.config()).failure().await;
    assert!(
        matches!(err, ReplicationError::SlotPlugin { .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("test_decoding") && text.contains("pg_drop_replication_slot"),
        "{text}"
    );
}

#[tokio::test]
async fn slot_of_another_database_is_refused() {
    let cluster = TempCluster::shared();
    let owner = TestDb::new(cluster);
    let db = TestDb::new(cluster);
    simple_table(&db).await;
    owner.psql(&format!(
        "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
        db.slot()
    ));

    let err = Stream::start(db.config()).failure().await;
    let ReplicationError::SlotDatabase {
        database, expected, ..
    } = &err
    else {
        panic!("expected SlotDatabase, got {err:?}");
    };
    assert_eq!(
        (database.as_str(), expected.as_str()),
        (owner.name(), db.name())
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn missing_publication_is_a_clear_fatal_error() {
    let db = TestDb::new(TempCluster::shared());
    let err = Stream::start(db.config()).failure().await;
    assert!(
        matches!(err, ReplicationError::PublicationMissing { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("strapi-io-bridge setup"), "{err}");
}

#[tokio::test]
async fn wal_level_below_logical_is_a_clear_fatal_error() {
    let cluster = TempCluster::new(ClusterOptions {
        wal_level: "replica",
        ..ClusterOptions::default()
    });
    let db = TestDb::new(&cluster);
    let err = Stream::start(db.config()).failure().await;
    let ReplicationError::WalLevel { actual } = &err else {
        panic!("expected WalLevel, got {err:?}");
    };
    assert_eq!(actual, "replica");
    assert!(err.to_string().contains("wal_level = logical"), "{err}");
}

#[tokio::test]
async fn slot_active_elsewhere_makes_run_wait_then_stream_once_freed() {
    let cluster = TempCluster::shared();
    let db = TestDb::new(cluster);
    let client = simple_table(&db).await;
    let mut holder = Stream::start(db.config());
    holder.session().await;

    let mut waiter = Stream::start(db.config());
    let refused = format!("replication slot \"{}\" is active for PID", db.slot());
    wait::until(
        "the second stream to be refused the slot",
        DEFAULT_TIMEOUT,
        || {
            let found = cluster.log_contains(&refused);
            async move { found }
        },
    )
    .await;
    assert!(!waiter.health.is_streaming());
    assert!(
        waiter.seen.try_recv().is_err(),
        "nothing arrives while the slot is held"
    );

    holder.stop().await.expect("clean shutdown");
    waiter.session().await;
    exec(&client, "INSERT INTO t VALUES (1, 'after the handover')").await;
    assert_eq!(waiter.transaction().await.inserted_ids(), [1]);
}

// ---------------------------------------------------------------------------------------------
// Logins and transports
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn scram_and_md5_logins_work() {
    let cluster = TempCluster::shared();
    let db = TestDb::new(cluster);
    let client = simple_table(&db).await;
    let scram_role = format!("scram_{}", db.name());
    let md5_role = format!("md5_{}", db.name());
    db.create_role(&scram_role, "scram-secret", "REPLICATION", false);
    db.create_role(&md5_role, "md5-secret", "REPLICATION", true);
    let stored: Vec<String> = client
        .query(
            "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = ANY($1) ORDER BY rolname",
            &[&vec![md5_role.clone(), scram_role.clone()]],
        )
        .await
        .expect("read pg_authid")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, ["md5", "SCR"], "one MD5 and one SCRAM verifier");

    for (role, password, id) in [
        (&scram_role, "scram-secret", 1),
        (&md5_role, "md5-secret", 2),
    ] {
        let mut config = db.config_for(&cluster.url(role, password, db.name(), "sslmode=disable"));
        config.slot = format!("{}_{role}", db.slot());
        let mut stream = Stream::start(config);
        stream.session().await;
        exec(&client, &format!("INSERT INTO t VALUES ({id}, '{role}')")).await;
        assert_eq!(stream.transaction().await.inserted_ids(), [id], "{role}");
        stream.stop().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn wrong_password_is_a_clear_fatal_error() {
    let cluster = TempCluster::shared();
    let db = TestDb::new(cluster);
    simple_table(&db).await;
    let config = db.config_for(&cluster.url(SUPERUSER, "not-the-password", db.name(), ""));
    let err = Stream::start(config).failure().await;
    assert!(matches!(err, ReplicationError::Auth { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(text.contains("check the password"), "{text}");
    assert!(
        !text.contains("not-the-password"),
        "the password leaked: {text}"
    );
}

#[tokio::test]
async fn role_without_replication_privilege_is_refused() {
    let cluster = TempCluster::shared();
    let db = TestDb::new(cluster);
    simple_table(&db).await;
    let role = format!("plain_{}", db.name());
    db.create_role(&role, "plain-secret", "", false);
    let config = db.config_for(&cluster.url(&role, "plain-secret", db.name(), ""));
    let err = Stream::start(config).failure().await;
    assert!(
        matches!(err, ReplicationError::NoReplicationPrivilege { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("WITH REPLICATION"), "{err}");
}

#[tokio::test]
async fn streams_over_a_unix_socket() {
    let cluster = TempCluster::shared();
    let db = TestDb::new(cluster);
    let client = simple_table(&db).await;
    let config = db.config_for(&format!(
        "host={} port={} user={SUPERUSER} dbname={}",
        cluster.socket_dir().display(),
        cluster.port(),
        db.name()
    ));
    let mut stream = Stream::start(config);
    stream.session().await;
    exec(&client, "INSERT INTO t VALUES (7, 'via the socket')").await;
    assert_eq!(stream.transaction().await.inserted_ids(), [7]);
}

/// The walsender of `slot` uses TLS.
async fn slot_uses_tls(client: &tokio_postgres::Client, slot: &str) -> bool {
    client
        .query_one(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_replication_slots r ON r.active_pid = s.pid \
             WHERE r.slot_name = $1",
            &[&slot],
        )
        .await
        .expect("query pg_stat_ssl")
        .get(0)
}

#[tokio::test]
async fn tls_with_require_and_verify_full() {
    let cluster = TempCluster::shared_tls();
    let db = TestDb::new(cluster);
    let client = simple_table(&db).await;
    let ca = cluster
        .ca_pem()
        .expect("a TLS cluster")
        .display()
        .to_string();
    let db_name = db.name();

    // require: TLS without checking the certificate (the cleartext password travels inside).
    let mut config =
        db.config_for(&cluster.url(SUPERUSER, SUPERUSER_PASSWORD, db_name, "sslmode=require"));
    config.slot = format!("{}_require", db.slot());
    let mut stream = Stream::start(config.clone());
    stream.session().await;
    assert!(slot_uses_tls(&client, &config.slot).await);
    exec(&client, "INSERT INTO t VALUES (1, 'over TLS')").await;
    assert_eq!(stream.transaction().await.inserted_ids(), [1]);
    stream.stop().await.expect("clean shutdown");

    // verify-full: the chain leads to the test CA and the certificate names localhost.
    let url = format!(
        "postgres://{SUPERUSER}:{SUPERUSER_PASSWORD}@localhost:{}/{db_name}?sslmode=verify-full&sslrootcert={ca}",
        cluster.port()
    );
    let mut config = db.config_for(&url);
    config.slot = format!("{}_full", db.slot());
    let mut stream = Stream::start(config.clone());
    stream.session().await;
    assert!(slot_uses_tls(&client, &config.slot).await);
    stream.stop().await.expect("clean shutdown");

    // verify-full by address: the certificate names only localhost.
    let url = format!(
        "postgres://{SUPERUSER}:{SUPERUSER_PASSWORD}@127.0.0.1:{}/{db_name}?sslmode=verify-full&sslrootcert={ca}",
        cluster.port()
    );
    let err = Stream::start(db.config_for(&url)).failure().await;
    assert!(matches!(err, ReplicationError::Tls { .. }), "{err:?}");
    assert!(
        err.to_string().contains("does not name \"127.0.0.1\""),
        "{err}"
    );

    // verify-ca by address: the chain is enough.
    let url = format!(
        "postgres://{SUPERUSER}:{SUPERUSER_PASSWORD}@127.0.0.1:{}/{db_name}?sslmode=verify-ca&sslrootcert={ca}",
        cluster.port()
    );
    let mut config = db.config_for(&url);
    config.slot = format!("{}_ca", db.slot());
    let mut stream = Stream::start(config);
    stream.session().await;
    stream.stop().await.expect("clean shutdown");

    // verify-full without the CA: not a trusted root.
    let url = format!(
        "postgres://{SUPERUSER}:{SUPERUSER_PASSWORD}@localhost:{}/{db_name}?sslmode=verify-full",
        cluster.port()
    );
    let err = Stream::start(db.config_for(&url)).failure().await;
    assert!(err.to_string().contains("sslrootcert"), "{err}");
    assert!(!err.is_retryable());

    // Without TLS, pg_hba.conf has no line for the client.
    let err = Stream::start(db.config_for(&cluster.url(
        SUPERUSER,
        SUPERUSER_PASSWORD,
        db_name,
        "sslmode=disable",
    )))
    .failure()
    .await;
    assert!(matches!(err, ReplicationError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("pg_hba.conf"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Confirmation and durability
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn graceful_shutdown_confirms_the_final_position() {
    let db = TestDb::new(TempCluster::shared());
    let client = simple_table(&db).await;
    let mut stream = Stream::start(db.config());
    stream.session().await;
    for id in 1..=20 {
        exec(&client, &format!("INSERT INTO t VALUES ({id}, 'x')")).await;
    }
    let mut last = None;
    for id in 1..=20 {
        let tx = stream.transaction().await;
        assert_eq!(tx.inserted_ids(), [id]);
        last = Some(tx.end_lsn);
    }
    let last = last.expect("twenty transactions");
    stream.stop().await.expect("clean shutdown");

    let (_, _, active, confirmed) = slot_row(&client, &db.slot()).await.expect("slot");
    assert!(
        confirmed.expect("confirmed") >= last,
        "{confirmed:?} < {last}"
    );
    assert!(active.is_none(), "the slot is released");

    // Nothing confirmed comes again.
    exec(&client, "INSERT INTO t VALUES (21, 'after the restart')").await;
    let mut stream = Stream::start(db.config());
    assert_eq!(stream.transaction().await.inserted_ids(), [21]);
}

#[tokio::test]
async fn stuck_pipeline_is_confirmed_only_as_far_as_it_got() {
    let db = TestDb::new(TempCluster::shared());
    let client = simple_table(&db).await;
    let mut stream = Stream::start_pausing(db.config(), Some(10));
    stream.session().await;
    exec(
        &client,
        "DO $$ BEGIN FOR i IN 1..100 LOOP INSERT INTO t VALUES (i, 'x'); COMMIT; END LOOP; END $$",
    )
    .await;
    let mut end_of_10 = None;
    for id in 1..=10 {
        let tx = stream.transaction().await;
        assert_eq!(tx.inserted_ids(), [id]);
        end_of_10 = Some(tx.end_lsn);
    }
    let end_of_10 = end_of_10.expect("ten transactions");
    // The client has read past what the pipeline handed on.
    let health = stream.health.clone();
    wait::until(
        "the client to read past transaction 10",
        DEFAULT_TIMEOUT,
        || {
            let read = health.server_lsn();
            async move { read > end_of_10 }
        },
    )
    .await;

    // Shutdown waits (bounded) for the stuck pipeline, then confirms what it handed on.
    stream.stop().await.expect("clean shutdown");
    assert_eq!(confirmed_flush(&client, &db.slot()).await, end_of_10);
    let mut stream = Stream::start(db.config());
    assert_eq!(stream.transaction().await.inserted_ids(), [11]);
}

#[tokio::test]
async fn crash_mid_stream_loses_nothing_and_repeats_only_unconfirmed_transactions() {
    let db = TestDb::new(TempCluster::shared());
    let client = simple_table(&db).await;
    let mut first = Stream::start(db.config());
    first.session().await;
    exec(
        &client,
        "DO $$ BEGIN FOR i IN 1..200 LOOP INSERT INTO t VALUES (i, 'first run'); COMMIT; END LOOP; END $$",
    )
    .await;

    // Read part of it, wait until the slot has confirmed what was read, then crash.
    let mut seen_first = Vec::new();
    let mut ids_in_tx = Vec::new();
    let end_of_50 = loop {
        let seen = first.next().await;
        seen_first.push(seen.clone());
        match seen {
            Seen::Change(Change::Row {
                op: RowOp::Insert { new },
                ..
            }) => ids_in_tx.push(texts(&new)[0].clone()),
            Seen::Change(Change::Commit { end_lsn, .. }) => {
                if ids_in_tx.iter().any(|id| id.as_deref() == Some("50")) {
                    break end_lsn;
                }
                ids_in_tx.clear();
            }
            _ => {}
        }
    };
    wait::until(
        "the slot to confirm transaction 50",
        DEFAULT_TIMEOUT,
        || async { confirmed_flush(&client, &db.slot()).await >= end_of_50 },
    )
    .await;
    first.abort();
    seen_first.extend(first.drain().await);
    let confirmed = wait::until_some("the slot to be released", DEFAULT_TIMEOUT, || async {
        let (_, _, active, confirmed) = slot_row(&client, &db.slot()).await?;
        if active.is_none() { confirmed } else { None }
    })
    .await;
    assert!(confirmed >= end_of_50);

    exec(
        &client,
        "DO $$ BEGIN FOR i IN 201..300 LOOP INSERT INTO t VALUES (i, 'second run'); COMMIT; END LOOP; END $$",
    )
    .await;
    let mut second = Stream::start(db.config());
    let seen_second = second.until_id(300).await;

    let first_ids: Vec<(i64, Lsn)> = ids_by_session(&seen_first).into_iter().flatten().collect();
    let second_ids: Vec<(i64, Lsn)> = ids_by_session(&seen_second).into_iter().flatten().collect();
    // Each run saw its transactions once, in commit order.
    for ids in [&first_ids, &second_ids] {
        assert!(
            ids.windows(2).all(|w| w[0].0 + 1 == w[1].0),
            "gap or repeat in {ids:?}"
        );
    }
    assert_eq!(first_ids.first().map(|x| x.0), Some(1));
    assert_eq!(second_ids.last().map(|x| x.0), Some(300));
    // Together nothing is missing ...
    let all: BTreeSet<i64> = first_ids.iter().chain(&second_ids).map(|x| x.0).collect();
    assert_eq!(all, (1..=300).collect());
    // ... the second run starts right after the confirmed position ...
    let (first_again, first_again_end) = second_ids[0];
    assert!(
        first_again_end > confirmed,
        "{first_again} was confirmed yet sent again"
    );
    // ... and repeats only what the first run saw but the slot had not confirmed.
    for (id, end) in &first_ids {
        if *id >= first_again {
            assert!(
                *end > confirmed,
                "transaction {id} was confirmed yet sent again"
            );
        } else {
            assert!(
                *end <= confirmed,
                "transaction {id} was neither confirmed nor sent again"
            );
        }
    }
}

#[tokio::test]
async fn reconnects_after_a_postgres_restart_and_loses_nothing() {
    let cluster = Arc::new(TempCluster::new(ClusterOptions::default()));
    let db = TestDb::new(&cluster);
    let client = simple_table(&db).await;
    let mut stream = Stream::start(db.config());
    stream.session().await;
    exec(
        &client,
        "DO $$ BEGIN FOR i IN 1..50 LOOP INSERT INTO t VALUES (i, 'before'); COMMIT; END LOOP; END $$",
    )
    .await;
    let mut seen = stream.until_id(50).await;
    drop(client);

    let restarting = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .expect("restart");
    let client = db.client().await;
    exec(
        &client,
        "DO $$ BEGIN FOR i IN 51..100 LOOP INSERT INTO t VALUES (i, 'after'); COMMIT; END LOOP; END $$",
    )
    .await;
    seen.extend(stream.until_id(100).await);

    let sessions = seen
        .iter()
        .filter(|s| matches!(s, Seen::Session(_)))
        .count();
    assert!(sessions >= 1, "the stream reconnected");
    let per_session = ids_by_session(&seen);
    for run in per_session.split(Option::is_none) {
        let ids: Vec<i64> = run.iter().flatten().map(|x| x.0).collect();
        assert!(
            ids.windows(2).all(|w| w[0] + 1 == w[1]),
            "gap or repeat in {ids:?}"
        );
    }
    let all: BTreeSet<i64> = per_session.iter().flatten().map(|x| x.0).collect();
    assert_eq!(all, (1..=100).collect());
    assert!(stream.health.is_streaming());
}

#[tokio::test]
async fn idle_stream_advances_the_slot_past_unpublished_changes() {
    let db = TestDb::new(TempCluster::shared());
    let client = simple_table(&db).await;
    exec(&client, "CREATE TABLE unpublished (id int)").await;
    let mut stream = Stream::start(db.config());
    let start = stream.session().await;

    let before = current_wal_lsn(&client).await;
    assert!(before >= start);
    exec(
        &client,
        "INSERT INTO unpublished SELECT generate_series(1, 1000)",
    )
    .await;
    wait::until(
        "the slot to move past WAL that carried no published change",
        DEFAULT_TIMEOUT,
        || async { confirmed_flush(&client, &db.slot()).await > before },
    )
    .await;
    assert!(stream.health.confirmed_lsn() > before);
    if db.cluster().version_num() >= 150_000 {
        assert!(stream.seen.try_recv().is_err(), "nothing was handed on");
    } else {
        // Before PostgreSQL 15 pgoutput sends a Begin/Commit pair for a transaction that
        // touched only unpublished tables; no row may come with it.
        while let Ok(seen) = stream.seen.try_recv() {
            assert!(
                matches!(
                    seen,
                    Seen::Change(Change::Begin { .. } | Change::Commit { .. })
                ),
                "only empty transactions were handed on, got {seen:?}"
            );
        }
    }
}

/// Rough drain rate against `pg_recvlogical` on a second slot. Run with
/// `cargo test --release -- --ignored --nocapture drain_rate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn drain_rate_against_pg_recvlogical() {
    const ROWS: i64 = 200_000;
    const PER_TX: i64 = 10_000;
    let cluster = TempCluster::new(ClusterOptions::default());
    let db = TestDb::new(&cluster);
    let client = simple_table(&db).await;
    let other_slot = format!("{}_recvlogical", db.slot());
    exec(
        &client,
        &format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput'); \
             SELECT pg_create_logical_replication_slot('{other_slot}', 'pgoutput')",
            db.slot()
        ),
    )
    .await;
    let mut first = 1;
    while first <= ROWS {
        exec(
            &client,
            &format!(
                "INSERT INTO t SELECT i, 'row ' || i FROM generate_series({first}, {}) i",
                first + PER_TX - 1
            ),
        )
        .await;
        first += PER_TX;
    }
    let end = current_wal_lsn(&client).await;

    // This client: XLogData counted by a consumer that only reports progress.
    let (tx, mut rx) = mpsc::channel(64);
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let shutdown = CancellationToken::new();
    let started = std::time::Instant::now();
    let task = tokio::spawn(replication::run(
        db.config(),
        tx,
        progress_rx,
        Health::new(),
        shutdown.clone(),
    ));
    let mut messages = 0u64;
    let mut decoder = Decoder::new();
    let mut commits = 0;
    while commits < ROWS / PER_TX {
        match rx.recv().await.expect("stream") {
            Replicated::Session { .. } | Replicated::CaughtUp => {}
            Replicated::Data(batch) => {
                for x in batch {
                    messages += 1;
                    if let Ok(Some(Change::Commit { end_lsn, .. })) = decoder.decode(&x.payload) {
                        commits += 1;
                        progress_tx.send_replace(Progress {
                            flushed: end_lsn,
                            handed: messages,
                            in_transaction: false,
                            keep: Lsn::ZERO,
                        });
                    }
                }
            }
        }
    }
    let ours = started.elapsed();
    shutdown.cancel();
    drop(rx);
    let _ = task.await;

    // pg_recvlogical on the second slot, to the same end position.
    let started = std::time::Instant::now();
    let status = std::process::Command::new(cluster.program("pg_recvlogical"))
        .args([
            "-d",
            &cluster.superuser_url(db.name()),
            "--slot",
            &other_slot,
            "--start",
        ])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            &format!("publication_names={}", db.publication()),
        ])
        .args(["-E", &end.to_string(), "-f", "/dev/null", "--no-loop"])
        .status()
        .expect("run pg_recvlogical");
    let theirs = started.elapsed();
    assert!(status.success());
    println!(
        "{messages} XLogData: this client {:.2} s ({:.0}/s), pg_recvlogical {:.2} s ({:.0}/s)",
        ours.as_secs_f64(),
        messages as f64 / ours.as_secs_f64(),
        theirs.as_secs_f64(),
        messages as f64 / theirs.as_secs_f64()
    );
}
