//! Memory: the bridge's RSS idle, with 10,000 idle websocket clients (KB per connection; the
//! Node socket.io baseline measured the same way), and its peak RSS while one 1,000,000-row
//! transaction streams through to one client per role (every event must arrive).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use super::{public, thousands, three_roles};
use crate::client::Swarm;
use crate::report::Report;
use crate::stats::round3;
use crate::trigger;
use crate::{Ctx, proc, servers};

/// RSS idle and with `n` idle clients; returns (idle KB, with-clients KB, KB per connection).
async fn idle(ctx: &Ctx, node: bool, n: usize) -> Result<(u64, u64, f64, usize)> {
    let server = if node {
        servers::node(ctx, "memory").await?
    } else {
        servers::bridge(ctx, "memory").await?
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = server.rss_kb();
    let swarm = Swarm::connect(server.addr, "/socket.io", &public(n), 256).await?;
    let connected = swarm.len() - swarm.failed;
    // Let buffers of the handshakes be returned, then take the lowest of a few samples.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut with = u64::MAX;
    for _ in 0..5 {
        with = with.min(server.rss_kb());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let per = (with.saturating_sub(idle)) as f64 / connected.max(1) as f64;
    swarm.close().await;
    server.stop().await?;
    Ok((idle, with, per, connected))
}

pub async fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let a = &ctx.args;
    let n = a
        .idle_clients
        .unwrap_or(if a.quick { 2000 } else { 10_000 });
    let big = a
        .big_rows
        .unwrap_or(if a.quick { 100_000 } else { 1_000_000 });
    let p = "4 memory";

    let (b_idle, b_with, b_per, b_conn) = idle(ctx, false, n).await?;
    println!(
        "    bridge: idle {b_idle} KB, {b_conn} clients {b_with} KB → {b_per:.2} KB/connection"
    );
    let (n_idle, n_with, n_per, n_conn) = idle(ctx, true, n).await?;
    println!(
        "    node:   idle {n_idle} KB, {n_conn} clients {n_with} KB → {n_per:.2} KB/connection"
    );

    // One large transaction.
    let server = servers::bridge(ctx, "memory-big").await?;
    let swarm = Swarm::connect(server.addr, "/socket.io", &three_roles(ctx, 3), 3).await?;
    if swarm.failed > 0 {
        bail!("clients could not connect");
    }
    swarm.set_recording(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kb();
    proc::reset_peak(server.pid).ok();
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop, pid) = (peak.clone(), stop.clone(), server.pid);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(kb) = proc::rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let counts0: u64 = swarm.total_count();
    let dropped0 = server.dropped().await;
    let marker = format!("bench-big-{}", crate::clock::now_us());
    println!("    one transaction of {} rows", thousands(big as f64));
    let bulk = trigger::bulk_insert(&ctx.admin, big, big, &marker).await?;
    let committed = Instant::now();
    println!("    committed in {:.1} s; streaming", bulk.seconds);
    let reached = proc::wait_until(
        committed + Duration::from_secs(600),
        Duration::from_millis(10),
        || swarm.all_reached(bulk.last_id),
    )
    .await;
    let stream_s = committed.elapsed().as_secs_f64();
    // A moment for stragglers, then count.
    super::wait_delivered(
        &swarm,
        counts0,
        bulk.rows * 3,
        Instant::now() + Duration::from_secs(2),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let received = swarm.total_count() - counts0;
    let lost = (bulk.rows * 3) as i64 - received as i64;
    let dropped = server.dropped().await - dropped0;
    let hwm = proc::peak_rss_kb(server.pid).unwrap_or(0);
    let peak_kb = peak.load(Ordering::Relaxed).max(hwm);
    let after = server.rss_kb();
    swarm.close().await;
    server.stop().await?;
    println!(
        "    peak RSS {} KB (before {before} KB, after {after} KB); {} of {} events received; {stream_s:.1} s after commit",
        peak_kb,
        thousands(received as f64),
        thousands((bulk.rows * 3) as f64)
    );

    rep.set(
        "memory",
        json!({
            "idle_clients": n,
            "bridge": {"idle_rss_kb": b_idle, "with_clients_rss_kb": b_with, "clients": b_conn, "kb_per_connection": round3(b_per)},
            "node_socketio": {"idle_rss_kb": n_idle, "with_clients_rss_kb": n_with, "clients": n_conn, "kb_per_connection": round3(n_per)},
            "big_transaction": {
                "rows": bulk.rows,
                "write_seconds": round3(bulk.seconds),
                "clients": 3,
                "rss_kb_before": before,
                "peak_rss_kb": peak_kb,
                "rss_kb_after": after,
                "all_reached_last_event": reached,
                "commit_to_last_event_seconds": round3(stream_s),
                "events_per_s_after_commit": round3(bulk.rows as f64 / stream_s),
                "expected": bulk.rows * 3,
                "received": received,
                "lost": lost,
                "dropped_metric": dropped,
            },
        }),
    );
    rep.row(
        p,
        "bridge RSS idle",
        format!("{:.1} MB", b_idle as f64 / 1024.0),
        format!("node socket.io: {:.1} MB", n_idle as f64 / 1024.0),
        "",
        None,
    );
    rep.row(
        p,
        format!("bridge RSS with {b_conn} idle clients"),
        format!("{:.1} MB", b_with as f64 / 1024.0),
        format!("node socket.io: {:.1} MB", n_with as f64 / 1024.0),
        "",
        None,
    );
    rep.row(
        p,
        "memory per idle websocket connection",
        format!("{b_per:.2} KB"),
        format!("node socket.io: {n_per:.2} KB here; 19.9 KB (1,000 cl., earlier)"),
        "≤ 8 KB",
        Some(b_per <= 8.0),
    );
    rep.row(
        p,
        format!("{}-row transaction: peak RSS", thousands(big as f64)),
        format!("{:.1} MB", peak_kb as f64 / 1024.0),
        "",
        "≤ 200 MB",
        Some(peak_kb as f64 / 1024.0 <= 200.0),
    );
    rep.row(
        p,
        format!("{}-row transaction: events lost", thousands(big as f64)),
        format!(
            "{lost} of {} ({:.1} s after commit)",
            thousands((bulk.rows * 3) as f64),
            stream_s
        ),
        "",
        "0",
        Some(lost == 0 && reached),
    );
    Ok(())
}
