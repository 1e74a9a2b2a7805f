//! Re-check: do writes to the access tables that change nothing the bridge uses slow events
//! down? 10,000 clients connected (1 % with an API token, the rest Public), single-row commits at
//! 2/s: commit → client latency without, then with a concurrent writer doing what Strapi does
//! on every API-token request (`UPDATE strapi_api_tokens SET last_used_at = now()`, 200/s).
//! Also the bridge's socket re-check counter over each half.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use super::latency::measure;
use crate::Ctx;
use crate::client::{Spec, Swarm};
use crate::report::Report;
use crate::servers::{self, Server};
use crate::stats::round3;
use crate::trigger::{self, Target};

/// Re-checks counted so far (`strapi_io_socket_rechecks_total`), NaN when there is no such metric.
async fn rechecks(server: &Server) -> f64 {
    let text = server.metrics().await;
    if !text.contains("strapi_io_socket_rechecks") {
        return f64::NAN;
    }
    crate::proc::metric_sum(&text, "strapi_io_socket_rechecks_total")
        + crate::proc::metric_sum(&text, "strapi_io_socket_rechecks")
}

pub async fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let a = &ctx.args;
    let n = a
        .recheck_clients
        .unwrap_or(if a.quick { 2000 } else { 10_000 });
    let seconds = a
        .latency_seconds
        .unwrap_or(if a.quick { 5.0 } else { 15.0 });
    // Well below what 10,000 clients on this machine sustain (about 20 events/s), so that the
    // figure is the latency of an unsaturated bridge and a slowdown from re-checks would show.
    let rate = 2.0;
    let updates = a.recheck_updates;
    let tokens: Vec<String> = a.api_tokens.clone();
    if tokens.is_empty() {
        println!("    no API token given (--api-token / BENCH_API_TOKENS): every client is Public");
    }
    let specs: Vec<Spec> = (0..n)
        .map(|i| Spec {
            role: 0,
            token: (i % 100 == 99 && !tokens.is_empty())
                .then(|| tokens[i / 100 % tokens.len()].clone()),
        })
        .collect();
    let with_token = specs.iter().filter(|s| s.token.is_some()).count();

    let server = servers::bridge(ctx, "recheck").await?;
    let swarm = Swarm::connect(server.addr, "/socket.io", &specs, 256).await?;
    let connected = swarm.len() - swarm.failed;
    if swarm.failed > 0 {
        bail!("{} of {n} clients could not connect", swarm.failed);
    }
    swarm.set_recording(true);
    println!("    {connected} clients ({with_token} with an API token)");
    let target = Target::Pg {
        url: a.database_url.clone(),
    };

    let r0 = rechecks(&server).await;
    let without = measure(&swarm, connected, target.clone(), rate, seconds).await?;
    let r1 = rechecks(&server).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = trigger::touch_tokens(a.database_url.clone(), updates, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r2 = rechecks(&server).await;
    let with = measure(&swarm, connected, target, rate, seconds).await;
    let r3 = rechecks(&server).await;
    stop.store(true, Ordering::Relaxed);
    let written = tokio::task::spawn_blocking(move || writer.join())
        .await
        .context("joining the token writer")?
        .map_err(|_| anyhow!("the token writer panicked"))?;
    let with = with?;
    let written = written?;
    let alive = swarm.alive();
    swarm.close().await;
    server.stop().await?;

    let p50 = with.dist.p50 / without.dist.p50;
    let p99 = with.dist.p99 / without.dist.p99;
    println!(
        "    without: p50 {:.2} / p99 {:.2} ms; with {updates}/s token updates: p50 {:.2} / p99 {:.2} ms ({p50:.2}× / {p99:.2}×); re-checks {} / {}",
        without.dist.p50,
        without.dist.p99,
        with.dist.p50,
        with.dist.p99,
        r1 - r0,
        r3 - r2
    );
    rep.set(
        "recheck",
        json!({
            "clients": connected,
            "clients_with_api_token": with_token,
            "clients_still_connected": alive,
            "rate_per_s": rate,
            "seconds": seconds,
            "token_updates_per_s": updates,
            "token_updates_written": written,
            "without": {"latency": without.dist.json(), "lost": without.lost, "expected": without.expected, "rechecks": r1 - r0},
            "with_updates": {"latency": with.dist.json(), "lost": with.lost, "expected": with.expected, "rechecks": r3 - r2},
            "p50_ratio": round3(p50),
            "p99_ratio": round3(p99),
        }),
    );
    let p = "5 re-check";
    rep.row(
        p,
        format!(
            "setup: {connected} clients ({with_token} API token), {rate}/s commits, {seconds} s"
        ),
        "",
        "",
        "",
        None,
    );
    rep.row(
        p,
        "commit → client p50 / p99, without token updates",
        format!("{:.2} / {:.2} ms", without.dist.p50, without.dist.p99),
        format!("lost {}", without.lost),
        "",
        None,
    );
    rep.row(
        p,
        format!("… with {updates}/s last_used_at updates"),
        format!(
            "{:.2} / {:.2} ms = {p50:.2}× / {p99:.2}×",
            with.dist.p50, with.dist.p99
        ),
        format!("lost {}; {written} updates written", with.lost),
        "unchanged (≤ 1.2×, noise)",
        Some(p50 <= 1.2 && p99 <= 1.2 && with.lost == 0),
    );
    rep.row(
        p,
        "socket re-checks during the token updates",
        if r3.is_nan() {
            "no strapi_io_socket_rechecks metric".to_owned()
        } else {
            format!("{}", r3 - r2)
        },
        "",
        "0",
        Some(r3 - r2 == 0.0),
    );
    Ok(())
}
