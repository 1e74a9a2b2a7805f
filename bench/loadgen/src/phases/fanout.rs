//! Fan-out: N clients in one role (Public), the same for the bridge and for a minimal Node
//! socket.io 4.8 server broadcasting the bridge's own payload. The event rate goes up in steps
//! until delivery lags; per step: delivered messages/s, how long until the last client had the
//! last event, and the server's CPU per delivered message.
//!
//! A step is *sustained* when every client got every event and the last event of the step
//! reached the last client within max(250 ms, 3 × the single-event fan-out time): otherwise a
//! backlog built up during the step.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{analyse, public, set_payload, thousands, wait_delivered};
use crate::client::Swarm;
use crate::report::Report;
use crate::stats::{Dist, percentile, round3};
use crate::trigger::{self, Target};

use crate::{Ctx, proc, servers};

/// Rate steps at most (×1.5 each: 10 → ~4,400 events/s for 1,000 clients).
const MAX_STEPS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bridge,
    Node,
    Floor,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bridge => "bridge",
            Kind::Node => "node socket.io",
            Kind::Floor => "write floor",
        }
    }
}

#[derive(Debug, Clone)]
struct Step {
    rate: f64,
    events: usize,
    expected: u64,
    delivered: u64,
    lost: i64,
    delivered_per_s: f64,
    last_event_ms: f64,
    completion_p50_ms: f64,
    latency: Dist,
    server_cpu_s: f64,
    us_per_msg: f64,
    server_core_frac: f64,
    load_tool_core_frac: f64,
    machine_busy: f64,
    machine: Value,
    fired_per_s: f64,
    sustained: bool,
}

impl Step {
    fn json(&self) -> Value {
        json!({
            "events_per_s": round3(self.rate),
            "offered_msgs_per_s": round3(self.rate * (self.expected as f64 / self.events.max(1) as f64)),
            "events": self.events,
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.lost,
            "delivered_msgs_per_s": round3(self.delivered_per_s),
            "last_event_to_last_client_ms": round3(self.last_event_ms),
            "event_to_last_client_p50_ms": round3(self.completion_p50_ms),
            "latency": self.latency.json(),
            "server_cpu_seconds": round3(self.server_cpu_s),
            "server_cpu_us_per_delivered_msg": round3(self.us_per_msg),
            "server_cores_used": round3(self.server_core_frac),
            "load_tool_cores_used": round3(self.load_tool_core_frac),
            "machine_busy_fraction": round3(self.machine_busy),
            "machine_cpu": self.machine,
            "fired_events_per_s": round3(self.fired_per_s),
            "sustained": self.sustained,
        })
    }
}

struct Outcome {
    clients: usize,
    single_ms: f64,
    steps: Vec<Step>,
    json: Value,
}

impl Outcome {
    fn best(&self) -> Option<&Step> {
        self.steps.iter().rfind(|s| s.sustained)
    }
}

async fn step(
    server: &servers::Server,
    swarm: &Swarm,
    target: &Target,
    rate: f64,
    count: usize,
    clients: usize,
    limit_ms: f64,
) -> Result<Step> {
    let _ = swarm.take();
    let base = swarm.total_count();
    let cpu0 = server.cpu();
    let self0 = proc::self_cpu_seconds();
    let (busy0, total0) = proc::machine_jiffies();
    let m0 = proc::MachineCpu::now();
    let t0 = Instant::now();
    let fired = trigger::steady(target.clone(), rate, count, "fan-out".into()).await?;
    let expected = (fired.len() * clients) as u64;
    let grace = Duration::from_secs_f64((limit_ms / 1000.0 * 4.0).max(3.0));
    wait_delivered(swarm, base, expected, Instant::now() + grace).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = server.cpu() - cpu0;
    let self_cpu = proc::self_cpu_seconds() - self0;
    let (busy1, total1) = proc::machine_jiffies();
    let machine = proc::MachineCpu::now().since(&m0);
    let an = analyse(&fired, swarm.take(), clients);
    let fired_per_s = match (fired.first(), fired.last()) {
        (Some(a), Some(b)) if b.t > a.t => (fired.len() - 1) as f64 * 1e6 / f64::from(b.t - a.t),
        _ => f64::NAN,
    };
    let last_event_ms = an
        .completion
        .last()
        .map_or(f64::NAN, |c| *c as f64 / 1000.0);
    let mut comp = an.completion.clone();
    comp.sort_unstable();
    let sustained = an.lost() == 0 && last_event_ms <= limit_ms;
    Ok(Step {
        rate,
        events: fired.len(),
        expected: an.expected,
        delivered: an.delivered,
        lost: an.lost(),
        delivered_per_s: an.delivered as f64 / an.span_seconds().max(1e-9),
        last_event_ms,
        completion_p50_ms: percentile(&comp, 50.0).map_or(f64::NAN, |v| v as f64 / 1000.0),
        latency: Dist::of(an.latencies),
        server_cpu_s: cpu,
        us_per_msg: cpu * 1e6 / an.delivered.max(1) as f64,
        server_core_frac: cpu / wall,
        load_tool_core_frac: self_cpu / wall,
        machine_busy: (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64,
        machine,
        fired_per_s,
        sustained,
    })
}

async fn one(ctx: &Ctx, kind: Kind, clients: usize, max_steps: usize) -> Result<Outcome> {
    let a = &ctx.args;
    let tag = format!("fanout-{}", clients);
    let server = match kind {
        Kind::Bridge => servers::bridge(ctx, &tag).await?,
        Kind::Node => servers::node(ctx, &tag).await?,
        Kind::Floor => servers::floor(ctx, &tag).await?,
    };
    let target = match kind {
        Kind::Bridge => Target::Pg {
            url: a.database_url.clone(),
        },
        Kind::Node | Kind::Floor => {
            let control = server.control.context("control port")?;
            set_payload(ctx, control).await?;
            Target::Node { control }
        }
    };
    let rss0 = server.rss_kb();
    let t = Instant::now();
    let swarm = Swarm::connect(server.addr, "/socket.io", &public(clients), 256).await?;
    let connect_s = t.elapsed().as_secs_f64();
    let connected = swarm.len() - swarm.failed;
    if swarm.failed > 0 {
        bail!(
            "{} of {clients} clients could not connect to {}",
            swarm.failed,
            kind.name()
        );
    }
    // Let the handshake work settle before measuring CPU.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = server.rss_kb();
    println!(
        "    {}: {connected} clients connected in {connect_s:.1} s",
        kind.name()
    );

    // One event at a time: how long until the last client has it.
    let single = step(&server, &swarm, &target, 4.0, 8, connected, 5000.0).await?;
    if kind == Kind::Bridge
        && let Some(frame) = swarm.captured()
        && let Ok(mut t) = ctx.template.lock()
    {
        t.get_or_insert(frame);
    }
    let single_ms = single.completion_p50_ms;
    let limit_ms = (3.0 * single_ms).max(250.0);
    println!(
        "    single event to all {connected}: p50 {single_ms:.1} ms; sustained means the last event within {limit_ms:.0} ms"
    );

    let step_s = a
        .fanout_step_seconds
        .unwrap_or(if a.quick { 2.0 } else { 4.0 });
    let start_msgs = if clients >= 5000 { 20_000.0 } else { 10_000.0 };
    let mut rate = start_msgs / clients as f64;
    let mut steps = Vec::new();
    for _ in 0..max_steps {
        let count = ((rate * step_s).ceil() as usize).max(8);
        let s = step(&server, &swarm, &target, rate, count, connected, limit_ms).await?;
        println!(
            "      {:>7.1} ev/s → {:>9} msgs/s delivered, last event {:>7.1} ms, lost {}, server {:.2} µs/msg ({:.0} % core), load tool {:.0} % core{}",
            rate,
            thousands(s.delivered_per_s),
            s.last_event_ms,
            s.lost,
            s.us_per_msg,
            s.server_core_frac * 100.0,
            s.load_tool_core_frac * 100.0,
            if s.sustained { "" } else { "  ← lags" }
        );
        let ok = s.sustained;
        steps.push(s);
        if !ok || swarm.alive() < connected {
            break;
        }
        rate *= 1.5;
        // Let queues empty between steps.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let dropped = server.dropped().await;
    let alive = swarm.alive();
    swarm.close().await;
    server.stop().await?;
    let out = Outcome {
        clients: connected,
        single_ms,
        json: Value::Null,
        steps,
    };
    let best = out.best().map(Step::json);
    let json = json!({
        "server": kind.name(),
        "clients": connected,
        "clients_still_connected_at_end": alive,
        "connect_seconds": round3(connect_s),
        "rss_kb_before_clients": rss0,
        "rss_kb_with_clients": rss1,
        "single_event": single.json(),
        "sustained_limit_ms": round3(limit_ms),
        "steps": out.steps.iter().map(Step::json).collect::<Vec<_>>(),
        "highest_sustained": best,
        "bridge_dropped_metric": dropped,
    });
    Ok(Outcome { json, ..out })
}

pub async fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let a = &ctx.args;
    let sizes: Vec<usize> = match &a.fanout_clients {
        Some(s) => s
            .split(',')
            .map(|x| x.trim().parse().context("--fanout-clients"))
            .collect::<Result<_>>()?,
        None if a.quick => vec![1000],
        None => vec![1000, 10000],
    };
    let mut all = Vec::new();
    let p = "3 fan-out";
    let servers = a.fanout_servers.as_str();
    for &n in &sizes {
        let bridge = if servers.contains("bridge") {
            Some(one(ctx, Kind::Bridge, n, MAX_STEPS).await?)
        } else {
            None
        };
        let node = if servers.contains("node") {
            Some(one(ctx, Kind::Node, n, MAX_STEPS).await?)
        } else {
            None
        };
        // The floor only needs the steps the others reached (and one more).
        let reached = [&bridge, &node]
            .iter()
            .filter_map(|o| o.as_ref().map(|o| o.steps.len()))
            .max()
            .map_or(MAX_STEPS, |k| (k + 1).min(MAX_STEPS));
        let floor = if servers.contains("floor") {
            Some(one(ctx, Kind::Floor, n, reached).await?)
        } else {
            None
        };
        if let (Some(b), Some(nd)) = (&bridge, &node) {
            report_pair(rep, p, b, nd);
        }
        if let (Some(f), Some(nd)) = (&floor, &node) {
            report_floor(rep, p, bridge.as_ref(), nd, f);
        }
        all.push(json!({
            "clients": n,
            "bridge": bridge.map(|o| o.json),
            "node": node.map(|o| o.json),
            "floor": floor.map(|o| o.json),
        }));
    }
    rep.set("fanout", json!({ "runs": all }));
    Ok(())
}

/// CPU per delivered message against the write floor, at the Node server's highest sustained
/// rate (every server runs the same rate steps, so step k is the same offered rate for all).
fn report_floor(rep: &mut Report, p: &str, b: Option<&Outcome>, n: &Outcome, f: &Outcome) {
    let clients = n.clients;
    let Some(k) = n.steps.iter().rposition(|s| s.sustained) else {
        return;
    };
    let Some(fs) = f.steps.get(k) else {
        rep.row(
            p,
            format!("{clients} cl.: write floor did not reach node's highest rate"),
            "",
            "",
            "",
            None,
        );
        return;
    };
    let ns = &n.steps[k];
    let rate = thousands(ns.rate * clients as f64);
    rep.row(
        p,
        format!("{clients} cl.: write floor CPU per msg at {rate} msgs/s"),
        format!(
            "{:.2} µs ({:.0} % core){}",
            fs.us_per_msg,
            fs.server_core_frac * 100.0,
            if fs.sustained { "" } else { ", lagged" }
        ),
        format!(
            "node {:.2} µs = {:.2}× floor",
            ns.us_per_msg,
            ns.us_per_msg / fs.us_per_msg
        ),
        "",
        None,
    );
    if let Some(bs) = b.and_then(|b| b.steps.get(k)) {
        let ratio = bs.us_per_msg / fs.us_per_msg;
        rep.row(
            p,
            format!("{clients} cl.: bridge CPU per msg at node's highest sustained rate"),
            format!(
                "{:.2} µs = {ratio:.2}× floor{}",
                bs.us_per_msg,
                if bs.sustained { "" } else { " (bridge lagged)" }
            ),
            format!(
                "floor {:.2} µs; node {:.2} µs",
                fs.us_per_msg, ns.us_per_msg
            ),
            "≤ 1.25× floor",
            Some(ratio <= 1.25 && bs.sustained),
        );
    } else {
        rep.row(
            p,
            format!("{clients} cl.: bridge CPU per msg at node's highest sustained rate"),
            "bridge did not reach that rate",
            "",
            "≤ 1.25× floor",
            Some(false),
        );
    }
}

fn report_pair(rep: &mut Report, p: &str, b: &Outcome, n: &Outcome) {
    let clients = b.clients;
    rep.row(
        p,
        format!("setup: {clients} clients, one role; rate ×1.5 per step until it lags"),
        "",
        "",
        "",
        None,
    );
    let (Some(bb), Some(nb)) = (b.best(), n.best()) else {
        rep.row(
            p,
            format!("{clients} cl.: no sustained step"),
            "",
            "",
            "",
            Some(false),
        );
        return;
    };
    rep.row(
        p,
        format!("{clients} cl.: highest sustained delivered"),
        format!("{} msgs/s", thousands(bb.delivered_per_s)),
        format!(
            "node socket.io: {} msgs/s ({:.2}×); Node plugin ~45,000 (1,000 cl.)",
            thousands(nb.delivered_per_s),
            bb.delivered_per_s / nb.delivered_per_s
        ),
        "",
        None,
    );
    rep.row(
        p,
        format!("{clients} cl.: last event → last client"),
        format!(
            "{:.1} ms (single event {:.1} ms)",
            bb.last_event_ms, b.single_ms
        ),
        format!(
            "node: {:.1} ms (single event {:.1} ms)",
            nb.last_event_ms, n.single_ms
        ),
        "",
        None,
    );
    rep.row(
        p,
        format!("{clients} cl.: server CPU per msg at its best"),
        format!(
            "{:.2} µs ({:.0} % core, load tool {:.0} %)",
            bb.us_per_msg,
            bb.server_core_frac * 100.0,
            bb.load_tool_core_frac * 100.0
        ),
        format!(
            "node: {:.2} µs ({:.0} % core); Node plugin ≈ 20 µs",
            nb.us_per_msg,
            nb.server_core_frac * 100.0
        ),
        "≤ 4 µs",
        Some(bb.us_per_msg <= 4.0),
    );
    // The same offered rate for both: the highest step both sustained.
    let common = b
        .steps
        .iter()
        .zip(&n.steps)
        .rfind(|(x, y)| x.sustained && y.sustained);
    if let Some((x, y)) = common {
        let ratio = x.us_per_msg / y.us_per_msg;
        rep.row(
            p,
            format!(
                "{clients} cl.: CPU per msg at {} msgs/s (both)",
                thousands(x.rate * clients as f64)
            ),
            format!(
                "{:.2} µs vs node {:.2} µs = {ratio:.2}×",
                x.us_per_msg, y.us_per_msg
            ),
            "",
            "≤ 0.25×",
            Some(ratio <= 0.25),
        );
    }
}
