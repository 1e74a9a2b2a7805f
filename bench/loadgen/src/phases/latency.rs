//! Latency: 1,000 clients over three roles, a writer committing single-row inserts at a steady
//! rate; per delivered event, the time from the writer's commit returning to the client reading
//! the event. Then the same at 20 events/s with 1,000 and 100 clients for the bridge next to two
//! bare servers driven on the same schedule: the Node socket.io server and the write floor
//! (`strapi-io-floor`), each only writing the same frame to the same sockets (for them the
//! instant is when the control line was written).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{ROLES, analyse, thousands, three_roles, wait_delivered};
use crate::client::Swarm;
use crate::report::Report;
use crate::stats::{Dist, round3};
use crate::trigger::{self, Target};
use crate::{Ctx, proc, servers};

pub async fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let a = &ctx.args;
    let clients = a
        .latency_clients
        .unwrap_or(if a.quick { 300 } else { 1000 });
    let rates: Vec<f64> = a
        .latency_rate
        .split(',')
        .map(|r| r.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("--latency-rate: {e}"))?;
    let seconds = a
        .latency_seconds
        .unwrap_or(if a.quick { 5.0 } else { 15.0 });

    let server = servers::bridge(ctx, "latency").await?;
    let swarm = Swarm::connect(server.addr, "/socket.io", &three_roles(ctx, clients), 128).await?;
    let connected = swarm.len() - swarm.failed;
    println!("    {connected} clients connected over {ROLES:?}");
    if swarm.failed > 0 {
        bail!("{} of {clients} clients could not connect", swarm.failed);
    }
    let mut runs = Vec::new();
    let mut at20 = None;
    for (i, &rate) in rates.iter().enumerate() {
        let (j, d) = one_rate(ctx, rep, &server, &swarm, connected, rate, seconds, i == 0).await?;
        if rate == 20.0 {
            at20 = Some(d);
        }
        runs.push(j);
    }
    swarm.close().await;
    server.stop().await?;

    // The bridge against the bare servers at 20 events/s.
    let mut compare = Vec::new();
    for size in [connected, 100] {
        let bridge = match at20 {
            Some(d) if size == connected => d,
            _ => bare(ctx, "bridge", size, seconds).await?,
        };
        let node = bare(ctx, "node", size, seconds).await?;
        let floor = bare(ctx, "floor", size, seconds).await?;
        println!(
            "    20/s, {size} clients: bridge {:.2} / {:.2} ms, node {:.2} / {:.2} ms, floor {:.2} / {:.2} ms (p50 / p99)",
            bridge.p50, bridge.p99, node.p50, node.p99, floor.p50, floor.p99
        );
        report_bare(rep, size, &bridge, &node, &floor);
        compare.push(json!({
            "clients": size,
            "rate_per_s": 20.0,
            "bridge": bridge.json(),
            "node_socketio": node.json(),
            "write_floor": floor.json(),
        }));
    }
    rep.set(
        "latency",
        json!({ "clients": connected, "runs": runs, "vs_bare_servers": compare }),
    );
    Ok(())
}

/// One server, `size` clients, 20 events/s for `seconds`: the latency distribution.
async fn bare(ctx: &Ctx, which: &str, size: usize, seconds: f64) -> Result<Dist> {
    let tag = format!("latency-{which}-{size}");
    let (server, specs, target) = match which {
        "bridge" => (
            servers::bridge(ctx, &tag).await?,
            three_roles(ctx, size),
            Target::Pg {
                url: ctx.args.database_url.clone(),
            },
        ),
        _ => {
            let s = if which == "node" {
                servers::node(ctx, &tag).await?
            } else {
                servers::floor(ctx, &tag).await?
            };
            let control = s.control.context("control port")?;
            super::set_payload(ctx, control).await?;
            (s, super::public(size), Target::Node { control })
        }
    };
    let swarm = Swarm::connect(server.addr, "/socket.io", &specs, 128).await?;
    let connected = swarm.len() - swarm.failed;
    if swarm.failed > 0 {
        bail!(
            "{} of {size} clients could not connect to {which}",
            swarm.failed
        );
    }
    let m = measure(&swarm, connected, target, 20.0, seconds).await?;
    swarm.close().await;
    server.stop().await?;
    if m.lost != 0 {
        println!("    {which}, {size} clients: {} deliveries lost", m.lost);
    }
    Ok(m.dist)
}

/// What one steady measurement found.
pub struct Measured {
    pub dist: Dist,
    pub lost: i64,
    pub expected: u64,
}

/// A short warm-up at `rate`, then `rate × seconds` events on schedule: the latency of every
/// delivery.
pub async fn measure(
    swarm: &Swarm,
    connected: usize,
    target: Target,
    rate: f64,
    seconds: f64,
) -> Result<Measured> {
    let base = swarm.total_count();
    let warm = trigger::steady(
        target.clone(),
        rate,
        (rate as usize).clamp(10, 200),
        "warm-up".into(),
    )
    .await?;
    wait_delivered(
        swarm,
        base,
        (warm.len() * connected) as u64,
        Instant::now() + Duration::from_secs(15),
    )
    .await;
    let _ = swarm.take();
    let base = swarm.total_count();
    let count = (rate * seconds).round().max(1.0) as usize;
    let fired = trigger::steady(target, rate, count, "latency".into()).await?;
    wait_delivered(
        swarm,
        base,
        (fired.len() * connected) as u64,
        Instant::now() + Duration::from_secs(15),
    )
    .await;
    let an = analyse(&fired, swarm.take(), connected);
    Ok(Measured {
        lost: an.lost(),
        expected: an.expected,
        dist: Dist::of(an.latencies),
    })
}

fn report_bare(rep: &mut Report, size: usize, b: &Dist, n: &Dist, f: &Dist) {
    let p = "1 latency";
    let base = format!(
        "node socket.io {:.2} / {:.2} ms; write floor {:.2} / {:.2} ms",
        n.p50, n.p99, f.p50, f.p99
    );
    let label = format!("commit → client p50 / p99, {size} clients, 20/s");
    let value = format!("{:.2} / {:.2} ms", b.p50, b.p99);
    rep.row(
        p,
        label.clone(),
        value.clone(),
        base,
        "≤ bare server (node)",
        Some(b.p50 <= n.p50 && b.p99 <= n.p99),
    );
    rep.row(
        p,
        label.clone(),
        format!("{:.2}× / {:.2}× floor", b.p50 / f.p50, b.p99 / f.p99),
        "",
        "then ≤ 1.1× floor",
        Some(b.p50 <= 1.1 * f.p50 && b.p99 <= 1.1 * f.p99),
    );
    if size <= 100 {
        rep.row(
            p,
            label,
            value,
            "",
            "≤ 3 / ≤ 10 ms",
            Some(b.p50 <= 3.0 && b.p99 <= 10.0),
        );
    }
}

#[allow(clippy::too_many_arguments)]
async fn one_rate(
    ctx: &Ctx,
    rep: &mut Report,
    server: &servers::Server,
    swarm: &Swarm,
    connected: usize,
    rate: f64,
    seconds: f64,
    main: bool,
) -> Result<(serde_json::Value, Dist)> {
    let a = &ctx.args;
    let clients = connected;
    let count = (rate * seconds).round().max(1.0) as usize;
    let target = Target::Pg {
        url: a.database_url.clone(),
    };
    // Warm-up: the same rate for a second, and every client has it before measuring.
    let base = swarm.total_count();
    let warm = trigger::steady(
        target.clone(),
        rate,
        (rate as usize).clamp(10, 200),
        "warm-up".into(),
    )
    .await?;
    wait_delivered(
        swarm,
        base,
        (warm.len() * connected) as u64,
        Instant::now() + Duration::from_secs(15),
    )
    .await;
    if let Some(frame) = swarm.captured() {
        ctx.template.lock().map(|mut t| *t = Some(frame)).ok();
    }
    let _ = swarm.take();
    let base = swarm.total_count();
    let dropped0 = server.dropped().await;

    println!("    measuring: {count} commits at {rate}/s to {connected} clients");
    let cpu0 = server.cpu();
    let self0 = proc::self_cpu_seconds();
    let m0 = proc::MachineCpu::now();
    let fired = trigger::steady(target, rate, count, "latency".into()).await?;
    let expected = (fired.len() * connected) as u64;
    let all = wait_delivered(
        swarm,
        base,
        expected,
        Instant::now() + Duration::from_secs(15),
    )
    .await;
    let cpu1 = server.cpu();
    let self1 = proc::self_cpu_seconds();
    let m1 = proc::MachineCpu::now();
    let dropped = server.dropped().await - dropped0;
    let an = analyse(&fired, swarm.take(), connected);
    if !all {
        println!("    not every event arrived within 15 s of the last commit");
    }
    let wall = an.span_seconds().max(1e-9);
    let dist = Dist::of(an.latencies.clone());
    let per_role: Vec<_> = an
        .per_role
        .iter()
        .enumerate()
        .map(|(i, v)| (ROLES[i], Dist::of(v.clone())))
        .collect();
    let server_cpu = cpu1 - cpu0;
    let us_per_msg = server_cpu * 1e6 / an.delivered.max(1) as f64;
    let machine_busy = m1.busy_since(&m0);

    let json = json!({
        "clients": connected,
        "clients_per_role": {"Public": clients.div_ceil(3), "Authenticated": (clients + 1) / 3, "Editor": clients / 3},
        "rate_per_s": rate,
        "commits": fired.len(),
        "seconds": seconds,
        "delivered_msgs_per_s": round3(an.delivered as f64 / wall),
        "expected_deliveries": an.expected,
        "delivered": an.delivered,
        "lost": an.lost(),
        "read_before_commit_returned": an.early,
        "bridge_dropped_metric": dropped,
        "latency": dist.json(),
        "latency_per_role": per_role.iter().map(|(r, d)| (r.to_string(), d.json())).collect::<serde_json::Map<_, _>>(),
        "server_cpu_seconds": round3(server_cpu),
        "server_cpu_us_per_delivered_msg": round3(us_per_msg),
        "load_tool_cpu_seconds": round3(self1 - self0),
        "machine_busy_fraction": round3(machine_busy),
        "machine_cpu": m1.since(&m0),
    });
    let p = "1 latency";
    rep.row(
        p,
        format!(
            "{}{connected} clients (3 roles), {rate}/s single-row commits, {seconds} s",
            if main { "setup: " } else { "also: " }
        ),
        format!("{} msgs/s delivered", thousands(an.delivered as f64 / wall)),
        "",
        "",
        None,
    );
    let goal = |g: &str, ok: bool| {
        if main {
            (g.to_owned(), Some(ok))
        } else {
            (String::new(), None)
        }
    };
    let (g, m) = goal("≤ 3 ms", dist.p50 <= 3.0);
    rep.row(
        p,
        format!("commit → client p50 @{rate}/s"),
        format!("{:.2} ms", dist.p50),
        if main {
            "Node plugin in Strapi: 7–12 ms (1,000 cl.), 4.2 ms (100 cl.)"
        } else {
            ""
        },
        g,
        m,
    );
    rep.row(
        p,
        format!("commit → client p90 @{rate}/s"),
        format!("{:.2} ms", dist.p90),
        "",
        "",
        None,
    );
    let (g, m) = goal("≤ 10 ms", dist.p99 <= 10.0);
    rep.row(
        p,
        format!("commit → client p99 @{rate}/s"),
        format!("{:.2} ms", dist.p99),
        if main {
            "Node plugin in Strapi: 17–28 ms (1,000 cl.), 7.8 ms (100 cl.)"
        } else {
            ""
        },
        g,
        m,
    );
    rep.row(
        p,
        format!("commit → client max @{rate}/s"),
        format!("{:.2} ms", dist.max),
        "",
        "",
        None,
    );
    if main {
        for (role, d) in &per_role {
            rep.row(
                p,
                format!("  {role}: p50 / p99"),
                format!("{:.2} / {:.2} ms", d.p50, d.p99),
                "",
                "",
                None,
            );
        }
    }
    let (g, m) = goal("0", an.lost() == 0);
    rep.row(
        p,
        format!("events lost @{rate}/s"),
        format!("{} of {}", an.lost(), thousands(an.expected as f64)),
        "",
        g,
        m,
    );
    rep.row(
        p,
        format!("bridge CPU per delivered msg @{rate}/s"),
        format!(
            "{us_per_msg:.2} µs ({:.0} % core; load tool {:.0} %; machine {:.0} % busy)",
            server_cpu * 100.0 / wall,
            (self1 - self0) * 100.0 / wall,
            machine_busy * 100.0
        ),
        "",
        "",
        None,
    );
    println!(
        "    p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; lost {}",
        dist.p50,
        dist.p90,
        dist.p99,
        dist.max,
        an.lost()
    );
    Ok((json, dist))
}
