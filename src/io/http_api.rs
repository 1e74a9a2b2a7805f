//! `POST /io/emit` and `POST /io/raw`: the plugin's `strapi.$io.emit` and `raw` over HTTP,
//! for code outside Strapi. Bodies are the custom message JSON ([`CustomMessage`]); both routes
//! need `Authorization: Bearer <admin token>` and exist only when that token is configured.
//!
//! A checked message is written to the WAL with `pg_logical_emit_message` on the bridge's own
//! SQL connection, exactly as a database trigger would: it comes back through the stream, so
//! it gets an offset, keeps its place among data events, and is replayable like them (and
//! every instance reading the database emits it). The answer (202) says how many sockets it
//! targets now.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tracing::warn;

use super::Emitter;
use crate::access::{Delivery, Subject};
use crate::config::Secret;
use crate::strapi::custom::CustomMessage;
use crate::strapi::{Action, RawEmit};

/// The admin token, kept as a digest so that comparing takes the same time whatever the
/// guess.
#[derive(Clone)]
pub(super) struct AdminToken([u8; 32]);

impl AdminToken {
    pub(super) fn new(secret: &Secret) -> Self {
        AdminToken(Sha256::digest(secret.expose().as_bytes()).into())
    }

    pub(super) fn matches(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        let diff = self
            .0
            .iter()
            .zip(given.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// State of the two routes.
#[derive(Clone)]
pub(super) struct ApiState {
    pub emitter: Emitter,
    pub token: AdminToken,
    /// Where messages go; `None`: emitted directly.
    pub wal: Option<WalWriter>,
}

/// Writes messages to the WAL on one SQL connection, opened on first use and again after it
/// drops.
#[derive(Clone)]
pub(super) struct WalWriter {
    cfg: Arc<super::WalEmit>,
    client: Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
}

impl WalWriter {
    pub(super) fn new(cfg: super::WalEmit) -> WalWriter {
        WalWriter {
            cfg: Arc::new(cfg),
            client: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// Whether `message` goes through the WAL: a data action (`message:create`…) does only when
    /// `[messages] allow_data_actions` lets messages from the WAL send one; otherwise the
    /// operator's message is emitted directly (no offset from the WAL, not replayable after a
    /// restart).
    fn takes(&self, message: &CustomMessage) -> bool {
        self.cfg.allow_data_actions || message.data_action_name().is_none()
    }

    /// `pg_logical_emit_message(true, prefix, body)`: committed at once, streamed like any
    /// other message. One retry on a fresh connection when the old one dropped.
    async fn write(&self, body: &str) -> Result<(), WalError> {
        let mut guard = self.client.lock().await;
        for attempt in 0..2 {
            let client = match guard.as_ref() {
                Some(c) if !c.is_closed() => c,
                _ => {
                    let c = crate::pg::connect(&self.cfg.database).await.map_err(|e| {
                        warn!(error = %e, "HTTP emit: cannot connect to PostgreSQL");
                        WalError::Unavailable
                    })?;
                    guard.insert(c)
                }
            };
            match client
                .execute(
                    "SELECT pg_logical_emit_message(true, $1, $2)",
                    &[&self.cfg.prefix, &body],
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.is_closed() && attempt == 0 => {
                    *guard = None;
                }
                Err(e)
                    if e.code()
                        == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
                {
                    warn!(
                        "HTTP emit: the bridge's role may not call pg_logical_emit_message; \
                         emitting directly (not replayable after a restart). GRANT EXECUTE ON \
                         FUNCTION pg_logical_emit_message(boolean, text, text) to it to fix"
                    );
                    return Err(WalError::Denied);
                }
                Err(e) => {
                    warn!(error = %e, "HTTP emit: pg_logical_emit_message failed");
                    return Err(WalError::Unavailable);
                }
            }
        }
        Err(WalError::Unavailable)
    }
}

/// Why a message could not be written to the WAL.
enum WalError {
    /// PostgreSQL is unreachable or failed.
    Unavailable,
    /// The bridge's role may not call `pg_logical_emit_message`.
    Denied,
}

fn unavailable() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database is unavailable; the message was not sent".to_owned(),
    )
}

/// An API failure: status and the `{"error": ...}` text.
pub(super) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// 401 with `WWW-Authenticate: Bearer`.
pub(super) fn unauthorized() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token".to_owned(),
    )
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// Writes the body to the WAL when `wal` is given; `false` when it is to be emitted directly
/// instead (no WAL writer, or the bridge's role may not call `pg_logical_emit_message`).
async fn written(wal: Option<&WalWriter>, body: &[u8]) -> Result<bool, ApiError> {
    let Some(wal) = wal else {
        return Ok(false);
    };
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
    match wal.write(text).await {
        Ok(()) => Ok(true),
        Err(WalError::Denied) => Ok(false),
        Err(WalError::Unavailable) => Err(unavailable()),
    }
}

fn accepted(targeted: usize) -> Response {
    (StatusCode::ACCEPTED, Json(json!({ "targeted": targeted }))).into_response()
}

fn parse(state: &ApiState, headers: &HeaderMap, body: &[u8]) -> Result<CustomMessage, ApiError> {
    if !state.token.matches(headers) {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".to_owned(),
        ));
    }
    CustomMessage::parse(body).map_err(|e| bad(e.to_string()))
}

/// `POST /io/emit`: `{"emit":"<uid>.<action>","data":...}` to the roles allowed to read it, as
/// `<singularName>:<action>`.
pub(super) async fn emit(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let message = parse(&state, &headers, &body)?;
    let through_wal = state.wal.as_ref().filter(|w| w.takes(&message));
    let (uid, action, data) = match message {
        CustomMessage::Emit { uid, action, data } => (uid, action, data),
        CustomMessage::Raw { .. } => {
            return Err(bad(
                "this route takes an \"emit\" message; send \"raw\" messages to /io/raw",
            ));
        }
    };
    let shared = &state.emitter.shared;
    let catalog = shared.catalog.current();
    let Some(content_type) = catalog.by_uid(&uid) else {
        return Err(bad(format!("unknown content type {uid:?}")));
    };
    if !shared.access.is_loaded() {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "roles and permissions are not loaded yet".to_owned(),
        ));
    }
    let action = Action::from_name(&action);
    let rooms = shared.access.rooms_for(&uid, &action);
    let delivery = Delivery {
        event: format!("{}:{}", content_type.singular_name, action.as_str()),
        rooms,
        payload: data,
        subject: Some(Subject {
            content_type: content_type.clone(),
            entry_id: None,
        }),
    };
    let targeted = state.emitter.count_targets(Some(&delivery.rooms));
    if !written(through_wal, &body).await? {
        state.emitter.deliver(&delivery);
    }
    Ok(accepted(targeted))
}

/// `POST /io/raw`: `{"raw":"<event>","data":...,"room":...}` as given, to the rooms or socket
/// ids, or to everyone.
pub(super) async fn raw(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let message = parse(&state, &headers, &body)?;
    let through_wal = state.wal.as_ref().filter(|w| w.takes(&message));
    let raw = match message {
        CustomMessage::Raw { event, data, rooms } => RawEmit { event, data, rooms },
        CustomMessage::Emit { .. } => {
            return Err(bad(
                "this route takes a \"raw\" message; send \"emit\" messages to /io/emit",
            ));
        }
    };
    let targeted = state.emitter.count_targets(raw.rooms.as_deref());
    if !written(through_wal, &body).await? {
        state.emitter.raw(&raw);
    }
    Ok(accepted(targeted))
}
