//! The strapi-io-bridge benchmark's load tool and phase runner (`bench/run` starts it).
//!
//! It starts the servers under test (the bridge, the Node socket.io baseline, `pg_recvlogical`),
//! drives them with Socket.IO websocket clients and a PostgreSQL writer, measures on one
//! monotonic clock and from `/proc`, and prints a table and writes a JSON file with every figure.
//! PostgreSQL itself is started by `bench/run`.

mod client;
mod clock;
mod phases;
mod proc;
mod report;
mod servers;
mod stats;
mod trigger;

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::Parser;
use hmac::{Hmac, Mac};
use serde_json::json;

use crate::report::Report;

/// Measures strapi-io-bridge against pg_recvlogical and a Node socket.io server.
#[derive(Debug, Parser, Clone)]
#[command(name = "strapi-io-bench")]
pub struct Args {
    /// PostgreSQL URL of the Strapi database (the writer and the phase runner use it).
    #[arg(long)]
    pub database_url: String,
    /// The bridge binary (a release build).
    #[arg(long)]
    pub bridge: PathBuf,
    /// The bridge's configuration file (database, publication, content types).
    #[arg(long)]
    pub bridge_config: PathBuf,
    /// The folder of the Node baseline (server.mjs, node_modules).
    #[arg(long)]
    pub node_dir: PathBuf,
    /// PostgreSQL's binaries (pg_recvlogical, postgres --version).
    #[arg(long)]
    pub pg_bin: PathBuf,
    /// Where logs of the servers go.
    #[arg(long)]
    pub work_dir: PathBuf,
    /// The JSON result file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Phases to run, comma-separated: latency, throughput, fanout, memory, recheck.
    #[arg(long, default_value = "latency,throughput,fanout,memory,recheck")]
    pub phases: String,
    /// Smaller and shorter everything (a smoke run, not for the figures).
    #[arg(long)]
    pub quick: bool,
    /// JWT_SECRET of the fixture (users-permissions tokens are signed with it).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Latency: connected clients (spread over Public, Authenticated, Editor).
    #[arg(long)]
    pub latency_clients: Option<usize>,
    /// Latency: single-row commits per second, comma-separated for several measurements (the
    /// first is the one held against the goals).
    #[arg(long, default_value = "200,20")]
    pub latency_rate: String,
    /// Latency: seconds of measurement.
    #[arg(long)]
    pub latency_seconds: Option<f64>,
    /// Throughput: row changes written.
    #[arg(long)]
    pub throughput_rows: Option<u64>,
    /// Throughput: rows per transaction.
    #[arg(long, default_value_t = 1000)]
    pub throughput_batch: u64,
    /// Throughput: repetitions (each writes the rows again).
    #[arg(long)]
    pub throughput_runs: Option<usize>,
    /// Fan-out: client counts, comma-separated.
    #[arg(long)]
    pub fanout_clients: Option<String>,
    /// Fan-out: which servers, comma-separated (bridge, node, floor).
    #[arg(long, default_value = "bridge,node,floor")]
    pub fanout_servers: String,
    /// Fan-out: seconds per rate step.
    #[arg(long)]
    pub fanout_step_seconds: Option<f64>,
    /// Memory: idle clients.
    #[arg(long)]
    pub idle_clients: Option<usize>,
    /// Memory: heartbeat interval of the servers in the idle measurements, ms (each is measured
    /// again after 32 heartbeats; default 500, 250 with --quick).
    #[arg(long)]
    pub memory_ping_ms: Option<u64>,
    /// Memory: clients of the burst measurement (websocket, one role).
    #[arg(long)]
    pub burst_clients: Option<usize>,
    /// Memory: events of the burst (one transaction).
    #[arg(long)]
    pub burst_events: Option<u32>,
    /// Memory: servers of the burst measurement, comma-separated (bridge, node).
    #[arg(long, default_value = "bridge,node")]
    pub burst_servers: String,
    /// Re-check: connected clients (1 % with an API token).
    #[arg(long)]
    pub recheck_clients: Option<usize>,
    /// Re-check: `last_used_at` updates per second to the API-token table.
    #[arg(long, default_value_t = 200.0)]
    pub recheck_updates: f64,
    /// Clear API tokens of the fixture (comma-separated) for the re-check phase's token clients.
    #[arg(
        long = "api-token",
        env = "BENCH_API_TOKENS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub api_tokens: Vec<String>,
    /// Memory: rows of the single large transaction.
    #[arg(long)]
    pub big_rows: Option<u64>,
}

/// What every phase needs.
pub struct Ctx {
    pub args: Args,
    pub work: PathBuf,
    /// An SQL connection for the phase runner's own queries and bulk writes.
    pub admin: tokio_postgres::Client,
    /// JWTs of alice (Authenticated), bob (Authenticated) and eddie (Editor).
    pub alice: String,
    pub bob: String,
    pub eddie: String,
    /// The first bridge event seen, verbatim (the Node baseline broadcasts the same payload).
    pub template: std::sync::Mutex<Option<String>>,
}

/// A users-permissions JWT: HS256 over `{"id","iat","exp"}` with the JWT_SECRET bytes as key.
fn jwt(secret: &str, user_id: i64) -> Result<String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64.encode(
        json!({ "id": user_id, "iat": now, "exp": now + 30 * 24 * 3600 })
            .to_string()
            .as_bytes(),
    );
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(signing_input.as_bytes());
    let sig = b64.encode(mac.finalize().into_bytes());
    Ok(format!("{signing_input}.{sig}"))
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine_and_versions(args: &Args) -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_default();
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let socketio =
        std::fs::read_to_string(args.node_dir.join("node_modules/socket.io/package.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned))
            .unwrap_or_default();
    let (soft, hard) = proc::nofile_limit();
    json!({
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu_model": model,
            "memory_mb": mem_kb / 1024,
            "kernel": command_output("uname", &["-r"]),
            "open_files_limit": {"soft": soft, "hard": hard},
        },
        "versions": {
            "bridge": command_output(&args.bridge.to_string_lossy(), &["--version"]),
            "postgresql": command_output(&args.pg_bin.join("postgres").to_string_lossy(), &["--version"]),
            "pg_recvlogical": command_output(&args.pg_bin.join("pg_recvlogical").to_string_lossy(), &["--version"]),
            "node": command_output("node", &["--version"]),
            "socket.io": socketio,
            "rustc": command_output("rustc", &["--version"]),
            "load_tool": concat!("strapi-io-bench ", env!("CARGO_PKG_VERSION")),
        },
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    clock::init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let phases: Vec<String> = args
        .phases
        .split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    for p in &phases {
        if !["latency", "throughput", "fanout", "memory", "recheck"].contains(&p.as_str()) {
            bail!("unknown phase {p:?} (latency, throughput, fanout, memory, recheck)");
        }
    }
    std::fs::create_dir_all(&args.work_dir)?;
    let admin = trigger::pg_connect(&args.database_url).await?;
    let ctx = Ctx {
        alice: jwt(&args.jwt_secret, 1)?,
        eddie: jwt(&args.jwt_secret, 2)?,
        bob: jwt(&args.jwt_secret, 3)?,
        work: args.work_dir.clone(),
        admin,
        template: std::sync::Mutex::new(None),
        args: args.clone(),
    };
    // Anything else running would be measured too: say how busy the machine was beforehand.
    let before = proc::MachineCpu::now();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let busy_before = proc::MachineCpu::now().busy_since(&before);
    let mut info = machine_and_versions(&args);
    info["machine"]["busy_fraction_before_run"] = json!((busy_before * 1000.0).round() / 1000.0);
    if busy_before > 0.1 {
        println!(
            "WARNING: the machine was {:.0} % busy before the run; the figures include that load",
            busy_before * 100.0
        );
    }
    let mut rep = Report::new(info, args.quick);
    println!(
        "strapi-io-bench: phases {} ({} mode); servers' logs in {}",
        phases.join(", "),
        if args.quick { "quick" } else { "full" },
        args.work_dir.display()
    );
    for phase in &phases {
        // The previous phase's servers may still be winding down (sockets closing, PostgreSQL's
        // autovacuum): wait up to 15 s for a quiet machine, and say so if it never is.
        let mut busy = 1.0;
        for _ in 0..30 {
            let b0 = proc::MachineCpu::now();
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            busy = proc::MachineCpu::now().busy_since(&b0);
            if busy <= 0.1 {
                break;
            }
        }
        rep.phase_busy(phase, busy);
        let t = Instant::now();
        println!("\n==> phase {phase}");
        if busy > 0.1 {
            println!(
                "    WARNING: the machine is {:.0} % busy before this phase (something else is running)",
                busy * 100.0
            );
        }
        let res = match phase.as_str() {
            "latency" => phases::latency::run(&ctx, &mut rep).await,
            "throughput" => phases::throughput::run(&ctx, &mut rep).await,
            "fanout" => phases::fanout::run(&ctx, &mut rep).await,
            "memory" => phases::memory::run(&ctx, &mut rep).await,
            "recheck" => phases::recheck::run(&ctx, &mut rep).await,
            _ => unreachable!(),
        };
        let secs = t.elapsed().as_secs_f64();
        rep.phase_seconds(phase, secs);
        match res {
            Ok(()) => println!("    phase {phase} took {secs:.1} s"),
            Err(e) => {
                println!("    phase {phase} FAILED after {secs:.1} s: {e:#}");
                rep.phase_error(phase, &format!("{e:#}"));
            }
        }
    }
    rep.total_seconds(started.elapsed().as_secs_f64());
    rep.print();
    rep.write(&args.out)?;
    println!("\nresults: {}", args.out.display());
    if rep.has_errors() {
        bail!("some phases failed (see above)");
    }
    Ok(())
}
