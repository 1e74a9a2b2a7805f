//! `[[events]]` handlers: `log` and `webhook` on connection and disconnect; `log`, `relay` and
//! `webhook` on client events.
//!
//! Event names are case-sensitive; client events without a handler are ignored (socketioxide
//! drops them). Several entries with one name all run, in config order: logs and relays first,
//! then webhooks, the first of which answers the client's acknowledgement if it asked for one.
//!
//! What a client can make the bridge do is bounded: each socket has an allowance of client
//! events (a token bucket, `io.client_events_per_second` / `io.client_events_burst`); an event
//! over it runs no handler, is counted, and its ack (if asked for) says so. Webhook calls in
//! flight are capped over all sockets (`webhooks.max_in_flight`; more are refused at once, not
//! queued), never follow redirects, and read at most `webhooks.max_response_bytes` of the answer.
//! Every webhook request is signed (see [`signature`]) so the target can trust `socket.userId`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
use crate::config::{EventConfig, EventHandler, IoLimits, Secret};

/// The header carrying the request's Unix time in seconds, part of what is signed.
pub const TIMESTAMP_HEADER: &str = "x-strapi-io-timestamp";
/// The header carrying `sha256=<hex>`: see [`signature`].
pub const SIGNATURE_HEADER: &str = "x-strapi-io-signature";

/// The ack a client gets for an event over its allowance.
pub(super) const RATE_LIMITED: &str =
    "rate limited: too many events from this socket; try again later";
/// The ack a client gets when every webhook slot is taken.
const WEBHOOKS_BUSY: &str = "too many webhook calls in flight; try again later";

/// Handlers by event, and the HTTP client webhooks use.
pub(super) struct EventHandlers {
    connection: Vec<EventHandler>,
    disconnect: Vec<EventHandler>,
    client: HashMap<String, Arc<[EventHandler]>>,
    webhook: Result<reqwest::Client, String>,
    /// The key requests are signed with; `None` only where the configuration was built by hand
    /// (the config refuses webhooks without a secret).
    secret: Option<Secret>,
    /// One permit per webhook call in flight.
    in_flight: Arc<Semaphore>,
    max_response_bytes: usize,
    events_per_second: f64,
    events_burst: f64,
    /// `[io] max_subscriptions_per_socket`.
    pub(super) max_subscriptions: usize,
}

/// `sha256=` and the hex HMAC-SHA256, keyed with the secret, of the timestamp header's value, a
/// `.`, and the exact request body bytes. The receiver recomputes it over the raw body and
/// compares in constant time, and refuses old timestamps (replays).
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; this arm is unreachable.
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A socket's allowance of client events: `burst` at most, refilled at `per_second`.
struct Allowance {
    tokens: f64,
    at: Instant,
}

impl Allowance {
    fn take(&mut self, per_second: f64, burst: f64) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * per_second;
        self.tokens = (self.tokens + refill).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A socket's allowance, in its extensions: shared by its `[[events]]` handlers and its
/// subscription requests.
#[derive(Clone)]
struct SocketAllowance(Arc<Mutex<Allowance>>);

/// The socket's allowance (created with a full burst on first use).
fn allowance_of<A: Adapter>(shared: &Shared, socket: &SocketRef<A>) -> Arc<Mutex<Allowance>> {
    if let Some(SocketAllowance(a)) = socket.extensions.get::<SocketAllowance>() {
        return a;
    }
    let a = Arc::new(Mutex::new(Allowance {
        tokens: shared.events.events_burst,
        at: Instant::now(),
    }));
    socket.extensions.insert(SocketAllowance(a.clone()));
    a
}

/// Takes one client event from the socket's allowance; `false` when it is used up.
pub(super) fn take_allowance<A: Adapter>(shared: &Shared, socket: &SocketRef<A>) -> bool {
    let allowance = allowance_of(shared, socket);
    let mut a = allowance
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    a.take(shared.events.events_per_second, shared.events.events_burst)
}

impl EventHandlers {
    /// Groups the configured handlers by event name.
    pub(super) fn new(config: &[EventConfig], limits: &IoLimits) -> Self {
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
        if any_webhook && limits.webhook_secret.is_none() {
            warn!("webhook requests are not signed: no webhook secret is configured");
        }
        EventHandlers {
            connection,
            disconnect,
            client: client.into_iter().map(|(k, v)| (k, Arc::from(v))).collect(),
            webhook,
            secret: limits.webhook_secret.clone(),
            in_flight: Arc::new(Semaphore::new(
                limits.webhook_max_in_flight.min(Semaphore::MAX_PERMITS),
            )),
            max_response_bytes: limits.webhook_max_response_bytes,
            events_per_second: f64::from(limits.client_events_per_second),
            events_burst: f64::from(limits.client_events_burst),
            max_subscriptions: limits.max_subscriptions_per_socket,
        }
    }

    /// A webhook slot, or `None` when `webhooks.max_in_flight` calls are running.
    fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
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
        // A redirect would re-send the signed body to wherever the target points.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| error_chain(&e))
}

/// Registers the socket's client-event and disconnect handlers. Called from the handshake,
/// before CONNECT is sent, so no client event can arrive before its handler exists.
pub(super) fn attach<A: Adapter>(shared: &Arc<Shared>, socket: &SocketRef<A>) {
    // One allowance per socket, shared by all of its events (see [`take_allowance`]).
    for (name, handlers) in &shared.events.client {
        let shared = shared.clone();
        let handlers = handlers.clone();
        let event = name.clone();
        socket.on(
            name.clone(),
            move |s: SocketRef<A>, args: Args, ack: AckSender<A>| async move {
                if take_allowance(&shared, &s) {
                    on_client_event(&shared, &event, &handlers, s, args, ack).await;
                } else {
                    refuse(
                        &shared,
                        &event,
                        "rate_limited",
                        RATE_LIMITED,
                        &s,
                        &args,
                        ack,
                    );
                }
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

/// Drops a client event: counted, logged at debug (a flood must not flood the log), and the
/// ack, if the client asked for one, carries `{"error": text}`.
fn refuse<A: Adapter>(
    shared: &Shared,
    event: &str,
    reason: &'static str,
    text: &str,
    socket: &SocketRef<A>,
    args: &Args,
    ack: AckSender<A>,
) {
    shared.metrics.client_event_dropped(reason);
    tracing::debug!(event, socket = %socket.id, reason, "client event dropped");
    if args.wants_ack
        && let Err(e) = ack.send(&serde_json::json!({ "error": text }))
    {
        tracing::debug!(event, socket = %socket.id, error = %e, "could not send the acknowledgement");
    }
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
            EventHandler::Webhook { url, timeout } => match shared.events.slot() {
                Some(slot) => {
                    spawn_webhook(shared, slot, "connection", url, *timeout, &[], info.clone());
                }
                None => shared.metrics.client_event_dropped("webhooks_busy"),
            },
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
            EventHandler::Webhook { url, timeout } => match shared.events.slot() {
                Some(slot) => {
                    spawn_webhook(shared, slot, "disconnect", url, *timeout, &[], info.clone());
                }
                None => shared.metrics.client_event_dropped("webhooks_busy"),
            },
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
    let session = socket.extensions.get::<Session>();
    // Access was taken away: nothing it sends is relayed or forwarded until it is gone.
    if session.as_ref().is_some_and(|s| s.revoked) {
        return;
    }
    let info = SocketInfo::of(&socket);
    let rooms = session
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
        let Some(slot) = shared.events.slot() else {
            match ack.take() {
                Some(ack) => refuse(
                    shared,
                    event,
                    "webhooks_busy",
                    WEBHOOKS_BUSY,
                    &socket,
                    &args,
                    ack,
                ),
                None => {
                    shared.metrics.client_event_dropped("webhooks_busy");
                    tracing::debug!(event, socket = %info.id, "webhook not called: too many in flight");
                }
            }
            continue;
        };
        match ack.take() {
            Some(ack) => {
                let answer = call_webhook(shared, event, url, *timeout, &args.values, &info).await;
                drop(slot);
                let res = match answer {
                    Ok(body) => ack.send(&body),
                    Err(e) => ack.send(&serde_json::json!({ "error": e })),
                };
                if let Err(e) = res {
                    warn!(event, socket = %info.id, error = %e, "could not send the acknowledgement");
                }
            }
            None => spawn_webhook(
                shared,
                slot,
                event,
                url,
                *timeout,
                &args.values,
                info.clone(),
            ),
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

/// Calls a webhook in a task of its own, holding `slot` until the call ends.
fn spawn_webhook(
    shared: &Arc<Shared>,
    slot: OwnedSemaphorePermit,
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
        drop(slot);
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
    let res = post(&shared.events, url, timeout, event, args, info).await;
    if let Err(e) = &res {
        shared.metrics.webhook_failed(event);
        warn!(event, socket = %info.id, reason = %e, "webhook failed");
    }
    res
}

async fn post(
    hooks: &EventHandlers,
    url: &str,
    timeout: Duration,
    event: &str,
    args: &[Box<RawValue>],
    info: &SocketInfo,
) -> Result<Box<RawValue>, String> {
    let client = hooks
        .webhook
        .as_ref()
        .map_err(|e| format!("webhook client unavailable: {e}"))?;
    let body = serde_json::to_vec(&WebhookBody {
        event,
        args,
        socket: info,
    })
    .map_err(|e| format!("cannot encode the webhook body: {e}"))?;
    let mut request = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = &hooks.secret {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        let signature = signature(secret.expose(), &timestamp, &body);
        request = request
            .header(TIMESTAMP_HEADER, timestamp)
            .header(SIGNATURE_HEADER, signature);
    }
    let ms = timeout.as_millis();
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            format!("webhook timed out after {ms} ms")
        } else {
            format!("webhook unreachable: {}", error_chain(&e.without_url()))
        }
    };
    let mut response = request.body(body).send().await.map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("webhook answered {status}"));
    }
    let max = hooks.max_response_bytes;
    let too_big = || format!("webhook answer is larger than {max} bytes");
    if response
        .content_length()
        .is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX))
    {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if bytes.len() + chunk.len() > max {
            return Err(too_big());
        }
        bytes.extend_from_slice(&chunk);
    }
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
