//! `POST /io/emit` and `POST /io/raw`: the plugin's `strapi.$io.emit` and `raw` over HTTP,
//! for code outside Strapi. Bodies are the custom message JSON ([`CustomMessage`]); both routes
//! need `Authorization: Bearer <admin token>` and exist only when that token is configured.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

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
    let (uid, action, data) = match parse(&state, &headers, &body)? {
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
    state.emitter.deliver(&delivery).await;
    Ok(accepted(targeted))
}

/// `POST /io/raw`: `{"raw":"<event>","data":...,"room":...}` as given, to the rooms or socket
/// ids, or to everyone.
pub(super) async fn raw(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let raw = match parse(&state, &headers, &body)? {
        CustomMessage::Raw { event, data, rooms } => RawEmit { event, data, rooms },
        CustomMessage::Emit { .. } => {
            return Err(bad(
                "this route takes a \"raw\" message; send \"emit\" messages to /io/emit",
            ));
        }
    };
    let targeted = state.emitter.count_targets(raw.rooms.as_deref());
    state.emitter.raw(&raw).await;
    Ok(accepted(targeted))
}
