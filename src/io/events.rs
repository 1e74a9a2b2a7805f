//! `[[events]]` handlers: `log` and `webhook` on connection and disconnect; `log`, `relay` and
//! `webhook` on client events.
//!
//! Event names are case-sensitive; client events without a handler are ignored (socketioxide
//! drops them). Several entries with one name all run, in config order: logs and relays first,
//! then webhooks, the first of which answers the client's acknowledgement if it asked for one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::ser::SerializeTuple;
use serde_json::value::RawValue;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::{FromMessageParts, Value as SioValue};
use socketioxide::socket::{DisconnectReason, Socket};
use tracing::{info, warn};

use super::Shared;
use super::handshake::Session;
use crate::config::{EventConfig, EventHandler};

/// Handlers by event, and the HTTP client webhooks use.
pub(super) struct EventHandlers {
    connection: Vec<EventHandler>,
    disconnect: Vec<EventHandler>,
    client: HashMap<String, Arc<[EventHandler]>>,
    webhook: Result<reqwest::Client, String>,
}

impl EventHandlers {
    /// Groups the configured handlers by event name.
    pub(super) fn new(config: &[EventConfig]) -> Self {
        let mut connection = Vec::new();
        let mut disconnect = Vec::new();
        let mut client: HashMap<String, Vec<EventHandler>> = HashMap::new();
        for e in config {
            match e.name.as_str() {
                "connection" => connection.push(e.handler.clone()),
                "disconnect" => disconnect.push(e.handler.clone()),
                name => client
                    .entry(name.to_owned())
                    .or_default()
                    .push(e.handler.clone()),
            }
        }
        let any_webhook = config
            .iter()
            .any(|e| matches!(e.handler, EventHandler::Webhook { .. }));
        let webhook = if any_webhook {
            webhook_client()
        } else {
            Err("no webhook configured".to_owned())
        };
        if let Err(e) = &webhook
            && any_webhook
        {
            warn!(error = %e, "cannot build the webhook HTTP client; webhooks will fail");
        }
        EventHandlers {
            connection,
            disconnect,
            client: client.into_iter().map(|(k, v)| (k, Arc::from(v))).collect(),
            webhook,
        }
    }
}

/// An HTTP client for webhooks: rustls with the ring provider and the webpki roots.
pub(super) fn webhook_client() -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| error_chain(&e))
}

/// Registers the socket's client-event and disconnect handlers. Called from the handshake,
/// before CONNECT is sent, so no client event can arrive before its handler exists.
pub(super) fn attach<A: Adapter>(shared: &Arc<Shared>, socket: &SocketRef<A>) {
    for (name, handlers) in &shared.events.client {
        let shared = shared.clone();
        let handlers = handlers.clone();
        let event = name.clone();
        socket.on(
            name.clone(),
            move |s: SocketRef<A>, args: Args, ack: AckSender<A>| async move {
                on_client_event(&shared, &event, &handlers, s, args, ack).await;
            },
        );
    }
    let shared = shared.clone();
    socket.on_disconnect(
        move |s: SocketRef<A>, reason: DisconnectReason| async move {
            on_disconnect(&shared, &s, reason);
        },
    );
}

/// The `connection` handlers.
pub(super) fn on_connection<A: Adapter>(shared: &Arc<Shared>, socket: &SocketRef<A>) {
    let info = SocketInfo::of(socket);
    if shared.events.connection.is_empty() {
        tracing::debug!(socket = %info.id, role = %info.role, user_id = ?info.user_id, "socket connected");
    }
    for h in &shared.events.connection {
        match h {
            EventHandler::Log => {
                info!(socket = %info.id, role = %info.role, user_id = ?info.user_id, "socket connected");
            }
            EventHandler::Webhook { url, timeout } => {
                spawn_webhook(shared, "connection", url, *timeout, &[], info.clone());
            }
            EventHandler::Relay { .. } => {}
        }
    }
}

fn on_disconnect<A: Adapter>(
    shared: &Arc<Shared>,
    socket: &SocketRef<A>,
    reason: DisconnectReason,
) {
    let info = SocketInfo::of(socket);
    if shared.events.disconnect.is_empty() {
        tracing::debug!(socket = %info.id, role = %info.role, user_id = ?info.user_id, %reason, "socket disconnected");
    }
    for h in &shared.events.disconnect {
        match h {
            EventHandler::Log => {
                info!(socket = %info.id, role = %info.role, user_id = ?info.user_id, %reason, "socket disconnected");
            }
            EventHandler::Webhook { url, timeout } => {
                spawn_webhook(shared, "disconnect", url, *timeout, &[], info.clone());
            }
            EventHandler::Relay { .. } => {}
        }
    }
}

async fn on_client_event<A: Adapter>(
    shared: &Arc<Shared>,
    event: &str,
    handlers: &[EventHandler],
    socket: SocketRef<A>,
    args: Args,
    ack: AckSender<A>,
) {
    let info = SocketInfo::of(&socket);
    let rooms = socket
        .extensions
        .get::<Session>()
        .map(|s| s.principal.rooms.clone())
        .unwrap_or_default();
    for h in handlers {
        match h {
            EventHandler::Log => info!(
                event,
                socket = %info.id,
                role = %info.role,
                user_id = ?info.user_id,
                args = args.values.len(),
                "client event"
            ),
            EventHandler::Relay { rooms: configured } => {
                let to = configured.clone().unwrap_or_else(|| rooms.clone());
                if to.is_empty() {
                    continue;
                }
                // `socket.to(..)` leaves the sender out, as socket.io's `socket.to().emit()`.
                let res = socket.to(to).emit(event, &ArgList(&args.values)).await;
                shared.account(event, res);
            }
            EventHandler::Webhook { .. } => {}
        }
    }
    let mut ack = args.wants_ack.then_some(ack);
    for h in handlers {
        let EventHandler::Webhook { url, timeout } = h else {
            continue;
        };
        match ack.take() {
            Some(ack) => {
                let answer = call_webhook(shared, event, url, *timeout, &args.values, &info).await;
                let res = match answer {
                    Ok(body) => ack.send(&body),
                    Err(e) => ack.send(&serde_json::json!({ "error": e })),
                };
                if let Err(e) = res {
                    warn!(event, socket = %info.id, error = %e, "could not send the acknowledgement");
                }
            }
            None => spawn_webhook(shared, event, url, *timeout, &args.values, info.clone()),
        }
    }
}

/// Who sent an event, as webhooks receive it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct SocketInfo {
    id: String,
    role: String,
    user_id: Option<i64>,
}

impl SocketInfo {
    fn of<A: Adapter>(socket: &SocketRef<A>) -> Self {
        let session = socket.extensions.get::<Session>();
        SocketInfo {
            id: socket.id.to_string(),
            role: session
                .as_ref()
                .map(|s| s.principal.role.clone())
                .unwrap_or_default(),
            user_id: session.and_then(|s| s.principal.user_id),
        }
    }
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    event: &'a str,
    args: &'a [Box<RawValue>],
    socket: &'a SocketInfo,
}

fn spawn_webhook(
    shared: &Arc<Shared>,
    event: &str,
    url: &str,
    timeout: Duration,
    args: &[Box<RawValue>],
    info: SocketInfo,
) {
    let shared = shared.clone();
    let event = event.to_owned();
    let url = url.to_owned();
    let args = args.to_vec();
    tokio::spawn(async move {
        // Failures are logged and counted inside.
        let _ = call_webhook(&shared, &event, &url, timeout, &args, &info).await;
    });
}

/// POSTs `{"event","args","socket"}` and returns the JSON answer (`null` for an empty body).
/// The error is the text the client's acknowledgement carries; it is also logged and counted.
async fn call_webhook(
    shared: &Shared,
    event: &str,
    url: &str,
    timeout: Duration,
    args: &[Box<RawValue>],
    info: &SocketInfo,
) -> Result<Box<RawValue>, String> {
    let res = post(&shared.events.webhook, url, timeout, event, args, info).await;
    if let Err(e) = &res {
        shared.metrics.webhook_failed(event);
        warn!(event, socket = %info.id, reason = %e, "webhook failed");
    }
    res
}

async fn post(
    client: &Result<reqwest::Client, String>,
    url: &str,
    timeout: Duration,
    event: &str,
    args: &[Box<RawValue>],
    info: &SocketInfo,
) -> Result<Box<RawValue>, String> {
    let client = client
        .as_ref()
        .map_err(|e| format!("webhook client unavailable: {e}"))?;
    let body = WebhookBody {
        event,
        args,
        socket: info,
    };
    let ms = timeout.as_millis();
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            format!("webhook timed out after {ms} ms")
        } else {
            format!("webhook unreachable: {}", error_chain(&e.without_url()))
        }
    };
    let response = client
        .post(url)
        .timeout(timeout)
        .json(&body)
        .send()
        .await
        .map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("webhook answered {status}"));
    }
    let bytes = response.bytes().await.map_err(failed)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return RawValue::from_string("null".to_owned()).map_err(|e| e.to_string());
    }
    serde_json::from_slice::<Box<RawValue>>(&bytes)
        .map_err(|e| format!("webhook answer is not JSON: {e}"))
}

/// An error and its sources, `a: b: c`, since reqwest's own text ("error sending request")
/// hides the cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

/// Every argument of a client event, as JSON, and whether the client wants an ack.
pub(super) struct Args {
    values: Vec<Box<RawValue>>,
    wants_ack: bool,
}

impl<A: Adapter> FromMessageParts<A> for Args {
    type Error = Infallible;

    fn from_message_parts(
        _: &Arc<Socket<A>>,
        v: &mut SioValue,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        // The common parser keeps the packet's JSON text: `["event", arg1, arg2, ...]`. Binary
        // attachments stay as their `{"_placeholder":true}` markers.
        let mut values: Vec<Box<RawValue>> = v
            .as_str()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        if !values.is_empty() {
            values.remove(0);
        }
        Ok(Args {
            values,
            wants_ack: ack_id.is_some(),
        })
    }
}

/// Arguments serialized as a tuple, so socketioxide sends them as separate arguments (a `Vec`
/// would be one array argument).
struct ArgList<'a>(&'a [Box<RawValue>]);

impl Serialize for ArgList<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A relay is not replayable: it must not end with a string, which clients take for
        // an offset; a trailing `null` is added after a string.
        let trailing_string = self.0.last().is_some_and(|v| v.get().starts_with('"'));
        let mut t = serializer.serialize_tuple(self.0.len() + usize::from(trailing_string))?;
        for v in self.0 {
            t.serialize_element(v)?;
        }
        if trailing_string {
            t.serialize_element(&())?;
        }
        t.end()
    }
}
