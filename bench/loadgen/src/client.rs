//! The load clients: thousands of Socket.IO clients (engine.io v4 over a websocket) on one tokio
//! runtime. They connect either straight over a websocket, or as socket.io-client does by
//! default: an HTTP long-polling handshake (a tiny hand-written HTTP/1.1 client), then the
//! upgrade to a websocket (`2probe` → `3probe`, `5`). Each records, for every `42[...]` event carrying `"id":N`, the id and the
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    /// Pings (`2`) answered, handshake included.
    pings: AtomicU32,
}

/// How a client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// `transport=websocket` from the start (what a client with `transports: ["websocket"]` does).
    Websocket,
    /// socket.io-client's default: engine.io long-polling handshake and namespace connect over
    /// HTTP, then the upgrade to a websocket. The HTTP connection is closed after the upgrade.
    PollingUpgrade,
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

fn connect_packet(token: Option<&str>) -> String {
    match token {
        Some(t) => format!("40{}", serde_json::json!({ "token": t })),
        None => "40".to_owned(),
    }
}

/// One keep-alive HTTP/1.1 connection for the long-polling requests.
struct Http {
    tcp: TcpStream,
    buf: Vec<u8>,
    host: String,
}

impl Http {
    /// Sends a request and reads the response: status and body (Content-Length or chunked).
    async fn request(&mut self, method: &str, target: &str, body: &str) -> Result<(u16, String)> {
        self.send(method, target, body).await?;
        self.response().await
    }

    /// Writes a request.
    async fn send(&mut self, method: &str, target: &str, body: &str) -> Result<()> {
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\nConnection: keep-alive\r\n",
            self.host
        );
        if method == "POST" {
            req.push_str(&format!(
                "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.tcp.write_all(req.as_bytes()).await?;
        Ok(())
    }

    /// Reads a response: status and body.
    async fn response(&mut self) -> Result<(u16, String)> {
        let head_end = loop {
            if let Some(i) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        self.buf.drain(..head_end);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no HTTP status")?;
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let mut out = Vec::new();
        if let Some(len) = header("content-length:") {
            let len: usize = len.parse().context("content-length")?;
            while self.buf.len() < len {
                self.fill().await?;
            }
            out.extend(self.buf.drain(..len));
        } else if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
            loop {
                let line_end = loop {
                    if let Some(i) = memchr::memmem::find(&self.buf, b"\r\n") {
                        break i;
                    }
                    self.fill().await?;
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .context("chunk size")?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    self.fill().await?;
                }
                out.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break;
                }
            }
        } else {
            bail!("HTTP response without a length: {head:.200}");
        }
        Ok((status, String::from_utf8_lossy(&out).into_owned()))
    }

    async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.tcp.read(&mut chunk).await?;
        if n == 0 {
            bail!("HTTP connection closed");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// socket.io-client's default path: polling handshake and connect, then the websocket upgrade.
async fn handshake_polling(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    pings: &AtomicU32,
) -> Result<WebSocketStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.context("TCP connect")?;
    tcp.set_nodelay(true)?;
    let mut http = Http {
        tcp,
        buf: Vec::new(),
        host: addr.to_string(),
    };
    let base = format!("{path}/?EIO=4&transport=polling");
    let (status, open) = http.request("GET", &format!("{base}&t=a"), "").await?;
    if status != 200 || !open.starts_with('0') {
        bail!("polling handshake: HTTP {status}, expected the open packet, got {open:.120}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&open[1..]).context("the open packet is not JSON")?;
    let sid = v["sid"]
        .as_str()
        .context("no sid in the open packet")?
        .to_owned();
    let with_sid = format!("{base}&sid={sid}");
    let (status, body) = http
        .request("POST", &format!("{with_sid}&t=b"), &connect_packet(token))
        .await?;
    if status != 200 {
        bail!("polling connect: HTTP {status}: {body:.120}");
    }
    // Every packet of a response counts: a ping may come in the same body as the ack.
    let mut acked = false;
    for k in 0..20 {
        let (status, body) = http
            .request("GET", &format!("{with_sid}&t=c{k}"), "")
            .await?;
        if status != 200 {
            bail!("polling read: HTTP {status}: {body:.120}");
        }
        for packet in body.split('\u{1e}') {
            if packet == "2" {
                pings.fetch_add(1, Ordering::Relaxed);
                http.request("POST", &format!("{with_sid}&t=p{k}"), "3")
                    .await?;
            } else if packet.starts_with("40") {
                acked = true;
            } else if packet.starts_with("44") {
                bail!("connection refused: {packet:.200}");
            }
        }
        if acked {
            break;
        }
    }
    if !acked {
        bail!("no connect acknowledgement over polling");
    }
    // socket.io-client keeps a long-poll GET open while it probes the websocket; the server
    // answers it when the upgrade completes (a noop `6`, or what was queued, e.g. a ping).
    http.send("GET", &format!("{with_sid}&t=u"), "").await?;
    let tcp = TcpStream::connect(addr)
        .await
        .context("TCP connect (upgrade)")?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{addr}{path}/?EIO=4&transport=websocket&sid={sid}");
    let (mut ws, _) = client_async_with_config(url, tcp, Some(ws_config()))
        .await
        .context("websocket upgrade")?;
    ws.send(Message::text("2probe")).await?;
    let mut early_pings = 0;
    loop {
        let p = next_text(&mut ws).await?;
        if p == "3probe" {
            break;
        } else if p == "2" {
            early_pings += 1;
        }
    }
    ws.send(Message::text("5")).await?;
    for _ in 0..early_pings {
        pings.fetch_add(1, Ordering::Relaxed);
        ws.send(Message::text("3")).await?;
    }
    if let Ok(Ok((_, body))) = tokio::time::timeout(Duration::from_secs(5), http.response()).await {
        for packet in body.split('\u{1e}') {
            if packet == "2" {
                pings.fetch_add(1, Ordering::Relaxed);
                ws.send(Message::text("3")).await?;
            }
        }
    }
    drop(http);
    Ok(ws)
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
    ws.send(Message::text(connect_packet(token))).await?;
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
        } else if bytes == b"2" {
            shared.pings.fetch_add(1, Ordering::Relaxed);
            if ws.send(Message::text("3")).await.is_err() {
                break;
            }
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
        Swarm::connect_with(addr, path, specs, concurrency, Handshake::Websocket).await
    }

    /// [`Swarm::connect`] with a choice of handshake.
    pub async fn connect_with(
        addr: SocketAddr,
        path: &str,
        specs: &[Spec],
        concurrency: usize,
        how: Handshake,
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
                let ws = tokio::time::timeout(Duration::from_secs(30), async {
                    match how {
                        Handshake::Websocket => handshake(addr, &path, token.as_deref()).await,
                        Handshake::PollingUpgrade => {
                            handshake_polling(addr, &path, token.as_deref(), &s.pings).await
                        }
                    }
                })
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

    /// The fewest pings any still-connected client has answered.
    pub fn min_pings(&self) -> u32 {
        self.clients
            .iter()
            .filter(|(_, s)| s.alive.load(Ordering::Relaxed))
            .map(|(_, s)| s.pings.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
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
    use super::{Http, event_id};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The polling client reads responses with a length and chunked ones on one connection.
    #[tokio::test]
    async fn http_reads_length_and_chunked_bodies() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /socket.io/?EIO=4 HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n0{\"a\"")
                .await
                .unwrap();
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(req.starts_with("POST /x HTTP/1.1\r\n"), "{req}");
            assert!(req.contains("Content-Length: 2\r\n") && req.ends_with("\r\n\r\n40"));
            s.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n40\r\n3\r\n\x1e2a\r\n0\r\n\r\n",
            )
            .await
            .unwrap();
        });
        let mut http = Http {
            tcp: tokio::net::TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            host: addr.to_string(),
        };
        assert_eq!(
            http.request("GET", "/socket.io/?EIO=4", "").await.unwrap(),
            (200, "0{\"a\"".to_owned())
        );
        assert_eq!(
            http.request("POST", "/x", "40").await.unwrap(),
            (200, "40\u{1e}2a".to_owned())
        );
        server.await.unwrap();
    }

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
