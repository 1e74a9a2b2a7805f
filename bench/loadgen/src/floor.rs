//! The write floor of the benchmark (`strapi-io-floor`): the least a server can do to deliver an
//! event to N websocket clients. It answers the engine.io / Socket.IO handshake the load clients
//! expect (`0{…}` open, `40` → `40{…}`) and, on command, writes one frame to every connected
//! socket: the frame is built once, each socket's writer task gets a reference to it and writes
//! it (one write per frame; frames that are already queued when the writer wakes go out in the
//! same write). No rooms, no adapter, no heartbeat, nothing per event but the copy into each
//! socket and the write.
//!
//! Control connection (plain TCP lines, the same as `bench/node/server.mjs`):
//!   payload <event> <json>   the event name and payload to send from now on (answers `ok`)
//!   emit <id>                set payload.data.id = <id> and write it to every socket
//!   burst <id> <n>           n events, ids id, id+1, … (answers `ok` when queued)
//!   count                    answers `count <connected sockets>`
//!
//! Usage: strapi-io-floor --port P --control-port C (prints `ready` once both listen).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Every connected socket's writer queue, by connection number.
type Sockets = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Utf8Bytes>>>>;

fn option(args: &[String], name: &str) -> Result<u16> {
    let i = args
        .iter()
        .position(|a| a == name)
        .with_context(|| format!("{name} is required"))?;
    args.get(i + 1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{name} needs a port number"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port = option(&args, "--port")?;
    let control = option(&args, "--control-port")?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(port, control))
}

async fn run(port: u16, control_port: u16) -> Result<()> {
    let io = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let control = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], control_port))).await?;
    let sockets: Sockets = Arc::default();
    let next = Arc::new(AtomicU64::new(1));
    println!("ready");
    {
        let sockets = sockets.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = control.accept().await {
                tokio::spawn(control_conn(conn, sockets.clone()));
            }
        });
    }
    loop {
        let (tcp, _) = io.accept().await?;
        let id = next.fetch_add(1, Ordering::Relaxed);
        let sockets = sockets.clone();
        tokio::spawn(async move {
            let _ = socket(tcp, id, &sockets).await;
            sockets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        });
    }
}

/// One client: handshake, then a writer task for the frames and a reader for its packets.
async fn socket(tcp: TcpStream, id: u64, sockets: &Sockets) -> Result<()> {
    tcp.set_nodelay(true)?;
    let mut ws = tokio_tungstenite::accept_async(tcp).await?;
    ws.send(Message::text(format!(
        r#"0{{"sid":"floor{id}","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}"#
    )))
    .await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().starts_with("40") => break,
            Some(Ok(_)) => {}
            _ => bail!("closed during the handshake"),
        }
    }
    ws.send(Message::text(format!(r#"40{{"sid":"floor-ns{id}"}}"#)))
        .await?;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Utf8Bytes>();
    sockets
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, tx);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.feed(Message::Text(frame)).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(Message::Text(more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        if msg.is_close() {
            break;
        }
    }
    writer.abort();
    Ok(())
}

/// The frame `42["event",payload]` with `payload.data.id = id`.
fn frame(event: &str, payload: &mut serde_json::Value, id: u64) -> Utf8Bytes {
    if let Some(data) = payload.get_mut("data").and_then(|d| d.as_object_mut()) {
        data.insert("id".into(), id.into());
    }
    Utf8Bytes::from(format!("42{}", serde_json::json!([event, payload])))
}

fn send_all(sockets: &Sockets, frame: &Utf8Bytes) {
    for tx in sockets
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
    {
        let _ = tx.send(frame.clone());
    }
}

async fn control_conn(conn: TcpStream, sockets: Sockets) {
    let _ = conn.set_nodelay(true);
    let (r, mut w) = conn.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut event = "message:create".to_owned();
    let mut payload = serde_json::json!({"data": {"id": 0, "attributes": {}}, "meta": {}});
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = if let Some(id) = line.strip_prefix("emit ") {
            match id.trim().parse() {
                Ok(id) => {
                    send_all(&sockets, &frame(&event, &mut payload, id));
                    None
                }
                Err(_) => Some("error emit needs an id".to_owned()),
            }
        } else if let Some(rest) = line.strip_prefix("burst ") {
            let mut parts = rest.split_whitespace().map(str::parse::<u64>);
            match (parts.next(), parts.next()) {
                (Some(Ok(first)), Some(Ok(n))) => {
                    for k in 0..n {
                        send_all(&sockets, &frame(&event, &mut payload, first + k));
                    }
                    Some("ok".to_owned())
                }
                _ => Some("error burst needs an id and a count".to_owned()),
            }
        } else if let Some(rest) = line.strip_prefix("payload ") {
            match rest
                .split_once(' ')
                .map(|(e, p)| (e, serde_json::from_str::<serde_json::Value>(p)))
            {
                Some((e, Ok(p))) => {
                    event = e.to_owned();
                    payload = p;
                    Some("ok".to_owned())
                }
                _ => Some("error payload needs an event name and JSON".to_owned()),
            }
        } else if line == "count" {
            let n = sockets.lock().unwrap_or_else(PoisonError::into_inner).len();
            Some(format!("count {n}"))
        } else if line.is_empty() {
            None
        } else {
            Some("error unknown command".to_owned())
        };
        if let Some(text) = reply
            && w.write_all(format!("{text}\n").as_bytes()).await.is_err()
        {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::frame;

    #[test]
    fn frame_sets_the_id() {
        let mut p = serde_json::json!({"data": {"id": 0, "attributes": {"text": "x"}}, "meta": {}});
        let f = frame("message:create", &mut p, 42);
        assert_eq!(
            f.as_str(),
            r#"42["message:create",{"data":{"id":42,"attributes":{"text":"x"}},"meta":{}}]"#
        );
    }
}
