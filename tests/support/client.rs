//! Real Socket.IO clients for the tests: the `rust_socketio` crate ([`SioClient`]) and the npm
//! `socket.io-client` that Strapi users run, through `tests/node/listen.mjs` ([`NodeClient`]).
//! Both push what they receive into a channel; tests assert order and count.
//!
//! "Receives nothing else" is shown by order, not by waiting: after the changes under test the
//! test writes a marker row (or emits a marker message) that every client may receive; the
//! marker must be the next thing the client sees.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::Location;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload as SioPayload};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long one wait for a message may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// What a client saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    /// The handshake was accepted.
    Connected,
    /// The handshake was refused with this message.
    ConnectError(String),
    /// An event with its arguments.
    Event(String, Vec<Value>),
    /// The connection closed.
    Closed,
    /// Anything else the client reported.
    Other(String),
}

/// What a client received, in order.
pub struct Inbox(mpsc::UnboundedReceiver<Got>);

impl Inbox {
    /// The next thing received.
    #[track_caller]
    pub fn next(&mut self) -> impl Future<Output = Got> + '_ {
        let at = Location::caller();
        async move {
            match tokio::time::timeout(WAIT, self.0.recv()).await {
                Ok(Some(got)) => got,
                Ok(None) => panic!("{at}: the client is gone"),
                Err(_) => panic!("{at}: nothing received within {WAIT:?}"),
            }
        }
    }

    /// The next event and its first argument, whatever its name (within `timeout`).
    #[track_caller]
    pub fn next_event(&mut self, timeout: Duration) -> impl Future<Output = (String, Value)> + '_ {
        let at = Location::caller();
        async move {
            match tokio::time::timeout(timeout, self.0.recv()).await {
                Ok(Some(Got::Event(name, args))) => {
                    (name, args.into_iter().next().unwrap_or(Value::Null))
                }
                Ok(Some(other)) => panic!("{at}: expected an event, got {other:?}"),
                Ok(None) => panic!("{at}: the client is gone"),
                Err(_) => panic!("{at}: no event within {timeout:?}"),
            }
        }
    }

    /// The next message must be `event` with one argument; returns it.
    #[track_caller]
    pub fn event(&mut self, event: &str) -> impl Future<Output = Value> + '_ {
        let at = Location::caller();
        let event = event.to_owned();
        async move {
            match self.next().await {
                Got::Event(name, mut args) if name == event && args.len() == 1 => args.remove(0),
                other => panic!("{at}: expected {event} with one argument, got {other:?}"),
            }
        }
    }

    /// The next message must be `event` with exactly `data` as its argument.
    #[track_caller]
    pub fn expect(&mut self, event: &str, data: Value) -> impl Future<Output = ()> + '_ {
        let at = Location::caller();
        let event = event.to_owned();
        async move {
            match self.next().await {
                Got::Event(name, args) if name == event && args == vec![data.clone()] => {}
                other => panic!("{at}: expected {event} {data}, got {other:?}"),
            }
        }
    }

    /// The next message must be marker `n` (see [`marker`]): nothing else came before it.
    #[track_caller]
    pub fn marker(&mut self, n: u32) -> impl Future<Output = ()> + '_ {
        self.expect("marker", json!(n))
    }
}

/// Commits a `raw` custom message `marker` with data `n`, which every socket receives.
pub async fn marker(db: &super::bridge::StrapiDb<'_>, n: u32) {
    db.sql(&format!(
        "SELECT pg_logical_emit_message(true, 'strapi_io', '{{\"raw\":\"marker\",\"data\":{n}}}')"
    ))
    .await;
}

/// A `rust_socketio` client; what it receives is in [`Inbox`] (through `Deref`).
pub struct SioClient {
    client: Client,
    inbox: Inbox,
}

impl std::ops::Deref for SioClient {
    type Target = Inbox;
    fn deref(&self) -> &Inbox {
        &self.inbox
    }
}

impl std::ops::DerefMut for SioClient {
    fn deref_mut(&mut self) -> &mut Inbox {
        &mut self.inbox
    }
}

fn values(payload: SioPayload) -> Vec<Value> {
    match payload {
        SioPayload::Text(values) => values,
        SioPayload::Binary(bytes) => vec![json!({ "binary": bytes.len() })],
        #[allow(deprecated)]
        SioPayload::String(s) => vec![serde_json::from_str(&s).unwrap_or(Value::String(s))],
    }
}

/// Stream events end with their offset (see `tests/delivery.rs`); the other tests look at the
/// arguments before it.
pub fn without_offset(mut args: Vec<Value>) -> Vec<Value> {
    if args
        .last()
        .and_then(Value::as_str)
        .is_some_and(|s| s.parse::<strapi_io_bridge::delivery::Offset>().is_ok())
    {
        args.pop();
    }
    args
}

/// `connect_error` reaches rust_socketio's error callback as
/// `Received an ConnectError frame: {"message":"..."}`.
fn error_event(payload: SioPayload) -> Got {
    let text = match values(payload).into_iter().next() {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    match text.strip_prefix("Received an ConnectError frame: ") {
        Some(json) => Got::ConnectError(
            serde_json::from_str::<Value>(json)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| json.to_owned()),
        ),
        None => Got::Other(text),
    }
}

impl SioClient {
    /// Connects with `auth` (e.g. `{"token": "..."}`), without waiting for the answer.
    pub async fn connect(addr: SocketAddr, auth: Value) -> SioClient {
        SioClient::connect_url(&format!("http://{addr}/"), auth).await
    }

    /// Connects to a URL (`http://127.0.0.1:1338/`), without waiting for the answer.
    pub async fn connect_url(url: &str, auth: Value) -> SioClient {
        let (tx, rx) = mpsc::unbounded_channel();
        let (on_connect, on_error, on_close, on_any) = (tx.clone(), tx.clone(), tx.clone(), tx);
        let client = ClientBuilder::new(url)
            .auth(auth)
            .reconnect(false)
            .on(Event::Connect, move |_, _| {
                let tx = on_connect.clone();
                async move {
                    let _ = tx.send(Got::Connected);
                }
                .boxed()
            })
            .on(Event::Error, move |p, _| {
                let tx = on_error.clone();
                async move {
                    let _ = tx.send(error_event(p));
                }
                .boxed()
            })
            .on(Event::Close, move |_, _| {
                let tx = on_close.clone();
                async move {
                    let _ = tx.send(Got::Closed);
                }
                .boxed()
            })
            .on_any(move |event, p, _| {
                let tx = on_any.clone();
                async move {
                    let _ = tx.send(Got::Event(event.to_string(), without_offset(values(p))));
                }
                .boxed()
            })
            .connect()
            .await
            .unwrap_or_else(|e| panic!("client cannot reach the bridge: {e}"));
        SioClient {
            client,
            inbox: Inbox(rx),
        }
    }

    /// Connects and waits until the handshake is accepted.
    #[track_caller]
    pub fn connected(addr: SocketAddr, auth: Value) -> impl Future<Output = SioClient> {
        Self::connected_url(format!("http://{addr}/"), auth)
    }

    /// [`connected`](Self::connected) for a URL.
    #[track_caller]
    pub fn connected_url(url: String, auth: Value) -> impl Future<Output = SioClient> {
        let at = Location::caller();
        async move {
            let mut c = SioClient::connect_url(&url, auth).await;
            match c.next().await {
                Got::Connected => c,
                other => panic!("{at}: expected a connection, got {other:?}"),
            }
        }
    }

    /// Emits an event to the server.
    pub async fn emit(&self, event: &str, data: Value) {
        self.client
            .emit(event, data)
            .await
            .unwrap_or_else(|e| panic!("emit {event}: {e}"));
    }

    /// Emits an event asking for an acknowledgement and returns the ack's arguments.
    #[track_caller]
    pub fn ack<'a>(&'a self, event: &'a str, data: Value) -> impl Future<Output = Vec<Value>> + 'a {
        let at = Location::caller();
        async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
            self.client
                .emit_with_ack(event, data, WAIT, move |p, _| {
                    let tx = tx.lock().unwrap().take();
                    async move {
                        if let Some(tx) = tx {
                            let _ = tx.send(values(p));
                        }
                    }
                    .boxed()
                })
                .await
                .unwrap_or_else(|e| panic!("{at}: emit {event}: {e}"));
            match tokio::time::timeout(WAIT, rx).await {
                // rust_socketio hands the ack's argument list over as one JSON array.
                Ok(Ok(mut args)) => match args.pop() {
                    Some(Value::Array(list)) if args.is_empty() => list,
                    Some(last) => {
                        args.push(last);
                        args
                    }
                    None => args,
                },
                _ => panic!("{at}: no acknowledgement of {event} within {WAIT:?}"),
            }
        }
    }

    /// Disconnects.
    pub async fn close(self) {
        let _ = self.client.disconnect().await;
    }
}

/// The npm `socket.io-client` (4.8), run through `tests/node/listen.mjs`: one JSON line per
/// event.
pub struct NodeClient {
    child: Child,
    inbox: Inbox,
}

impl std::ops::Deref for NodeClient {
    type Target = Inbox;
    fn deref(&self) -> &Inbox {
        &self.inbox
    }
}

impl std::ops::DerefMut for NodeClient {
    fn deref_mut(&mut self) -> &mut Inbox {
        &mut self.inbox
    }
}

/// Whether the npm client is installed (`npm ci` in `tests/node`).
pub fn node_client_installed() -> bool {
    node_dir().join("node_modules/socket.io-client").is_dir()
}

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

impl NodeClient {
    /// Starts `listen.mjs` against `addr` with `args` (e.g. `["--token", t]`). Panics with the
    /// reason when Node or the npm packages are missing: `.ci/run` installs them.
    pub fn connect(addr: SocketAddr, args: &[&str]) -> NodeClient {
        assert!(
            node_client_installed(),
            "the npm socket.io-client is not installed: run `npm ci` in tests/node (.ci/run does)"
        );
        let mut child = Command::new("node")
            .arg(node_dir().join("listen.mjs"))
            .args(["--url", &format!("http://{addr}"), "--timeout", "60000"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let got = if line == "connect" {
                    Got::Connected
                } else if let Some(msg) = line.strip_prefix("connect_error ") {
                    Got::ConnectError(msg.to_owned())
                } else if line.starts_with("disconnect") {
                    Got::Closed
                } else if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    match (v.get("event").and_then(Value::as_str), v.get("data")) {
                        (Some(event), Some(data)) => {
                            Got::Event(event.to_owned(), vec![data.clone()])
                        }
                        _ => Got::Other(line),
                    }
                } else {
                    Got::Other(line)
                };
                if tx.send(got).is_err() {
                    break;
                }
            }
        });
        NodeClient {
            child,
            inbox: Inbox(rx),
        }
    }

    /// Connects and waits until the handshake is accepted.
    #[track_caller]
    pub fn connected<'a>(
        addr: SocketAddr,
        args: &'a [&'a str],
    ) -> impl Future<Output = NodeClient> + 'a {
        let at = Location::caller();
        async move {
            let mut c = NodeClient::connect(addr, args);
            match c.next().await {
                Got::Connected => c,
                other => panic!("{at}: expected a connection, got {other:?}"),
            }
        }
    }
}

impl Drop for NodeClient {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
