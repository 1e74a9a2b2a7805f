//! The servers under test, started and stopped by the benchmark: the bridge (`run`, its own
//! log file, ready when `GET /readyz` answers 200) and the Node socket.io baseline (ready when
//! it prints `ready`). Both listen on 127.0.0.1 on free ports.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::Ctx;
use crate::proc;

/// A running server.
pub struct Server {
    pub name: &'static str,
    pub pid: u32,
    /// Socket.IO (and, for the bridge, probes and metrics).
    pub addr: SocketAddr,
    /// The Node baseline's control port.
    pub control: Option<SocketAddr>,
    child: Child,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts the bridge and waits until it streams (`/readyz` 200).
pub async fn bridge(ctx: &Ctx, tag: &str) -> Result<Server> {
    bridge_with(ctx, tag, None).await
}

/// Heartbeat settings for a server under test (`[io] ping_interval_ms` / `ping_timeout_ms`
/// of the bridge, `pingInterval` / `pingTimeout` of socket.io).
#[derive(Debug, Clone, Copy)]
pub struct Pings {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

/// Settings the benchmark adds to a copy of the bridge's configuration file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra {
    /// `[io] ping_interval_ms` / `ping_timeout_ms`.
    pub pings: Option<Pings>,
    /// `[delivery] replay_window`.
    pub replay_window: Option<&'static str>,
}

/// A copy of the bridge's configuration file (in the work folder) with `extra` added.
fn config_with(ctx: &Ctx, tag: &str, extra: Extra) -> Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(&ctx.args.bridge_config)
        .with_context(|| format!("reading {}", ctx.args.bridge_config.display()))?;
    let mut sections: Vec<(&str, Vec<String>)> = Vec::new();
    if let Some(p) = extra.pings {
        sections.push((
            "[io]",
            vec![
                format!("ping_interval_ms = {}", p.interval_ms),
                format!("ping_timeout_ms = {}", p.timeout_ms),
            ],
        ));
    }
    if let Some(w) = extra.replay_window {
        sections.push(("[delivery]", vec![format!("replay_window = \"{w}\"")]));
    }
    let mut out = String::new();
    let mut added = vec![false; sections.len()];
    for line in text.lines() {
        let t = line.trim();
        for (_, keys) in &sections {
            for k in keys {
                let name = k.split(' ').next().unwrap_or("");
                if t.starts_with(name) && t[name.len()..].trim_start().starts_with('=') {
                    bail!("the bridge config already sets {name}; the benchmark sets it itself");
                }
            }
        }
        out.push_str(line);
        out.push('\n');
        for (i, (header, keys)) in sections.iter().enumerate() {
            if t == *header {
                for k in keys {
                    out.push_str(k);
                    out.push('\n');
                }
                added[i] = true;
            }
        }
    }
    for (i, (header, keys)) in sections.iter().enumerate() {
        if !added[i] {
            out.push_str(&format!("\n{header}\n"));
            for k in keys {
                out.push_str(k);
                out.push('\n');
            }
        }
    }
    let path = ctx.work.join(format!("bridge-{tag}.toml"));
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// [`bridge`] with settings added to its configuration.
pub async fn bridge_with(ctx: &Ctx, tag: &str, extra: Option<Extra>) -> Result<Server> {
    let config = match extra {
        Some(e) => config_with(ctx, tag, e)?,
        None => ctx.args.bridge_config.clone(),
    };
    let addr = loopback(proc::free_port()?);
    let log_path = ctx.work.join(format!("bridge-{tag}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = Command::new(&ctx.args.bridge)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", ctx.args.bridge.display()))?;
    let pid = child.id().context("bridge has no pid")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the bridge exited ({status}) before it was ready; see {}:\n{}",
                log_path.display(),
                tail(&log_path, 20)
            );
        }
        if let Ok((200, _)) = proc::http_get(addr, "/readyz").await {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            bail!(
                "the bridge was not ready within 60 s; see {}:\n{}",
                log_path.display(),
                tail(&log_path, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A restarted bridge first rebuilds its replay buffer from the slot (the events of the last
    // minutes, which earlier phases wrote); clients connecting before that get no events.
    let rebuilt = Instant::now();
    loop {
        let metrics = match proc::http_get(addr, "/metrics").await {
            Ok((200, body)) => body,
            _ => String::new(),
        };
        if !metrics.contains("strapi_io_replay_rebuild_seconds")
            || proc::metric_sum(&metrics, "strapi_io_replay_rebuild_seconds") > 0.0
        {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the bridge exited ({status}) while rebuilding its replay buffer; see {}:\n{}",
                log_path.display(),
                tail(&log_path, 20)
            );
        }
        if rebuilt.elapsed() > Duration::from_secs(180) {
            let _ = child.kill().await;
            bail!(
                "the bridge did not finish rebuilding its replay buffer within 180 s; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if rebuilt.elapsed() > Duration::from_secs(1) {
        println!(
            "    (the bridge took {:.1} s to rebuild its replay buffer before accepting clients)",
            rebuilt.elapsed().as_secs_f64()
        );
    }
    Ok(Server {
        name: "bridge",
        pid,
        addr,
        control: None,
        child,
    })
}

/// Starts the Node socket.io baseline server.
pub async fn node(ctx: &Ctx, tag: &str) -> Result<Server> {
    node_with(ctx, tag, None).await
}

/// [`node`] with other heartbeat settings.
pub async fn node_with(ctx: &Ctx, tag: &str, pings: Option<Pings>) -> Result<Server> {
    let mut cmd = Command::new("node");
    cmd.arg(ctx.args.node_dir.join("server.mjs"))
        .current_dir(&ctx.args.node_dir);
    if let Some(p) = pings {
        cmd.arg("--ping-interval")
            .arg(p.interval_ms.to_string())
            .arg("--ping-timeout")
            .arg(p.timeout_ms.to_string());
    }
    controlled(ctx, "node", tag, cmd).await
}

/// Starts the write floor (`strapi-io-floor`, next to this program): accepts the same clients
/// and writes one frame to every socket on command.
pub async fn floor(ctx: &Ctx, tag: &str) -> Result<Server> {
    let exe = std::env::current_exe().context("locating the load tool")?;
    let bin = exe
        .parent()
        .context("the load tool has no folder")?
        .join("strapi-io-floor");
    if !bin.exists() {
        bail!(
            "{} is missing (it is built with the load tool: cargo build --manifest-path bench/loadgen/Cargo.toml)",
            bin.display()
        );
    }
    controlled(ctx, "floor", tag, Command::new(bin)).await
}

/// A server driven through a control port (`--port`, `--control-port`, prints `ready`).
async fn controlled(ctx: &Ctx, name: &'static str, tag: &str, mut cmd: Command) -> Result<Server> {
    let addr = loopback(proc::free_port()?);
    let control = loopback(proc::free_port()?);
    let log_path = ctx.work.join(format!("{name}-{tag}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut child = cmd
        .arg("--port")
        .arg(addr.port().to_string())
        .arg("--control-port")
        .arg(control.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the {name} server"))?;
    let pid = child.id().context("no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if line.trim() == "ready" {
                return Ok::<bool, anyhow::Error>(true);
            }
        }
        Ok(false)
    })
    .await;
    match ready {
        Ok(Ok(true)) => {}
        _ => bail!(
            "the {name} server did not start; see {}:\n{}",
            log_path.display(),
            tail(&log_path, 20)
        ),
    }
    // Keep draining stdout so the server never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server {
        name,
        pid,
        addr,
        control: Some(control),
        child,
    })
}

impl Server {
    /// CPU seconds used so far.
    pub fn cpu(&self) -> f64 {
        proc::cpu_seconds(self.pid).unwrap_or(f64::NAN)
    }

    /// RSS in KiB.
    pub fn rss_kb(&self) -> u64 {
        proc::rss_kb(self.pid).unwrap_or(0)
    }

    /// The bridge's `/metrics` text (empty for Node).
    pub async fn metrics(&self) -> String {
        if self.control.is_some() {
            return String::new();
        }
        match proc::http_get(self.addr, "/metrics").await {
            Ok((200, body)) => body,
            _ => String::new(),
        }
    }

    /// `strapi_io_events_dropped_total` of the bridge (0 for Node).
    pub async fn dropped(&self) -> f64 {
        proc::metric_sum(&self.metrics().await, "strapi_io_events_dropped_total")
    }

    /// SIGTERM, then SIGKILL after 15 s.
    pub async fn stop(mut self) -> Result<()> {
        let _ = proc::signal(self.pid, libc::SIGCONT);
        let _ = proc::signal(self.pid, libc::SIGTERM);
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(r) => {
                r?;
            }
            Err(_) => {
                eprintln!(
                    "    {} did not stop within 15 s of SIGTERM; killing it",
                    self.name
                );
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// The last lines of a log file.
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
