//! What each PostgreSQL version and service offers, against real servers of the version under
//! test (`PG_BIN`, see tests/pg-matrix.sh): `check`'s version and managed-service findings, a
//! replication role that is neither superuser nor owner (as on managed services), invalidated
//! slots, a failover slot surviving the promotion of a standby (17+), and decoding on a standby
//! (16+). Tests of a feature a version lacks say so and return.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use strapi_io_bridge::check::{self, Level, REPLICATION_ROLE};
use strapi_io_bridge::config::{Config, DatabaseConfig};
use strapi_io_bridge::health::Health;
use strapi_io_bridge::replication::{self, Progress, ReplicationError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::support::bridge::{Bridge, FULL_ACCESS_TOKEN, StrapiDb};
use crate::support::client::{SioClient, marker};
use crate::support::pg::{ClusterOptions, SUPERUSER_PASSWORD, TempCluster, TestDb};
use crate::support::wait::{self, DEFAULT_TIMEOUT};

/// Content rows removed before set-up, so the only events are the test's.
const EMPTY_CONTENT: &str = "TRUNCATE messages, chats, homepages, legacy_articles, \
    messages_chat_links, messages_watch_chats_links, messages_author_links, messages_components, \
    components_shared_seos, legacy_articles_localizations_links, files_related_morphs";

/// Long enough for a reconnect after a failover: the back-off may have grown to its maximum
/// (30 s) while no host accepted writes.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(90);

async fn reader(bridge: &Bridge) -> SioClient {
    SioClient::connected(
        bridge.addr,
        json!({ "token": FULL_ACCESS_TOKEN, "strategy": "apiToken" }),
    )
    .await
}

fn insert_messages(ids: std::ops::RangeInclusive<i64>) -> String {
    ids.map(|id| {
        format!(
            "INSERT INTO messages (id, text, created_at, updated_at, published_at) \
             VALUES ({id}, 'm{id}', now(), now(), now());"
        )
    })
    .collect()
}

/// The ids of the next `n` `message:create` events, in arrival order (anything else fails).
async fn created_ids(client: &mut SioClient, n: usize, timeout: Duration) -> Vec<i64> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let (name, payload) = client.next_event(timeout).await;
        assert_eq!(name, "message:create", "unexpected event {payload}");
        ids.push(payload["data"]["id"].as_i64().expect("an id"));
    }
    ids
}

fn finding<'a>(report: &'a check::Report, start: &str) -> &'a check::Finding {
    report
        .findings
        .iter()
        .find(|f| f.message.starts_with(start))
        .unwrap_or_else(|| panic!("no finding starting with {start:?} in:\n{report}"))
}

#[tokio::test]
async fn check_names_the_server_version_and_what_it_can_do() {
    let cluster = TempCluster::shared();
    let strapi = StrapiDb::on(cluster, "").await;
    let report = check::check(&strapi.config("content_types = \"*\"")).await;
    let version = cluster.psql("postgres", "SHOW server_version");
    let line = finding(&report, "server: PostgreSQL");
    assert!(
        line.message
            .starts_with(&format!("server: PostgreSQL {version}")),
        "{line}"
    );
    let major = cluster.major();
    if major >= 14 {
        assert!(line.message.contains("custom events from"), "{line}");
    } else {
        assert!(line.message.contains("cannot: custom events"), "{line}");
        assert_eq!(line.level, Level::Warning);
    }
    assert_eq!(
        line.message
            .contains("cannot: keeping its slot across a failover")
            || line
                .message
                .contains("; keeping its slot across a failover"),
        major < 17,
        "{line}"
    );
    assert!(report.can_run(), "{report}");
    // The throwaway clusters keep WAL for slots without limit: that is what check warns about.
    let keep = finding(&report, "max_slot_wal_keep_size = -1");
    assert_eq!(keep.level, Level::Warning);
}

#[tokio::test]
async fn check_on_a_managed_service_prints_the_console_setting_instead_of_alter_system() {
    let cluster = TempCluster::new(ClusterOptions {
        wal_level: "replica",
        ..ClusterOptions::default()
    });
    // What Amazon RDS shows: a custom setting (a placeholder here) that logical replication
    // is switched with, in the parameter group.
    cluster.configure("rds.logical_replication = off");
    let strapi = StrapiDb::on(&cluster, "").await;
    let report = check::check(&strapi.config("content_types = \"*\"")).await;
    assert!(!report.can_run(), "{report}");
    let service = finding(&report, "managed service:");
    assert!(service.message.contains("Amazon RDS"), "{service}");
    let wal = finding(&report, "wal_level = replica");
    assert_eq!(wal.level, Level::Error);
    let fix = wal.fix.as_deref().unwrap_or_default();
    assert!(fix.contains("rds.logical_replication = 1"), "{fix}");
    assert!(!fix.contains("ALTER SYSTEM"), "{fix}");
    let keep = finding(&report, "max_slot_wal_keep_size = -1");
    assert!(
        !keep
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("ALTER SYSTEM"),
        "{keep}"
    );
}

#[tokio::test]
async fn a_replication_role_that_is_no_superuser_and_owns_nothing_runs_the_bridge() {
    let cluster = TempCluster::shared();
    let db = TestDb::new(cluster);
    // Strapi's own user owns the tables and makes the publication (`setup`), as on a service
    // where nobody is a superuser.
    let owner = format!("strapi_{}", db.name());
    db.create_role(&owner, "owner-secret", "", false);
    db.psql(&format!("ALTER SCHEMA public OWNER TO {owner}"));
    let owner_url = cluster.url(&owner, "owner-secret", db.name(), "sslmode=disable");
    let owner_db = DatabaseConfig::from_url(&owner_url, "test").unwrap();
    let owner_client = strapi_io_bridge::pg::connect(&owner_db).await.unwrap();
    owner_client
        .batch_execute(crate::support::bridge::FIXTURE)
        .await
        .expect("the fixture, loaded by its owner");
    owner_client.batch_execute(EMPTY_CONTENT).await.unwrap();
    let mut cfg = config_for(&db, &owner_url);
    check::setup(&cfg)
        .await
        .expect("setup as the tables' owner");

    // The grants `setup --print` shows, as they are printed.
    let role = format!("{REPLICATION_ROLE}_{}", db.name());
    let (admin, owner_sql) = check::replication_role_sql(&role, db.name(), "public");
    db.psql(&admin.replace("'change-me'", "'bridge-secret'"));
    db.drop_role_later(&role);
    owner_client.batch_execute(&owner_sql).await.unwrap();
    let printed = check::setup_sql(&cfg);
    for line in owner_sql.lines() {
        let generic = line.replace(&role, REPLICATION_ROLE);
        assert!(printed.contains(&generic), "setup --print lacks {generic}");
    }
    let facts = db.psql(&format!(
        "SELECT rolsuper, rolreplication, \
                (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid) \
           FROM pg_roles r WHERE rolname = '{role}'"
    ));
    assert_eq!(facts, "f|t|0", "the role is no superuser and owns nothing");

    cfg.database =
        db.config_for(&cluster.url(&role, "bridge-secret", db.name(), "sslmode=disable"));
    let report = check::check(&cfg).await;
    assert!(report.can_run(), "{report}");
    let bridge = Bridge::start(cfg).await;
    let mut client = reader(&bridge).await;
    owner_client
        .batch_execute(&insert_messages(1..=2))
        .await
        .unwrap();
    assert_eq!(
        created_ids(&mut client, 2, DEFAULT_TIMEOUT).await,
        vec![1, 2]
    );
    bridge.stop().await.unwrap();
}

/// A bridge configuration on `db` through `url`, with the fixture's secrets.
fn config_for(db: &TestDb<'_>, url: &str) -> Config {
    let mut cfg = crate::support::bridge::config_with("content_types = \"*\"");
    cfg.database = db.config_for(url);
    cfg
}

#[tokio::test]
async fn an_invalidated_slot_stops_the_bridge_with_what_to_do() {
    let cluster = TempCluster::new(ClusterOptions::default());
    cluster.configure("max_slot_wal_keep_size = 1MB\nwal_keep_size = 0\nmin_wal_size = 32MB");
    let db = TestDb::new(&cluster);
    db.psql(&format!(
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION {} FOR TABLE t",
        db.publication(),
    ));
    db.psql(&format!(
        "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
        db.slot()
    ));
    let status_sql = format!(
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{}'",
        db.slot()
    );
    // Move WAL on past the limit and checkpoint until PostgreSQL gives the slot up.
    let mut n = 0;
    wait::until("the slot to be invalidated", DEFAULT_TIMEOUT, || {
        n += 1;
        db.psql(&format!(
            "INSERT INTO t VALUES ({n}); SELECT pg_switch_wal(); CHECKPOINT"
        ));
        let status = db.psql(&status_sql);
        async move { status == "lost" }
    })
    .await;

    let (tx, _rx) = mpsc::channel(4);
    let (_progress_tx, progress_rx) = watch::channel(Progress::default());
    let run = replication::run(
        db.config(),
        tx,
        progress_rx,
        Health::new(),
        CancellationToken::new(),
    );
    let err = tokio::time::timeout(DEFAULT_TIMEOUT, run)
        .await
        .expect("the bridge gives up at once")
        .expect_err("an invalidated slot is fatal");
    assert!(
        matches!(err, ReplicationError::SlotInvalidated { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("pg_drop_replication_slot"), "{text}");
    assert!(text.contains("max_slot_wal_keep_size"), "{text}");
    // The slot is still there: nothing was started over silently.
    assert_eq!(db.psql(&status_sql), "lost");

    let strapi_cfg = config_for(&db, &cluster.superuser_url(db.name()));
    let report = check::check(&strapi_cfg).await;
    let slot = finding(&report, &format!("slot {} is invalidated", db.slot()));
    assert_eq!(slot.level, Level::Error);
    assert!(
        slot.fix
            .as_deref()
            .unwrap_or_default()
            .contains("pg_drop_replication_slot"),
        "{slot}"
    );
}

/// A primary with a physical slot for its standby, and the standby streaming from it.
/// `standby_settings` adds to what every standby here has.
fn primary_and_standby(
    primary_settings: &str,
    standby_settings: &str,
) -> (TempCluster, TempCluster) {
    let primary = TempCluster::new(ClusterOptions::default());
    primary.psql(
        "postgres",
        "SELECT pg_create_physical_replication_slot('standby1', true)",
    );
    primary.configure(primary_settings);
    let standby = primary.standby(&format!(
        "primary_slot_name = 'standby1'\nhot_standby_feedback = on\n{standby_settings}"
    ));
    (primary, standby)
}

/// Waits until the standby has replayed everything the primary has written.
async fn caught_up(primary: &TempCluster, standby: &TempCluster) {
    let lsn = primary.psql("postgres", "SELECT pg_current_wal_lsn()");
    let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
    loop {
        let replayed = standby.psql(
            "postgres",
            &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'"),
        );
        if replayed == "t" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the standby did not replay the primary's WAL up to {lsn} within {DEFAULT_TIMEOUT:?}; \
             its log:\n{}",
            standby.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failover_slot_survives_the_promotion_of_a_standby_and_nothing_is_lost() {
    let probe = TempCluster::shared();
    if probe.major() < 17 {
        eprintln!(
            "PostgreSQL {}: no failover slots before 17; skipped",
            probe.major()
        );
        return;
    }
    crate::support::init_tracing();
    // PostgreSQL 17's recipe: the primary holds logical walsenders back until the standby has
    // the WAL (synchronized_standby_slots); the standby copies failover slots
    // (sync_replication_slots, with hot_standby_feedback, a physical slot and a dbname).
    let (primary, standby) = primary_and_standby(
        "synchronized_standby_slots = 'standby1'",
        // After promotion the standby is a primary without standbys of its own.
        "sync_replication_slots = on\nsynchronized_standby_slots = ''",
    );
    let strapi = StrapiDb::on(&primary, EMPTY_CONTENT).await;
    let db = &strapi.db;
    caught_up(&primary, &standby).await;
    // Both hosts in one URL: the bridge must take the one that accepts writes.
    let url = format!(
        "postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{},127.0.0.1:{}/{}\
         ?sslmode=disable&target_session_attrs=read-write",
        standby.port(),
        primary.port(),
        db.name()
    );
    let mut cfg = config_for(db, &url);
    // The standby's copy of a slot becomes usable only once the primary's slot has moved past
    // where the standby reserved WAL for it; the primary's confirmed position trails by the
    // replay window, so a short window lets this test get there in seconds (README: Failover).
    cfg.delivery.replay_window = Duration::from_secs(1);
    let bridge = Bridge::start(cfg).await;
    let slot_sql = format!(
        "SELECT failover FROM pg_replication_slots WHERE slot_name = '{}'",
        db.slot()
    );
    assert_eq!(primary.psql(db.name(), &slot_sql), "t", "a failover slot");
    let mut client = reader(&bridge).await;

    strapi.sql(&insert_messages(1..=20)).await;
    assert_eq!(
        created_ids(&mut client, 20, DEFAULT_TIMEOUT).await,
        (1..=20).collect::<Vec<_>>()
    );
    // The standby carries the slot, synchronised up to what the bridge confirmed.
    let confirmed_sql = format!(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
        db.slot()
    );
    caught_up(&primary, &standby).await;
    wait::until(
        "the standby's copy of the slot to reach the primary's",
        FAILOVER_TIMEOUT,
        || {
            let on_primary = primary.psql(db.name(), &confirmed_sql);
            let synced = standby.psql(
                db.name(),
                &format!(
                    "SELECT synced AND confirmed_flush_lsn >= '{on_primary}' \
                     FROM pg_replication_slots WHERE slot_name = '{}'",
                    db.slot()
                ),
            );
            async move { synced == "t" }
        },
    )
    .await;

    // Failover: the primary goes away, the standby is promoted, writes go on there.
    primary.stop();
    standby.promote();
    let after = insert_messages(21..=40);
    standby.psql(db.name(), &after);
    // Exactly what was committed since, in order: nothing skipped, nothing repeated.
    assert_eq!(
        created_ids(&mut client, 20, FAILOVER_TIMEOUT).await,
        (21..=40).collect::<Vec<_>>()
    );
    standby.psql(
        db.name(),
        "SELECT pg_logical_emit_message(true, 'strapi_io', '{\"raw\":\"marker\",\"data\":1}')",
    );
    client.marker(1).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn the_bridge_reads_from_a_standby() {
    let probe = TempCluster::shared();
    if probe.major() < 16 {
        eprintln!(
            "PostgreSQL {}: no logical decoding on a standby before 16; skipped",
            probe.major()
        );
        return;
    }
    crate::support::init_tracing();
    let (primary, standby) = primary_and_standby("", "");
    let strapi = StrapiDb::on(&primary, EMPTY_CONTENT).await;
    let db = &strapi.db;
    caught_up(&primary, &standby).await;
    // Creating a slot on a standby waits for the primary to log its running transactions;
    // an idle primary does so only every 15 s, so ask for it while the bridge starts.
    let started = Arc::new(AtomicBool::new(false));
    let snapshots = {
        let started = started.clone();
        let socket = primary.socket_dir().to_owned();
        let port = primary.port();
        let name = db.name().to_owned();
        tokio::spawn(async move {
            let mut config = tokio_postgres::Config::new();
            config
                .host_path(&socket)
                .port(port)
                .user("postgres")
                .dbname(&name);
            let Ok((client, connection)) = config.connect(tokio_postgres::NoTls).await else {
                return;
            };
            tokio::spawn(connection);
            while !started.load(Ordering::Relaxed) {
                let _ = client
                    .execute("SELECT pg_log_standby_snapshot()", &[])
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let url = standby.superuser_url(db.name());
    let bridge = Bridge::start(config_for(db, &url)).await;
    started.store(true, Ordering::Relaxed);
    let _ = snapshots.await;
    assert_eq!(
        standby.psql(
            db.name(),
            &format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'",
                db.slot()
            )
        ),
        "1",
        "the slot lives on the standby"
    );
    let mut client = reader(&bridge).await;
    // Written on the primary, decoded on the standby.
    strapi.sql(&insert_messages(1..=5)).await;
    assert_eq!(
        created_ids(&mut client, 5, FAILOVER_TIMEOUT).await,
        vec![1, 2, 3, 4, 5]
    );
    marker(&strapi, 1).await;
    client.marker(1).await;
    bridge.stop().await.unwrap();

    let report = check::check(&config_for(db, &url)).await;
    assert!(report.can_run(), "{report}");
    let standby_line = finding(&report, "this server is a standby");
    assert_eq!(standby_line.level, Level::Ok, "{standby_line}");
}

/// Log lines written while a [`LogCapture`] is the thread's subscriber.
#[derive(Clone, Default)]
struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

#[tokio::test]
async fn a_promotion_without_a_synchronised_slot_is_reported_as_an_error() {
    // The bridge's tasks run on this test's single thread, so a thread-local subscriber sees
    // their logs.
    let logs = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // A standby that does not synchronise slots: what every version before 17 has.
    let (primary, standby) = primary_and_standby("", "");
    let strapi = StrapiDb::on(&primary, EMPTY_CONTENT).await;
    let db = &strapi.db;
    caught_up(&primary, &standby).await;
    let url = format!(
        "postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{},127.0.0.1:{}/{}\
         ?sslmode=disable&target_session_attrs=read-write",
        primary.port(),
        standby.port(),
        db.name()
    );
    let bridge = Bridge::start(config_for(db, &url)).await;
    let mut client = reader(&bridge).await;
    strapi.sql(&insert_messages(1..=3)).await;
    assert_eq!(
        created_ids(&mut client, 3, DEFAULT_TIMEOUT).await,
        vec![1, 2, 3]
    );
    caught_up(&primary, &standby).await;

    primary.stop();
    standby.promote();
    wait::until(
        "the bridge to report the lost slot",
        FAILOVER_TIMEOUT,
        || {
            let text = logs.text();
            async move { text.contains("the replication slot was missing on this server") }
        },
    )
    .await;
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("the replication slot was missing"))
        .unwrap_or_default();
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!("127.0.0.1:{}", standby.port())),
        "the log names the host it reached: {line}"
    );
    // It goes on from the new slot.
    standby.psql(db.name(), &insert_messages(4..=5));
    assert_eq!(
        created_ids(&mut client, 2, FAILOVER_TIMEOUT).await,
        vec![4, 5]
    );
    bridge.stop().await.unwrap();
}
