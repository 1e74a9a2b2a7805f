//! The `strapi-io-bridge` binary: `check` on a database that cannot stream, `setup`, and
//! durability across a `kill -9` of a running process.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::pg::{ClusterOptions, TempCluster, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_strapi-io-bridge");

fn bridge() -> Command {
    let mut c = Command::new(BIN);
    // No secrets from the developer's environment leak into these runs.
    for var in [
        "DATABASE_URL",
        "JWT_SECRET",
        "API_TOKEN_SALT",
        "STRAPI_IO_ADMIN_TOKEN",
    ] {
        c.env_remove(var);
    }
    c.kill_on_drop(true);
    c
}

#[tokio::test]
async fn check_against_a_cluster_without_logical_wal_exits_non_zero_and_prints_the_fix() {
    let cluster = TempCluster::new(ClusterOptions {
        wal_level: "replica",
        ..ClusterOptions::default()
    });
    let url = cluster.superuser_url("postgres");
    let output = bridge()
        .args(["check", "--database-url", &url])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("wal_level = replica; logical decoding needs wal_level = logical"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ALTER SYSTEM SET wal_level = logical;"),
        "{stdout}"
    );
    assert!(stdout.contains("restart PostgreSQL"), "{stdout}");
    assert!(stdout.contains("the bridge cannot run"), "{stdout}");
    assert!(
        !stdout.contains(crate::support::pg::SUPERUSER_PASSWORD),
        "the password leaked: {stdout}"
    );
}

#[tokio::test]
async fn a_broken_config_line_is_named_and_nothing_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[database]\nslot = \"s\"\n\n[io]\npingInterval = 5\n",
    )
    .unwrap();
    let output = bridge()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("config.toml, line 5"), "{stderr}");
    assert!(stderr.contains("pingInterval"), "{stderr}");
}

#[tokio::test]
async fn setup_prints_and_applies_idempotent_sql() {
    let db = TestDb::new(TempCluster::shared());
    db.psql(crate::support::bridge::FIXTURE);
    let url = db.cluster().superuser_url(db.name());
    let printed = bridge()
        .args(["setup", "--print", "--database-url", &url])
        .output()
        .await
        .unwrap();
    assert!(printed.status.success());
    let sql = String::from_utf8_lossy(&printed.stdout);
    assert!(
        sql.contains("SET strapi_io.publication = 'strapi_io';"),
        "{sql}"
    );
    let first = bridge()
        .args(["setup", "--database-url", &url])
        .output()
        .await
        .unwrap();
    let first_out = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{first_out}");
    assert!(
        first_out.contains("created publication strapi_io"),
        "{first_out}"
    );
    assert!(
        first_out.contains("replica identity full on public.messages"),
        "{first_out}"
    );
    let second = bridge()
        .args(["setup", "--database-url", &url])
        .output()
        .await
        .unwrap();
    let second_out = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success());
    assert!(second_out.contains("nothing changed"), "{second_out}");
}

/// `tail` prints one JSON line per change and confirms a transaction once it is printed.
struct Tail {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Tail {
    fn start(config: &std::path::Path) -> Tail {
        let mut child = bridge()
            .arg("tail")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Tail { child, lines }
    }

    /// Reads lines until the commit of the transaction that inserted `id` (or, with `None`,
    /// until the output ends); records each transaction's commit end LSN and ids.
    async fn read_until(&mut self, id: Option<i64>, txns: &mut Vec<(String, Vec<i64>)>) {
        let mut current = Vec::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
                .await
                .expect("tail prints within 30 s")
                .unwrap();
            let Some(line) = line else {
                assert!(id.is_none(), "tail ended before printing {id:?}");
                return;
            };
            let v: Value = serde_json::from_str(&line).unwrap();
            match v["type"].as_str() {
                Some("insert") => {
                    current.push(v["new"]["id"].as_str().unwrap().parse().unwrap());
                }
                Some("commit") => {
                    let done = id.is_some_and(|id| current.contains(&id));
                    txns.push((
                        v["end_lsn"].as_str().unwrap().to_owned(),
                        std::mem::take(&mut current),
                    ));
                    if done {
                        return;
                    }
                }
                _ => {}
            }
        }
    }
}

fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

#[tokio::test]
async fn a_killed_process_loses_nothing_and_repeats_only_what_it_had_not_confirmed() {
    let db = TestDb::new(TempCluster::shared());
    db.psql(&format!(
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION {} FOR TABLE t",
        db.publication()
    ));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\nslot = \"{}\"\npublication = \"{}\"\n",
            db.cluster().superuser_url(db.name()),
            db.slot(),
            db.publication()
        ),
    )
    .unwrap();

    let mut first = Tail::start(&config);
    let mut seen_first = Vec::new();
    // tail streams once its slot is created and consistent (a slot being created shows as
    // active with no confirmed position yet); then write 1..=40, one transaction each.
    crate::support::wait::until(
        "the slot to exist",
        crate::support::wait::DEFAULT_TIMEOUT,
        || async {
            db.psql(&format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND active \
             AND confirmed_flush_lsn IS NOT NULL",
                db.slot()
            )) == "1"
        },
    )
    .await;
    let client = db.client().await;
    for id in 1..=40 {
        client
            .execute("INSERT INTO t VALUES ($1)", &[&id])
            .await
            .unwrap();
    }
    first.read_until(Some(20), &mut seen_first).await;
    // Let some of what was printed be confirmed, then SIGKILL mid-stream.
    let printed = lsn(&seen_first[seen_first.len() / 2].0);
    crate::support::wait::until(
        "a confirmation",
        crate::support::wait::DEFAULT_TIMEOUT,
        || async {
            let now = db.psql(&format!(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
                db.slot()
            ));
            lsn(&now) >= printed
        },
    )
    .await;
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    // What it wrote before dying was handed on: read the rest of its output.
    first.read_until(None, &mut seen_first).await;
    let confirmed = lsn(&db.psql(&format!(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
        db.slot()
    )));
    for id in 41..=60 {
        client
            .execute("INSERT INTO t VALUES ($1)", &[&id])
            .await
            .unwrap();
    }

    let mut second = Tail::start(&config);
    let mut seen_second = Vec::new();
    second.read_until(Some(60), &mut seen_second).await;
    second.child.start_kill().unwrap();

    // Nothing lost: every committed id arrived, in commit order within each run.
    let mut all = BTreeSet::new();
    for (_, ids) in seen_first.iter().chain(&seen_second) {
        all.extend(ids.iter().copied());
    }
    assert_eq!(all, (1..=60).collect::<BTreeSet<i64>>());
    let second_ids: Vec<i64> = seen_second
        .iter()
        .flat_map(|(_, ids)| ids.clone())
        .collect();
    assert!(second_ids.windows(2).all(|w| w[0] < w[1]), "{second_ids:?}");
    // Only unconfirmed transactions came again.
    for (end, ids) in &seen_second {
        assert!(
            lsn(end) > confirmed,
            "transaction {ids:?} ending at {end} was confirmed before the kill and came again"
        );
    }
    // What was confirmed came only once: the first run printed it before confirming.
    let first_confirmed: Vec<i64> = seen_first
        .iter()
        .filter(|(end, _)| lsn(end) <= confirmed)
        .flat_map(|(_, ids)| ids.clone())
        .collect();
    assert!(
        !first_confirmed.is_empty(),
        "the first run confirmed something before the kill"
    );
}
