//! The load clients: thousands of Socket.IO clients (engine.io v4 over a websocket, no polling)
//! on one tokio runtime. Each records, for every `42[...]` event carrying `"id":N`, the id and the
//! instant it was read off the socket; the phases compare those instants with the writer's.
//!
//! The protocol, as far as a receiving client needs it: the server opens with `0{...}`, the
//! client connects to `/` with `40` or `40{"token":...}`, the server acknowledges with `40{...}`
//! (or refuses with `44{...}`); events are `42["name",payload]`; the server pings with `2` and
//! the client answers `3`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::clock;

/// One received event: the entry id and when it was read (microseconds, [`clock`]).
#[derive(Debug, Clone, Copy)]
pub struct Rec {
    pub id: u32,
    pub t: u32,
}

/// What one client is: its role label (for reporting) and its `auth.token`, if any.
#[derive(Debug, Clone)]
pub struct Spec {
    pub role: usize,
    pub token: Option<String>,
}

/// What a client shares with the swarm.
#[derive(Default)]
struct Shared {
    recs: Mutex<Vec<Rec>>,
    /// Events received (with an id).
    count: AtomicU64,
    /// The highest id received.
    last_id: AtomicU32,
    /// Still connected.
    alive: AtomicBool,
    /// Whether to record instants (off: count only).
    record: AtomicBool,
}

/// A set of connected clients.
pub struct Swarm {
    clients: Vec<(usize, Arc<Shared>)>,
    tasks: Vec<JoinHandle<()>>,
    /// The first event frame any client saw, verbatim (for the Node baseline's payload).
    captured: Arc<OnceLock<String>>,
    /// Handshakes refused or failed.
    pub failed: usize,
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: ten thousand clients each with the default 128 KiB would be wasteful; an
    // event is about a kilobyte.
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
}

async fn next_text(ws: &mut WebSocketStream<TcpStream>) -> Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None => bail!("connection closed during the handshake"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

async fn handshake(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<WebSocketStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.context("TCP connect")?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{addr}{path}/?EIO=4&transport=websocket");
    let (mut ws, _) = client_async_with_config(url, tcp, Some(ws_config()))
        .await
        .context("websocket upgrade")?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        bail!("expected the engine.io open packet, got {open:.80}");
    }
    let connect = match token {
        Some(t) => format!("40{}", serde_json::json!({ "token": t })),
        None => "40".to_owned(),
    };
    ws.send(Message::text(connect)).await?;
    loop {
        let p = next_text(&mut ws).await?;
        if p == "2" {
            ws.send(Message::text("3")).await?;
        } else if p.starts_with("40") {
            return Ok(ws);
        } else if p.starts_with("44") {
            bail!("connection refused: {p:.200}");
        }
    }
}

/// The id of `42["name",{"data":{"id":N,...` (the first `"id":` in the frame).
fn event_id(frame: &[u8]) -> Option<u32> {
    if !frame.starts_with(b"42") {
        return None;
    }
    let at = memchr::memmem::find(frame, b"\"id\":")? + 5;
    let mut n: u32 = 0;
    let mut any = false;
    for &b in frame.get(at..)? {
        if b.is_ascii_digit() {
            n = n.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
            any = true;
        } else {
            break;
        }
    }
    any.then_some(n)
}

async fn serve(
    mut ws: WebSocketStream<TcpStream>,
    shared: Arc<Shared>,
    captured: Arc<OnceLock<String>>,
) {
    while let Some(msg) = ws.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let t = clock::now_us();
        let bytes = text.as_bytes();
        if let Some(id) = event_id(bytes) {
            if shared.record.load(Ordering::Relaxed) {
                shared
                    .recs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Rec { id, t });
            }
            shared.count.fetch_add(1, Ordering::Relaxed);
            shared.last_id.fetch_max(id, Ordering::Relaxed);
            if captured.get().is_none() {
                let _ = captured.set(text.as_str().to_owned());
            }
        } else if bytes == b"2" && ws.send(Message::text("3")).await.is_err() {
            break;
        }
    }
    shared.alive.store(false, Ordering::Relaxed);
}

impl Swarm {
    /// Connects one client per spec to the Socket.IO server at `addr`, `concurrency`
    /// handshakes at a time, and returns once every handshake has ended.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        specs: &[Spec],
        concurrency: usize,
    ) -> Result<Swarm> {
        let sem = Arc::new(Semaphore::new(concurrency.max(1)));
        let captured: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
        let mut clients = Vec::with_capacity(specs.len());
        let mut tasks = Vec::with_capacity(specs.len());
        let mut results = Vec::with_capacity(specs.len());
        for spec in specs {
            let shared = Arc::new(Shared::default());
            shared.record.store(true, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel::<Result<()>>();
            let sem = sem.clone();
            let token = spec.token.clone();
            let path = path.to_owned();
            let s = shared.clone();
            let cap = captured.clone();
            tasks.push(tokio::spawn(async move {
                let permit = sem.acquire_owned().await;
                let ws = tokio::time::timeout(
                    Duration::from_secs(30),
                    handshake(addr, &path, token.as_deref()),
                )
                .await
                .map_err(|_| anyhow!("handshake timed out"))
                .and_then(|r| r);
                drop(permit);
                match ws {
                    Ok(ws) => {
                        s.alive.store(true, Ordering::Relaxed);
                        let _ = tx.send(Ok(()));
                        serve(ws, s, cap).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            }));
            clients.push((spec.role, shared));
            results.push(rx);
        }
        let mut failed = 0;
        let mut first_error = None;
        for rx in results {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
                Err(_) => failed += 1,
            }
        }
        if let Some(e) = first_error {
            eprintln!(
                "    {failed} of {} handshakes failed; first: {e:#}",
                specs.len()
            );
        }
        Ok(Swarm {
            clients,
            tasks,
            captured,
            failed,
        })
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Clients still connected.
    pub fn alive(&self) -> usize {
        self.clients
            .iter()
            .filter(|(_, s)| s.alive.load(Ordering::Relaxed))
            .count()
    }

    /// Records or only counts from now on.
    pub fn set_recording(&self, on: bool) {
        for (_, s) in &self.clients {
            s.record.store(on, Ordering::Relaxed);
        }
    }

    /// Takes every client's records so far: `(role, records)` per client.
    pub fn take(&self) -> Vec<(usize, Vec<Rec>)> {
        self.clients
            .iter()
            .map(|(role, s)| {
                let v = std::mem::take(&mut *s.recs.lock().unwrap_or_else(PoisonError::into_inner));
                (*role, v)
            })
            .collect()
    }

    /// Events received by all clients together, since connecting.
    pub fn total_count(&self) -> u64 {
        self.clients
            .iter()
            .map(|(_, s)| s.count.load(Ordering::Relaxed))
            .sum()
    }

    /// Per-client event counts.
    pub fn counts(&self) -> Vec<u64> {
        self.clients
            .iter()
            .map(|(_, s)| s.count.load(Ordering::Relaxed))
            .collect()
    }

    /// Whether every connected client has received an id ≥ `id`.
    pub fn all_reached(&self, id: u32) -> bool {
        self.clients.iter().all(|(_, s)| {
            !s.alive.load(Ordering::Relaxed) || s.last_id.load(Ordering::Relaxed) >= id
        })
    }

    /// The first event frame seen (verbatim text), if any.
    pub fn captured(&self) -> Option<String> {
        self.captured.get().cloned()
    }

    /// Drops every connection (the server sees them close) and waits a moment for the tasks.
    pub async fn close(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::event_id;

    #[test]
    fn reads_the_first_id() {
        assert_eq!(
            event_id(
                br#"42["message:create",{"data":{"id":1234,"attributes":{"id":5}},"meta":{}}]"#
            ),
            Some(1234)
        );
        assert_eq!(event_id(b"2"), None);
        assert_eq!(event_id(br#"42["x",{"data":{}}]"#), None);
    }
}
