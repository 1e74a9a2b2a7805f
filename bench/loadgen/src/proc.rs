//! What the benchmark reads about processes and the machine: CPU time and RSS from `/proc`,
//! signals, free loopback ports, and a tiny HTTP GET for the bridge's probes and metrics.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU seconds (user + system, all threads, finished ones included) a process has used.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / clk_tck())
}

/// CPU seconds of this process.
pub fn self_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(f64::NAN)
}

fn status_kb(pid: u32, key: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix(key) {
            let v = v.trim_start_matches(':').trim();
            let kb = v.trim_end_matches("kB").trim();
            return Ok(kb.parse()?);
        }
    }
    bail!("{key} not in /proc/{pid}/status")
}

/// Resident set size in KiB.
pub fn rss_kb(pid: u32) -> Result<u64> {
    status_kb(pid, "VmRSS")
}

/// Peak resident set size in KiB since start or the last [`reset_peak`].
pub fn peak_rss_kb(pid: u32) -> Result<u64> {
    status_kb(pid, "VmHWM")
}

/// Resets the peak RSS of a process (`/proc/<pid>/clear_refs`).
pub fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of {pid}"))
}

/// Busy and total jiffies of the whole machine (`/proc/stat`), for utilization over a window.
pub fn machine_jiffies() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = text.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: i32) -> Result<()> {
    // SAFETY: kill(2) with a pid we started; no memory is shared.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if rc != 0 {
        bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The soft and hard limits on open files.
pub fn nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return (0, 0);
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a private machine).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `GET path` over HTTP/1.0: the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .context("connect timeout")??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .context("read timeout")??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Sums the samples of a Prometheus metric family (`name` or `name{...}`) in a text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let base = key.split('{').next()?;
            (base == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Polls `cond` every `every` until it holds or `deadline` passes; whether it held.
pub async fn wait_until(
    deadline: Instant,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// The machine's CPU time by kind, from the first line of `/proc/stat` (jiffies).
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    v: [u64; 8],
}

impl MachineCpu {
    pub fn now() -> MachineCpu {
        let mut m = MachineCpu::default();
        if let Ok(text) = std::fs::read_to_string("/proc/stat")
            && let Some(line) = text.lines().next()
        {
            for (i, x) in line.split_whitespace().skip(1).take(8).enumerate() {
                m.v[i] = x.parse().unwrap_or(0);
            }
        }
        m
    }

    /// Shares of all cores' time since `earlier`, by kind (user, system, softirq, …), in JSON.
    pub fn since(&self, earlier: &MachineCpu) -> serde_json::Value {
        let d: Vec<f64> = (0..8)
            .map(|i| self.v[i].saturating_sub(earlier.v[i]) as f64)
            .collect();
        let total: f64 = d.iter().sum::<f64>().max(1.0);
        let names = [
            "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
        ];
        let mut m = serde_json::Map::new();
        for (n, v) in names.iter().zip(&d) {
            m.insert(
                (*n).to_owned(),
                serde_json::json!(((v / total) * 1000.0).round() / 1000.0),
            );
        }
        serde_json::Value::Object(m)
    }

    /// Busy share (all but idle and iowait) since `earlier`.
    pub fn busy_since(&self, earlier: &MachineCpu) -> f64 {
        let d: Vec<f64> = (0..8)
            .map(|i| self.v[i].saturating_sub(earlier.v[i]) as f64)
            .collect();
        let total: f64 = d.iter().sum::<f64>().max(1.0);
        (total - d[3] - d[4]) / total
    }
}
