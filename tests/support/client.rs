//! Real Socket.IO clients (`rust_socketio`) that push what they receive into a channel, so a
//! test asserts order and count.

use futures::FutureExt as _;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload};
use serde_json::Value;
use tokio::sync::mpsc;

/// What a client saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    /// The handshake succeeded.
    Connected,
    /// An error (connect_error included), as rust_socketio words it.
    Error(String),
    /// An event and its first argument (`null` without arguments).
    Event(String, Value),
    /// The connection closed.
    Closed,
}

/// A connected client and what it receives.
pub struct SioClient {
    /// The client, to disconnect.
    pub client: Client,
    /// Everything it sees, in order.
    pub rx: mpsc::UnboundedReceiver<Got>,
}

fn first_value(payload: Payload) -> Value {
    match payload {
        Payload::Text(values) => values.into_iter().next().unwrap_or(Value::Null),
        Payload::Binary(bytes) => serde_json::json!({ "binary": bytes.len() }),
        #[allow(deprecated)]
        Payload::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
    }
}

impl SioClient {
    /// Connects to `url` (like `http://127.0.0.1:1338/`) with `auth` as the handshake's auth
    /// object; panics when the server cannot be reached.
    pub async fn connect(url: &str, auth: Value) -> SioClient {
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
                    let _ = tx.send(Got::Error(first_value(p).to_string()));
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
                    let _ = tx.send(Got::Event(event.to_string(), first_value(p)));
                }
                .boxed()
            })
            .connect()
            .await
            .unwrap_or_else(|e| panic!("Socket.IO client cannot reach {url}: {e}"));
        SioClient { client, rx }
    }

    /// Waits for the handshake to complete (the server has joined the socket to its rooms by
    /// then); panics on anything else first, or after `timeout`.
    #[track_caller]
    pub fn connected(&mut self, timeout: std::time::Duration) -> impl Future<Output = ()> + '_ {
        let at = std::panic::Location::caller();
        async move {
            match tokio::time::timeout(timeout, self.rx.recv()).await {
                Ok(Some(Got::Connected)) => {}
                Ok(Some(other)) => panic!("{at}: expected the connection, got {other:?}"),
                Ok(None) => panic!("{at}: the client's channel closed"),
                Err(_) => panic!("{at}: not connected within {timeout:?}"),
            }
        }
    }

    /// The next event (skipping connection notices); panics on an error, a close, or after
    /// `timeout`.
    #[track_caller]
    pub fn next_event(
        &mut self,
        timeout: std::time::Duration,
    ) -> impl Future<Output = (String, Value)> + '_ {
        let at = std::panic::Location::caller();
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(Got::Event(name, value))) => return (name, value),
                    Ok(Some(Got::Connected)) => {}
                    Ok(Some(other)) => panic!("{at}: expected an event, got {other:?}"),
                    Ok(None) => panic!("{at}: the client's channel closed"),
                    Err(_) => panic!("{at}: no event within {timeout:?}"),
                }
            }
        }
    }
}
