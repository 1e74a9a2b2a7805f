//! Memory: the RSS each idle socket costs, for the bridge and the Node socket.io baseline in the
//! same run, as clients really connect: websocket-only, and socket.io-client's default
//! (long-polling handshake, then the upgrade); each 3 s after connecting and again after every
//! client has answered 32 heartbeats (short ping interval). Then the RSS per socket after a
//! burst that makes every socket's writer batch (N events in one transaction to 10,000 sockets),
//! once every client has every event. Last, the bridge's peak RSS while one 1,000,000-row
//! transaction streams through to one client per role (every event must arrive).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{public, set_payload, thousands, three_roles};
use crate::client::{Handshake, Swarm};
use crate::report::Report;
use crate::servers::{Extra, Pings, Server};
use crate::stats::round3;
use crate::trigger;
use crate::{Ctx, proc, servers};

/// `[delivery] replay_window` of the memory phase's bridges: the replay buffer (every event of
/// the last 2 minutes by default, up to 64 MiB, shared by all sockets) would otherwise hold what
/// earlier phases wrote and shrink while the per-socket figures are measured.
const REPLAY_WINDOW: &str = "1s";

/// The same for the burst's bridge: the default window. The burst goes out at once (a
/// transaction's events are emitted together) and 10,000 sockets drain it for about a minute,
/// fed from the buffer; a shorter window would tell the sockets still draining to resync
/// (which the phase would count as not drained). The 2,000 events held are about 1 MB.
const BURST_REPLAY_WINDOW: &str = "120s";

/// Largest burst (clients × events) the Node server is given (it buffers a copy per socket).
const NODE_BURST_MAX_FRAMES: u64 = 4_000_000;

/// Heartbeats every client must have answered before the second measurement.
const HEARTBEATS: u32 = 32;

/// The lowest of five RSS samples 200 ms apart (allocator noise goes one way).
async fn settled_rss(server: &Server) -> u64 {
    let mut with = u64::MAX;
    for _ in 0..5 {
        with = with.min(server.rss_kb());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    with
}

/// One idle measurement: a fresh server, `n` clients connecting one way.
struct Idle {
    idle_kb: u64,
    clients: usize,
    rss_3s_kb: u64,
    per_3s: f64,
    rss_hb_kb: u64,
    per_hb: f64,
    /// Clients still connected at the second measurement.
    alive_hb: usize,
    min_pings: u32,
    heartbeat_wait_s: f64,
}

impl Idle {
    fn json(&self) -> Value {
        json!({
            "idle_rss_kb": self.idle_kb,
            "clients": self.clients,
            "after_3s": {"rss_kb": self.rss_3s_kb, "kb_per_socket": round3(self.per_3s)},
            "after_heartbeats": {
                "rss_kb": self.rss_hb_kb,
                "kb_per_socket": round3(self.per_hb),
                "clients_connected": self.alive_hb,
                "fewest_pings_answered": self.min_pings,
                "seconds_after_connecting": round3(self.heartbeat_wait_s),
            },
        })
    }
}

async fn idle(ctx: &Ctx, node: bool, how: Handshake, n: usize, pings: Pings) -> Result<Idle> {
    let tag = format!(
        "memory-{}",
        if how == Handshake::Websocket {
            "ws"
        } else {
            "polling"
        }
    );
    let server = if node {
        servers::node_with(ctx, &tag, Some(pings)).await?
    } else {
        servers::bridge_with(
            ctx,
            &tag,
            Some(Extra {
                pings: Some(pings),
                replay_window: Some(REPLAY_WINDOW),
            }),
        )
        .await?
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kb = server.rss_kb();
    let swarm = Swarm::connect_with(server.addr, "/socket.io", &public(n), 128, how).await?;
    let connected_at = Instant::now();
    let clients = swarm.len() - swarm.failed;
    // Let buffers of the handshakes be returned, then take the lowest of a few samples.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_3s_kb = settled_rss(&server).await;
    let per_3s = rss_3s_kb.saturating_sub(idle_kb) as f64 / clients.max(1) as f64;
    let deadline = connected_at
        + Duration::from_millis(pings.interval_ms * u64::from(HEARTBEATS) * 4)
        + Duration::from_secs(60);
    let reached = proc::wait_until(deadline, Duration::from_millis(100), || {
        swarm.min_pings() > HEARTBEATS
    })
    .await;
    if !reached {
        println!(
            "    not every client answered {HEARTBEATS} heartbeats in time (fewest {})",
            swarm.min_pings()
        );
    }
    let heartbeat_wait_s = connected_at.elapsed().as_secs_f64();
    let rss_hb_kb = settled_rss(&server).await;
    let alive_hb = swarm.alive();
    let min_pings = swarm.min_pings();
    let per_hb = rss_hb_kb.saturating_sub(idle_kb) as f64 / alive_hb.max(1) as f64;
    swarm.close().await;
    server.stop().await?;
    Ok(Idle {
        idle_kb,
        clients,
        rss_3s_kb,
        per_3s,
        rss_hb_kb,
        per_hb,
        alive_hb,
        min_pings,
        heartbeat_wait_s,
    })
}

/// The burst measurement: RSS per socket idle, and after `events` events in one go have reached
/// every one of `n` websocket clients.
struct Burst {
    idle_kb: u64,
    clients: usize,
    rss_idle_kb: u64,
    per_idle: f64,
    events: u64,
    drained: bool,
    drain_s: f64,
    received: u64,
    rss_after_kb: u64,
    per_after: f64,
    peak_kb: u64,
    dropped: f64,
}

impl Burst {
    fn ratio(&self) -> f64 {
        self.per_after / self.per_idle.max(1e-9)
    }

    fn json(&self) -> Value {
        json!({
            "idle_rss_kb": self.idle_kb,
            "clients": self.clients,
            "before_burst": {"rss_kb": self.rss_idle_kb, "kb_per_socket": round3(self.per_idle)},
            "events": self.events,
            "expected": self.events * self.clients as u64,
            "received": self.received,
            "drained": self.drained,
            "drain_seconds": round3(self.drain_s),
            "after_drain": {"rss_kb": self.rss_after_kb, "kb_per_socket": round3(self.per_after)},
            "peak_rss_kb": self.peak_kb,
            "after_vs_before": round3(self.ratio()),
            "bridge_dropped_metric": self.dropped,
        })
    }
}

async fn burst(ctx: &Ctx, node: bool, n: usize, events: u32, deadline_s: u64) -> Result<Burst> {
    let server = if node {
        servers::node(ctx, "memory-burst").await?
    } else {
        servers::bridge_with(
            ctx,
            "memory-burst",
            Some(Extra {
                pings: None,
                replay_window: Some(BURST_REPLAY_WINDOW),
            }),
        )
        .await?
    };
    if let Some(control) = server.control {
        set_payload(ctx, control).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kb = server.rss_kb();
    let swarm = Swarm::connect(server.addr, "/socket.io", &public(n), 256).await?;
    let clients = swarm.len() - swarm.failed;
    swarm.set_recording(false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle_kb = settled_rss(&server).await;
    let per_idle = rss_idle_kb.saturating_sub(idle_kb) as f64 / clients.max(1) as f64;
    let dropped0 = server.dropped().await;
    let base = swarm.total_count();
    proc::reset_peak(server.pid).ok();
    let t0 = Instant::now();
    let last_id = match server.control {
        Some(control) => trigger::node_burst(control, events).await?.1,
        None => {
            let marker = format!("bench-burst-{}", crate::clock::now_us());
            trigger::bulk_insert(&ctx.admin, u64::from(events), u64::from(events), &marker)
                .await?
                .last_id
        }
    };
    let expected = u64::from(events) * clients as u64;
    let drained = proc::wait_until(
        t0 + Duration::from_secs(deadline_s),
        Duration::from_millis(20),
        || swarm.total_count() >= base + expected && swarm.all_reached(last_id),
    )
    .await;
    let drain_s = t0.elapsed().as_secs_f64();
    if !node && let Some(frame) = swarm.captured() {
        ctx.template.lock().map(|mut t| *t = Some(frame)).ok();
    }
    let received = swarm.total_count() - base;
    // Drained: let freed buffers go back, then the lowest of a few samples.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_kb = settled_rss(&server).await;
    let alive = swarm.alive();
    let per_after = rss_after_kb.saturating_sub(idle_kb) as f64 / alive.max(1) as f64;
    let peak_kb = proc::peak_rss_kb(server.pid).unwrap_or(0);
    let dropped = server.dropped().await - dropped0;
    swarm.close().await;
    server.stop().await?;
    Ok(Burst {
        idle_kb,
        clients,
        rss_idle_kb,
        per_idle,
        events: u64::from(events),
        drained,
        drain_s,
        received,
        rss_after_kb,
        per_after,
        peak_kb,
        dropped,
    })
}

pub async fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let a = &ctx.args;
    let n = a
        .idle_clients
        .unwrap_or(if a.quick { 2000 } else { 10_000 });
    let big = a
        .big_rows
        .unwrap_or(if a.quick { 100_000 } else { 1_000_000 });
    let ping_ms = a.memory_ping_ms.unwrap_or(if a.quick { 250 } else { 500 });
    let pings = Pings {
        interval_ms: ping_ms,
        timeout_ms: 20_000,
    };
    let burst_n = a
        .burst_clients
        .unwrap_or(if a.quick { 1000 } else { 10_000 });
    let burst_events = a.burst_events.unwrap_or(if a.quick { 1000 } else { 2000 });
    let p = "4 memory";

    // Idle sockets: both servers, both ways of connecting.
    let mut idles: Vec<(&str, &str, Idle)> = Vec::new();
    for (how, how_name) in [
        (Handshake::Websocket, "websocket"),
        (Handshake::PollingUpgrade, "polling → websocket"),
    ] {
        for (node, name) in [(false, "bridge"), (true, "node")] {
            let r = idle(ctx, node, how, n, pings)
                .await
                .with_context(|| format!("{name}, {how_name}"))?;
            println!(
                "    {name:<6} {how_name:<20} idle {} KB; {} clients: {:.2} KB/socket after 3 s, {:.2} KB/socket after {} heartbeats ({:.0} s)",
                r.idle_kb, r.clients, r.per_3s, r.per_hb, r.min_pings, r.heartbeat_wait_s
            );
            idles.push((name, how_name, r));
        }
    }
    let get = |server: &str, how: &str| {
        idles
            .iter()
            .find(|(s, h, _)| *s == server && *h == how)
            .map(|(_, _, r)| r)
    };

    // The burst.
    let mut bursts: Vec<(&str, Burst)> = Vec::new();
    for (node, name) in [(false, "bridge"), (true, "node")] {
        if !a.burst_servers.contains(name) {
            continue;
        }
        // Node keeps a copy of each frame per socket while the socket is behind: with 10,000
        // sockets and 2,000 events that is over 10 GB on a shared machine.
        let frames = burst_n as u64 * u64::from(burst_events);
        if node && frames > NODE_BURST_MAX_FRAMES {
            println!(
                "    node: burst skipped ({} frames would be buffered, about {:.1} GB; at most {} with --burst-clients / --burst-events)",
                thousands(frames as f64),
                frames as f64 * 700.0 / 1e9,
                thousands(NODE_BURST_MAX_FRAMES as f64)
            );
            continue;
        }
        println!("    {name}: {burst_events} events in one go to {burst_n} websocket clients");
        let r = burst(
            ctx,
            node,
            burst_n,
            burst_events,
            if a.quick { 120 } else { 600 },
        )
        .await
        .with_context(|| format!("{name}, burst"))?;
        println!(
            "    {name:<6} burst: {:.2} KB/socket before, {:.2} KB/socket after ({:.2}×); drained {} in {:.1} s; peak RSS {} KB, after {} KB",
            r.per_idle,
            r.per_after,
            r.ratio(),
            r.drained,
            r.drain_s,
            r.peak_kb,
            r.rss_after_kb
        );
        bursts.push((name, r));
    }

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

    let idle_json: Vec<Value> = idles
        .iter()
        .map(|(server, how, r)| {
            let mut v = r.json();
            v["server"] = json!(server);
            v["handshake"] = json!(how);
            v
        })
        .collect();
    let burst_json: serde_json::Map<String, Value> = bursts
        .iter()
        .map(|(name, r)| ((*name).to_owned(), r.json()))
        .collect();
    rep.set(
        "memory",
        json!({
            "idle_clients": n,
            "ping_interval_ms": pings.interval_ms,
            "ping_timeout_ms": pings.timeout_ms,
            "heartbeats": HEARTBEATS,
            "idle": idle_json,
            "burst": burst_json,
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
    if let (Some(b), Some(nd)) = (get("bridge", "websocket"), get("node", "websocket")) {
        rep.row(
            p,
            "RSS idle (no clients)",
            format!("{:.1} MB", b.idle_kb as f64 / 1024.0),
            format!("node socket.io: {:.1} MB", nd.idle_kb as f64 / 1024.0),
            "",
            None,
        );
    }
    for how in ["websocket", "polling → websocket"] {
        let (Some(b), Some(nd)) = (get("bridge", how), get("node", how)) else {
            continue;
        };
        rep.row(
            p,
            format!("KB per idle socket, {how}, 3 s after connecting"),
            format!("{:.2} KB ({} clients)", b.per_3s, b.clients),
            format!("node socket.io: {:.2} KB", nd.per_3s),
            "",
            None,
        );
        let label =
            format!("KB per idle socket, {how}, after {HEARTBEATS}+ heartbeats ({ping_ms} ms)");
        let ok = b.min_pings > HEARTBEATS && nd.min_pings > HEARTBEATS;
        let mut value = format!("{:.2} KB", b.per_hb);
        if !ok {
            value.push_str(" (not all clients reached 32 heartbeats)");
        }
        for (who, r) in [("bridge", b), ("node", nd)] {
            if r.alive_hb < r.clients {
                value.push_str(&format!(
                    " ({who}: {} of {} clients still connected)",
                    r.alive_hb, r.clients
                ));
            }
        }
        let base = format!(
            "node socket.io: {:.2} KB; RSS {:.1} MB vs {:.1} MB",
            nd.per_hb,
            b.rss_hb_kb as f64 / 1024.0,
            nd.rss_hb_kb as f64 / 1024.0
        );
        if how == "websocket" {
            rep.row(p, label, value, base, "≤ 8 KB", Some(b.per_hb <= 8.0));
        } else {
            rep.row(
                p,
                label.clone(),
                value.clone(),
                base,
                "≤ node socket.io",
                Some(b.per_hb <= nd.per_hb),
            );
            rep.row(p, label, value, "", "then ≤ 8 KB", Some(b.per_hb <= 8.0));
        }
    }
    for (name, r) in &bursts {
        let label = format!(
            "{name}: KB per socket after {} events to {} sockets, drained",
            thousands(r.events as f64),
            thousands(r.clients as f64)
        );
        let value = format!(
            "{:.2} KB = {:.2}× idle ({:.2} KB){}",
            r.per_after,
            r.ratio(),
            r.per_idle,
            if r.drained {
                String::new()
            } else {
                format!(
                    ", NOT drained: {} of {}",
                    r.received,
                    r.events * r.clients as u64
                )
            }
        );
        let base = format!(
            "RSS after {:.1} MB (peak {:.1} MB), drained in {:.1} s",
            r.rss_after_kb as f64 / 1024.0,
            r.peak_kb as f64 / 1024.0,
            r.drain_s
        );
        if *name == "bridge" {
            rep.row(
                p,
                label,
                value,
                base,
                "≤ 1.5× idle",
                Some(r.drained && r.ratio() <= 1.5),
            );
        } else {
            rep.row(p, label, value, base, "", None);
        }
    }
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
