//! The router: Socket.IO configured from `[io]`, the probes, `/metrics`, and the HTTP emit API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::{SocketIo, SocketIoBuilder, TransportType};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tracing::{error, warn};

use super::handshake::{self, Session};
use super::http_api::{self, AdminToken, ApiState};
use super::{Emitter, IoOptions, Shared, events::EventHandlers};
use crate::access::AccessHandle;
use crate::config::{CorsConfig, IoConfig, IoLimits, MetricsAccess, Transport};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::strapi::CatalogHandle;

/// The WebSocket read buffer of each connection. Clients send little (pongs, a few events),
/// and every idle connection holds this buffer, so it is kept small.
pub const WS_READ_BUFFER_BYTES: usize = 512;

/// The content type of the OpenMetrics text that `prometheus-client` writes.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Builds the Socket.IO server and the HTTP routes on one router, and the [`Emitter`] the
/// pipeline hands messages to. Serve the router with `axum::serve(..)`.
pub fn build(
    opts: IoOptions,
    access: AccessHandle,
    catalog: CatalogHandle,
    health: Health,
    metrics: Metrics,
) -> (Router, Emitter) {
    let shared = Arc::new(Shared {
        access,
        catalog,
        health,
        subscriptions: Arc::new(super::subscriptions::Registry::new(metrics.clone())),
        joinable_rooms: opts.io.joinable_rooms.clone(),
        metrics,
        events: EventHandlers::new(&opts.events, &opts.limits),
        access_epoch: AtomicU64::new(0),
        expiries: Default::default(),
        drops_unreported: AtomicU64::new(0),
        drops_reported_at: std::sync::Mutex::new(None),
        hub: crate::delivery::Hub::new(opts.delivery),
        stop: tokio_util::sync::CancellationToken::new(),
        flows: std::sync::Mutex::new(super::flow::Flows::new(
            opts.io.max_buffered_events,
            opts.io.max_buffered_bytes,
        )),
        feed_rounds: AtomicU64::new(0),
    });
    let (svc, io) = configure(&opts.io, &opts.limits).build_svc();
    register(&io, &shared, opts.io.connect_timeout);
    let emitter = Emitter { io, shared };
    emitter.spawn_feeder();

    let admin = opts.admin_token.as_ref().map(AdminToken::new);
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(emitter.clone());
    let metrics = Router::new()
        .route("/metrics", get(metrics_text))
        .with_state(emitter.clone());
    match (opts.limits.metrics, &admin) {
        (MetricsAccess::Off, _) => {}
        (MetricsAccess::Admin, Some(token)) => {
            router = router.merge(
                metrics.route_layer(middleware::from_fn_with_state(token.clone(), require_admin)),
            );
        }
        // Config refuses `admin` without a token; should it get here, the route stays closed.
        (MetricsAccess::Admin, None) => {}
        (MetricsAccess::Public, _) => router = router.merge(metrics),
    }
    if let Some(token) = &admin {
        // The token is checked by a route layer, before the body is read; the body is then
        // read up to `io.max_payload_bytes`.
        let api = Router::new()
            .route("/io/emit", post(http_api::emit))
            .route("/io/raw", post(http_api::raw))
            .layer(DefaultBodyLimit::max(opts.limits.http_max_body_bytes))
            .route_layer(middleware::from_fn_with_state(token.clone(), require_admin))
            .with_state(ApiState {
                emitter: emitter.clone(),
                token: token.clone(),
                wal: opts.wal_emit.clone().map(http_api::WalWriter::new),
            });
        router = router.merge(api);
    }
    // Socket.IO answers everything the routes above do not; CORS, when configured, applies to
    // it alone, as socket.io's own `cors` option does.
    let svc = tower::ServiceBuilder::new()
        .map_request(slim_request)
        .service(svc);
    let mut socket_io = Router::new()
        .fallback_service(svc)
        .layer(middleware::from_fn(super::flow::count_polling));
    if let Some(cors) = &opts.io.cors {
        socket_io = socket_io.layer(cors_layer(cors));
    }
    let fallback = match opts.proxy {
        Some(proxy) => crate::proxy::mount(proxy, socket_io, &opts.io.path),
        None => socket_io,
    };
    (router.fallback_service(fallback), emitter)
}

/// The request as Socket.IO needs it, copied out of the one hyper parsed: the URI, the two
/// headers engine.io reads, the connection's upgrade and byte count. engine.io keeps a socket's
/// first request (and, for a socket that upgraded from polling, the upgrade request too) for
/// the socket's whole life; hyper's header values and axum's `OriginalUri` are slices of the
/// connection's 8 KiB read buffer, so keeping them would keep that buffer per socket.
fn slim_request(req: Request) -> Request {
    let (parts, body) = req.into_parts();
    let mut slim = Request::new(body);
    *slim.method_mut() = parts.method.clone();
    *slim.version_mut() = parts.version;
    *slim.uri_mut() = axum::http::Uri::try_from(parts.uri.to_string()).unwrap_or(parts.uri);
    for name in [header::SEC_WEBSOCKET_KEY, header::CONTENT_TYPE] {
        if let Some(value) = parts.headers.get(&name)
            && let Ok(copy) = HeaderValue::from_bytes(value.as_bytes())
        {
            slim.headers_mut().insert(name, copy);
        }
    }
    let mut extensions = parts.extensions;
    if let Some(upgrade) = extensions.remove::<hyper::upgrade::OnUpgrade>() {
        slim.extensions_mut().insert(upgrade);
    }
    if let Some(wire) = extensions.remove::<super::serve::WireBytes>() {
        slim.extensions_mut().insert(wire);
    }
    slim
}

/// Refuses a request without `Authorization: Bearer <admin token>` before anything reads its
/// body.
async fn require_admin(State(token): State<AdminToken>, req: Request, next: Next) -> Response {
    if token.matches(req.headers()) {
        next.run(req).await
    } else {
        http_api::unauthorized().into_response()
    }
}

fn configure(io: &IoConfig, limits: &IoLimits) -> SocketIoBuilder {
    let builder = SocketIo::builder()
        .ws_max_message_size(limits.ws_max_message_bytes)
        .ws_max_frame_size(limits.ws_max_frame_bytes)
        .req_path(io.path.clone())
        .ping_interval(io.ping_interval)
        .ping_timeout(io.ping_timeout)
        .connect_timeout(io.connect_timeout)
        .max_payload(io.max_payload_bytes)
        .max_buffer_size(io.max_buffered_events)
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES);
    let polling = io.transports.contains(&Transport::Polling);
    let websocket = io.transports.contains(&Transport::Websocket);
    match (polling, websocket) {
        (true, false) => builder.transports([TransportType::Polling]),
        (false, true) => builder.transports([TransportType::Websocket]),
        _ => builder.transports([TransportType::Polling, TransportType::Websocket]),
    }
}

/// The default namespace: the handshake as a connect middleware, then the connect handler.
fn register(io: &SocketIo, shared: &Arc<Shared>, connect_timeout: std::time::Duration) {
    let for_middleware = shared.clone();
    let middleware = move |s: SocketRef, TryData(auth): TryData<serde_json::Value>| async move {
        // After a start, every handshake waits until the replay buffer is rebuilt from the
        // slot: a client resuming from an offset then finds what it missed, and one without an
        // offset does not receive the rebuilt window's events again (its stream starts after
        // them).
        if !for_middleware.hub.wait_ready(connect_timeout).await {
            return Err(crate::access::AuthError::NotReady);
        }
        handshake::authenticate(&for_middleware, &s, auth.as_ref().ok())
    };
    let for_handler = shared.clone();
    let on_connect = move |s: SocketRef| async move { handshake::connected(&for_handler, s) };
    io.ns("/", on_connect.with(middleware));
}

fn cors_layer(cors: &CorsConfig) -> CorsLayer {
    let methods: Vec<Method> = cors
        .methods
        .iter()
        .filter_map(|m| match Method::from_bytes(m.as_bytes()) {
            Ok(m) => Some(m),
            Err(_) => {
                warn!(method = %m, "io.cors.methods: not an HTTP method; ignored");
                None
            }
        })
        .collect();
    let origin = match &cors.origins {
        // The configuration refuses `*` with credentials (browsers do too, and tower-http
        // panics on it); built by hand anyway, no origin is allowed.
        None if cors.credentials => {
            error!("io.cors: origin \"*\" with credentials = true; no origin is allowed");
            AllowOrigin::list([])
        }
        None => AllowOrigin::any(),
        Some(list) => AllowOrigin::list(list.iter().filter_map(|o| {
            HeaderValue::from_str(o)
                .inspect_err(|_| warn!(origin = %o, "io.cors.origin: not a valid origin; ignored"))
                .ok()
        })),
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods(methods)
        .allow_headers(AllowHeaders::mirror_request())
        .allow_credentials(cors.credentials)
}

/// `GET /healthz`: the process runs.
async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 when streaming with catalog and access loaded, else 503 saying what is
/// missing (and why, while PostgreSQL cannot be reached). A replication discontinuity since
/// start is reported in either answer.
async fn readyz(State(emitter): State<Emitter>) -> Response {
    let health = &emitter.shared.health;
    let discontinuity = health.last_discontinuity();
    if health.is_ready() {
        let mut body = json!({ "ready": true });
        if let Some(d) = discontinuity {
            body["discontinuity"] = json!(d);
        }
        return (StatusCode::OK, Json(body)).into_response();
    }
    let mut waiting = Vec::new();
    if !health.is_streaming() {
        waiting.push("replication stream");
    }
    if !health.is_catalog_loaded() {
        waiting.push("content-type catalog");
    }
    if !health.is_access_loaded() {
        waiting.push("roles and permissions");
    }
    let mut body = json!({ "ready": false, "waiting_for": waiting });
    if let Some(why) = health.waiting() {
        body["reason"] = json!(why);
    }
    if let Some(d) = discontinuity {
        body["discontinuity"] = json!(d);
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text, gauges computed now.
async fn metrics_text(State(emitter): State<Emitter>) -> Response {
    let mut connected = 0;
    let mut rooms: BTreeMap<String, usize> = BTreeMap::new();
    if let Some(op) = emitter.io.of("/") {
        for socket in op.sockets() {
            connected += 1;
            if let Some(session) = socket.extensions.get::<Session>() {
                for room in &session.principal.rooms {
                    *rooms.entry(room.clone()).or_default() += 1;
                }
            }
        }
    }
    let report = {
        let replay = emitter.shared.hub.lock();
        crate::metrics::ReplayReport {
            events: replay.buffer.len() as u64,
            bytes: replay.buffer.bytes() as u64,
            replayed: replay.stats.replayed,
            resyncs: replay.stats.resyncs,
            fell_behind: replay.stats.fell_behind,
            behind: replay.behind.len() as u64,
        }
    };
    emitter
        .shared
        .metrics
        .set_replay(&emitter.shared.health, report);
    emitter
        .shared
        .metrics
        .set_connection_writes(super::serve::connection_writes());
    match emitter
        .shared
        .metrics
        .render(&emitter.shared.health, connected, rooms)
    {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            error!(error = %e, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
