//! Throughput: 200,000 row changes written as fast as PostgreSQL takes them (transactions of
//! 1,000 inserts) while both consumers are paused, then each drained alone:
//!
//! - baseline: `pg_recvlogical` on a second slot of the same publication (pgoutput,
//!   `proto_version=1`), writing to a pipe the load tool reads; done when the last row's
//!   marker text has come through;
//! - the bridge, with one client per role connected; done when every client has the last
//!   row's event.
//!
//! "Paused" is SIGSTOP: both stay connected (their walsenders fill the socket buffers and then
//! wait), and the clock starts at SIGCONT. How much each walsender had sent before SIGCONT is
//! reported. `wal_sender_timeout` is off in the benchmark cluster so a pause is not a timeout.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::{ROLES, thousands, three_roles};
use crate::client::Swarm;
use crate::report::Report;
use crate::stats::round3;
use crate::trigger::{self, Target};
use crate::{Ctx, clock, proc, servers};

const BASELINE_SLOT: &str = "bench_recvlogical";

async fn lsn(ctx: &Ctx) -> Result<String> {
    Ok(ctx
        .admin
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0))
}

/// The walsender of a slot: its pid and how many bytes of WAL past `from` it has sent.
async fn walsender(ctx: &Ctx, slot: &str, from: &str) -> Result<(u32, i64)> {
    let row = ctx
        .admin
        .query_opt(
            "SELECT s.pid, coalesce(pg_wal_lsn_diff(s.sent_lsn, $2::text::pg_lsn), 0)::int8 \
             FROM pg_replication_slots r JOIN pg_stat_replication s ON s.pid = r.active_pid \
             WHERE r.slot_name = $1",
            &[&slot, &from],
        )
        .await?;
    match row {
        Some(r) => Ok((r.get::<_, i32>(0) as u32, r.get(1))),
        None => bail!("slot {slot} has no active walsender"),
    }
}

async fn drop_baseline_slot(ctx: &Ctx) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = ctx
            .admin
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&BASELINE_SLOT],
            )
            .await;
        match r {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("dropping the pg_recvlogical slot"),
        }
    }
}

struct RunResult {
    json: Value,
    bridge_rate: f64,
    recv_rate: f64,
    lost: i64,
}

pub async fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let a = &ctx.args;
    let rows = a
        .throughput_rows
        .unwrap_or(if a.quick { 50_000 } else { 200_000 });
    let runs = a.throughput_runs.unwrap_or(if a.quick { 1 } else { 3 });
    let mut results = Vec::new();
    for i in 0..runs {
        println!(
            "    run {} of {runs}: {} changes",
            i + 1,
            thousands(rows as f64)
        );
        // A fresh bridge and fresh clients per run, as pg_recvlogical is fresh per run: a
        // replication connection whose socket buffers grew in an earlier run would otherwise
        // have more of the WAL sent before the clock starts.
        let server = servers::bridge(ctx, &format!("throughput-{}", i + 1)).await?;
        let r = match Swarm::connect(server.addr, "/socket.io", &three_roles(ctx, 3), 3).await {
            Ok(swarm) => {
                let r = warm_up(ctx, &swarm).await;
                let r = match r {
                    Ok(()) => one_run(ctx, &server, &swarm, rows).await,
                    Err(e) => Err(e),
                };
                let _ = drop_baseline_slot(ctx).await;
                let _ = proc::signal(server.pid, libc::SIGCONT);
                swarm.close().await;
                r
            }
            Err(e) => Err(e),
        };
        server.stop().await?;
        results.push(r?);
    }

    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let med_bridge = median(results.iter().map(|r| r.bridge_rate).collect());
    let med_recv = median(results.iter().map(|r| r.recv_rate).collect());
    // Each run's ratio compares two drains of the same writes; the median run is the figure.
    let ratio = median(
        results
            .iter()
            .map(|r| r.bridge_rate / r.recv_rate)
            .collect(),
    );
    let lost: i64 = results.iter().map(|r| r.lost).sum();
    rep.set(
        "throughput",
        json!({
            "changes_per_run": rows,
            "rows_per_transaction": a.throughput_batch,
            "clients": 3,
            "runs": results.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
            "bridge_changes_per_s_median": round3(med_bridge),
            "pg_recvlogical_changes_per_s_median": round3(med_recv),
            "ratio_median_of_runs": round3(ratio),
            "lost": lost,
        }),
    );
    let p = "2 throughput";
    rep.row(
        p,
        format!(
            "setup: {} inserts, {} per transaction, 3 clients; median of {runs} runs",
            thousands(rows as f64),
            a.throughput_batch
        ),
        "",
        "",
        "",
        None,
    );
    for (i, r) in results.iter().enumerate() {
        rep.row(
            p,
            format!("  run {}: bridge / pg_recvlogical", i + 1),
            format!(
                "{} / {} changes/s",
                thousands(r.bridge_rate),
                thousands(r.recv_rate)
            ),
            "",
            "",
            None,
        );
    }
    rep.row(
        p,
        "bridge: decode → authorize → emit",
        format!("{} changes/s", thousands(med_bridge)),
        format!("pg_recvlogical: {} changes/s", thousands(med_recv)),
        "",
        None,
    );
    rep.row(
        p,
        "ratio bridge / pg_recvlogical (median run)",
        format!("{ratio:.2}×"),
        "",
        "≥ 0.8×",
        Some(ratio >= 0.8),
    );
    rep.row(
        p,
        "ratio bridge / pg_recvlogical (median run)",
        format!("{ratio:.2}×"),
        "",
        "then ≥ 0.95×",
        Some(ratio >= 0.95),
    );
    rep.row(
        p,
        "events lost (all clients)",
        lost.to_string(),
        "",
        "0",
        Some(lost == 0),
    );
    Ok(())
}

/// A few events end to end, so the bridge streams before anything is measured.
async fn warm_up(ctx: &Ctx, swarm: &Swarm) -> Result<()> {
    if swarm.failed > 0 {
        bail!("{} clients could not connect", swarm.failed);
    }
    let warm = trigger::steady(
        Target::Pg {
            url: ctx.args.database_url.clone(),
        },
        50.0,
        5,
        "warm-up".into(),
    )
    .await?;
    let last = warm.last().map_or(0, |f| f.id);
    if !proc::wait_until(
        Instant::now() + Duration::from_secs(15),
        Duration::from_millis(5),
        || swarm.all_reached(last),
    )
    .await
    {
        bail!("warm-up events did not reach the clients");
    }
    Ok(())
}

async fn one_run(
    ctx: &Ctx,
    server: &servers::Server,
    swarm: &Swarm,
    rows: u64,
) -> Result<RunResult> {
    let a = &ctx.args;
    drop_baseline_slot(ctx).await?;
    ctx.admin
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&BASELINE_SLOT],
        )
        .await
        .context("creating the pg_recvlogical slot")?;
    let mut recv = Command::new(a.pg_bin.join("pg_recvlogical"))
        .arg("--dbname")
        .arg(&a.database_url)
        .arg("--slot")
        .arg(BASELINE_SLOT)
        .arg("--start")
        .arg("--no-loop")
        .args(["-o", "proto_version=1", "-o", "publication_names=strapi_io"])
        .args(["--file", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(ctx.work.join("pg_recvlogical.log"))?)
        .kill_on_drop(true)
        .spawn()
        .context("starting pg_recvlogical")?;
    let recv_pid = recv.id().context("pg_recvlogical pid")?;
    let mut out = recv.stdout.take().context("pg_recvlogical stdout")?;
    let start_lsn = lsn(ctx).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if walsender(ctx, BASELINE_SLOT, &start_lsn).await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("pg_recvlogical did not start streaming");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dropped0 = server.dropped().await;
    // Both consumers paused; the bridge's clients stay connected.
    proc::signal(recv_pid, libc::SIGSTOP)?;
    proc::signal(server.pid, libc::SIGSTOP)?;
    let _ = swarm.take();
    let counts0 = swarm.counts();

    let marker = format!("bench-end-{}", clock::now_us());
    let bulk = trigger::bulk_insert(&ctx.admin, rows, a.throughput_batch, &marker).await?;
    let end_lsn = lsn(ctx).await?;
    let wal_bytes: i64 = ctx
        .admin
        .query_one(
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::int8",
            &[&end_lsn, &start_lsn],
        )
        .await?
        .get(0);
    println!(
        "    wrote {} rows in {:.2} s ({} rows/s), {:.1} MB of WAL",
        thousands(bulk.rows as f64),
        bulk.seconds,
        thousands(bulk.rows as f64 / bulk.seconds),
        wal_bytes as f64 / 1e6
    );
    let (recv_ws, recv_present) = walsender(ctx, BASELINE_SLOT, &start_lsn).await?;
    let bridge_slot: String = ctx
        .admin
        .query_one(
            "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name <> $1 AND active \
             ORDER BY slot_name LIMIT 1",
            &[&BASELINE_SLOT],
        )
        .await?
        .get(0);
    let (bridge_ws, bridge_present) = walsender(ctx, &bridge_slot, &start_lsn).await?;

    // --- pg_recvlogical alone ---
    let ws0 = proc::cpu_seconds(recv_ws).unwrap_or(f64::NAN);
    let rc0 = proc::cpu_seconds(recv_pid).unwrap_or(f64::NAN);
    let t0 = Instant::now();
    proc::signal(recv_pid, libc::SIGCONT)?;
    let finder = memchr::memmem::Finder::new(marker.as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut bytes = 0u64;
    let found = tokio::time::timeout(Duration::from_secs(300), async {
        loop {
            let n = out.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            bytes += n as u64;
            carry.extend_from_slice(&buf[..n]);
            if finder.find(&carry).is_some() {
                return Ok(true);
            }
            let keep = marker.len().min(carry.len());
            carry.drain(..carry.len() - keep);
        }
    })
    .await;
    let recv_secs = t0.elapsed().as_secs_f64();
    let ws1 = proc::cpu_seconds(recv_ws).unwrap_or(f64::NAN);
    let rc1 = proc::cpu_seconds(recv_pid).unwrap_or(f64::NAN);
    let _ = proc::signal(recv_pid, libc::SIGTERM);
    let _ = tokio::time::timeout(Duration::from_secs(10), recv.wait()).await;
    let _ = recv.kill().await;
    match found {
        Ok(Ok(true)) => {}
        _ => bail!("pg_recvlogical did not deliver the last row"),
    }
    let recv_rate = bulk.rows as f64 / recv_secs;

    // --- the bridge alone ---
    let bw0 = proc::cpu_seconds(bridge_ws).unwrap_or(f64::NAN);
    let bc0 = server.cpu();
    let c0 = clock::now_us();
    let t0 = Instant::now();
    proc::signal(server.pid, libc::SIGCONT)?;
    let reached = proc::wait_until(
        Instant::now() + Duration::from_secs(300),
        Duration::from_millis(2),
        || swarm.all_reached(bulk.last_id),
    )
    .await;
    let polled_secs = t0.elapsed().as_secs_f64();
    let bw1 = proc::cpu_seconds(bridge_ws).unwrap_or(f64::NAN);
    let bc1 = server.cpu();
    if !reached {
        bail!("the bridge's clients did not all receive the last row within 300 s");
    }
    // Settle, then count what each client received of the written rows.
    let _ = super::wait_delivered(
        swarm,
        counts0.iter().sum(),
        bulk.rows * swarm.len() as u64,
        Instant::now() + Duration::from_secs(2),
    )
    .await;
    let recs = swarm.take();
    let mut last_receipt = 0u32;
    let mut lost = 0i64;
    let mut per_client = Vec::new();
    for (role, v) in &recs {
        let got = v
            .iter()
            .filter(|r| r.id >= bulk.first_id && r.id <= bulk.last_id)
            .count() as u64;
        if let Some(r) = v.iter().find(|r| r.id == bulk.last_id) {
            last_receipt = last_receipt.max(r.t);
        }
        lost += bulk.rows as i64 - got as i64;
        per_client.push(json!({"role": ROLES[*role], "received": got}));
    }
    let bridge_secs = if last_receipt > c0 {
        f64::from(last_receipt - c0) / 1e6
    } else {
        polled_secs
    };
    let dropped = server.dropped().await - dropped0;
    let bridge_rate = bulk.rows as f64 / bridge_secs;
    println!(
        "    pg_recvlogical {} changes/s ({recv_secs:.2} s); bridge {} changes/s ({bridge_secs:.2} s); lost {lost}",
        thousands(recv_rate),
        thousands(bridge_rate)
    );
    Ok(RunResult {
        json: json!({
            "rows": bulk.rows,
            "write_seconds": round3(bulk.seconds),
            "write_rows_per_s": round3(bulk.rows as f64 / bulk.seconds),
            "wal_bytes": wal_bytes,
            "pg_recvlogical": {
                "seconds": round3(recv_secs),
                "changes_per_s": round3(recv_rate),
                "bytes_out": bytes,
                "process_cpu_seconds": round3(rc1 - rc0),
                "walsender_cpu_seconds": round3(ws1 - ws0),
                "walsender_sent_before_resume_bytes": recv_present,
            },
            "bridge": {
                "seconds": round3(bridge_secs),
                "changes_per_s": round3(bridge_rate),
                "process_cpu_seconds": round3(bc1 - bc0),
                "cpu_us_per_change": round3((bc1 - bc0) * 1e6 / bulk.rows as f64),
                "walsender_cpu_seconds": round3(bw1 - bw0),
                "walsender_sent_before_resume_bytes": bridge_present,
                "clients": per_client,
                "lost": lost,
                "dropped_metric": dropped,
            },
            "ratio": round3(bridge_rate / recv_rate),
        }),
        bridge_rate,
        recv_rate,
        lost,
    })
}
