//! What makes events happen, and when: the writer (single-row commits to PostgreSQL at a steady
//! rate, or batched bulk inserts) for the bridge, and the control connection of the Node
//! baseline server. Steady firing runs on a thread of its own with its own runtime, so that the
//! instant taken when a commit returns is not delayed by the thousands of client tasks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_postgres::{Client, NoTls};

use crate::clock;

/// One fired event: its id and the instant the trigger returned (commit returned, or the
/// control line was written), microseconds on [`clock`].
#[derive(Debug, Clone, Copy)]
pub struct Fired {
    pub id: u32,
    pub t: u32,
}

/// Where events come from.
#[derive(Debug, Clone)]
pub enum Target {
    /// INSERT one `messages` row per event, autocommit (the bridge streams it).
    Pg { url: String },
    /// `emit <id>` lines to the Node baseline's control port.
    Node { control: SocketAddr },
}

/// Text of the `body` column of written rows (a short paragraph, as a chat message would be).
pub const BODY: &str = "A benchmark message: a short paragraph of text of about the size a chat \
                        message or a comment has, one hundred and fifty characters or so.";

const INSERT_ONE: &str = "INSERT INTO messages (text, likes, mood, body, flag, created_at, \
                          updated_at, published_at) VALUES ($1, $2, 'happy', $3, true, now(), \
                          now(), now()) RETURNING id";

static NODE_IDS: AtomicU32 = AtomicU32::new(1);

/// Connects to PostgreSQL (plain TCP on loopback) and drives the connection on this runtime.
pub async fn pg_connect(url: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("    PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

/// Fires `count` events at `rate` per second (on a schedule: a late event does not shift the
/// ones after it) and returns when each returned.
pub async fn steady(target: Target, rate: f64, count: usize, label: String) -> Result<Vec<Fired>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("trigger".into())
        .spawn(move || {
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("trigger runtime")
                .and_then(|rt| rt.block_on(fire(target, rate, count, label)));
            let _ = tx.send(out);
        })
        .context("spawning the trigger thread")?;
    rx.await.context("trigger thread ended without an answer")?
}

async fn fire(target: Target, rate: f64, count: usize, label: String) -> Result<Vec<Fired>> {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut out = Vec::with_capacity(count);
    match target {
        Target::Pg { url } => {
            let client = pg_connect(&url).await?;
            let stmt = client.prepare(INSERT_ONE).await?;
            let start = tokio::time::Instant::now();
            for k in 0..count {
                tokio::time::sleep_until(start + period.mul_f64(k as f64)).await;
                let text = format!("{label} {k}");
                let row = client
                    .query_one(&stmt, &[&text, &(k as i32), &BODY])
                    .await
                    .context("inserting a message")?;
                let t = clock::now_us();
                let id: i32 = row.get(0);
                out.push(Fired { id: id as u32, t });
            }
        }
        Target::Node { control } => {
            let mut s = TcpStream::connect(control).await?;
            s.set_nodelay(true)?;
            let start = tokio::time::Instant::now();
            for k in 0..count {
                tokio::time::sleep_until(start + period.mul_f64(k as f64)).await;
                let id = NODE_IDS.fetch_add(1, Ordering::Relaxed);
                s.write_all(format!("emit {id}\n").as_bytes()).await?;
                let t = clock::now_us();
                out.push(Fired { id, t });
            }
        }
    }
    Ok(out)
}

/// Strapi's API-token bookkeeping as a site under load does it: `UPDATE strapi_api_tokens SET
/// last_used_at = now()` on tokens 1..=3 in turn, `rate` per second, on a thread and connection
/// of its own until `stop` is set. Returns the updates made.
pub fn touch_tokens(
    url: String,
    rate: f64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Result<u64>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("token writer runtime")?;
        rt.block_on(async move {
            let client = pg_connect(&url).await?;
            let stmt = client
                .prepare("UPDATE strapi_api_tokens SET last_used_at = now() WHERE id = $1")
                .await?;
            let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let start = tokio::time::Instant::now();
            let mut k: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until(start + period.mul_f64(k as f64)).await;
                let id = (k % 3) as i32 + 1;
                client
                    .execute(&stmt, &[&id])
                    .await
                    .context("updating strapi_api_tokens.last_used_at")?;
                k += 1;
            }
            Ok(k)
        })
    })
}

/// Tells the Node baseline which event and payload to broadcast.
pub async fn node_payload(control: SocketAddr, event: &str, payload_json: &str) -> Result<()> {
    let s = TcpStream::connect(control).await?;
    let (r, mut w) = s.into_split();
    w.write_all(format!("payload {event} {payload_json}\n").as_bytes())
        .await?;
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    if line.trim() != "ok" {
        bail!("node server refused the payload: {line}");
    }
    Ok(())
}

/// Asks a controlled server (Node baseline, write floor) for `n` events in one go, with fresh
/// ids; returns the first and last id once the server has queued them.
pub async fn node_burst(control: SocketAddr, n: u32) -> Result<(u32, u32)> {
    let first = NODE_IDS.fetch_add(n, Ordering::Relaxed);
    let s = TcpStream::connect(control).await?;
    let (r, mut w) = s.into_split();
    w.write_all(format!("burst {first} {n}\n").as_bytes())
        .await?;
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    if line.trim() != "ok" {
        bail!("the server refused the burst: {line}");
    }
    Ok((first, first + n - 1))
}

/// What a bulk insert wrote.
#[derive(Debug, Clone, Copy)]
pub struct Bulk {
    pub first_id: u32,
    pub last_id: u32,
    pub rows: u64,
    pub seconds: f64,
}

/// Inserts `rows` messages in transactions of `batch` rows (`INSERT … SELECT generate_series`),
/// as fast as PostgreSQL takes them. The last row's text is `marker`.
pub async fn bulk_insert(client: &Client, rows: u64, batch: u64, marker: &str) -> Result<Bulk> {
    let stmt = client
        .prepare(
            "WITH ins AS (INSERT INTO messages (text, likes, mood, body, flag, created_at, \
             updated_at, published_at) SELECT CASE WHEN g = $5 THEN $3 ELSE 'bulk ' || g END, g, \
             'happy', $4, true, now(), now(), now() FROM generate_series($1::int, $2::int) g \
             RETURNING id) SELECT min(id), max(id), count(*) FROM ins",
        )
        .await?;
    let started = Instant::now();
    let mut first = None;
    let mut last = 0i32;
    let mut written = 0u64;
    let mut from = 1u64;
    while from <= rows {
        let to = (from + batch - 1).min(rows);
        let row = client
            .query_one(
                &stmt,
                &[&(from as i32), &(to as i32), &marker, &BODY, &(rows as i32)],
            )
            .await
            .context("bulk insert")?;
        let lo: i32 = row.get(0);
        let hi: i32 = row.get(1);
        let n: i64 = row.get(2);
        first.get_or_insert(lo);
        last = hi;
        written += n as u64;
        from = to + 1;
    }
    Ok(Bulk {
        first_id: first.unwrap_or(0) as u32,
        last_id: last as u32,
        rows: written,
        seconds: started.elapsed().as_secs_f64(),
    })
}
