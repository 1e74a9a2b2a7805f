//! The reverse proxy in front of Strapi (`[proxy] upstream`), and the `find`/`findOne` events
//! of REST reads through it.
//!
//! Receives every HTTP request the bridge does not answer itself (anything but Socket.IO,
//! `/healthz`, `/readyz`, `/metrics` and `/io/*`) and forwards it to Strapi as it came:
//! method, path, query, headers and body, streamed both ways, WebSocket upgrades included,
//! with `X-Forwarded-For`, `-Host` and `-Proto` set and hop-by-hop headers dropped. The client
//! gets Strapi's response byte for byte.
//!
//! A successful JSON answer to `GET <api_prefix>/<pluralName>` (`find`), `GET
//! <api_prefix>/<pluralName>/<id>` (`findOne`) or a single type's `GET
//! <api_prefix>/<singularName>` (`find`), of an `api::` content type whose `content_types` entry
//! includes that action, is copied while it streams to the client; once complete it is handed
//! to [`ReadEvents`], which strips populated relations, media and components and turns it into
//! a [`Delivery`] of `<singularName>:find` / `:findOne` to the rooms allowed that action by the
//! plugin's rule. The response never waits for that: a full queue drops the event, not the
//! response. GraphQL, plugin routes, errors and non-JSON answers emit nothing.
//!
//! It never decides who may read what (that is [`access`](crate::access)) and never talks to
//! sockets (the pipeline hands the deliveries to [`io`](crate::io)).

mod forward;
mod reads;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tower::ServiceExt as _;

use crate::access::AccessHandle;
use crate::config::{ContentTypesConfig, ProxyConfig};
use crate::strapi::CatalogHandle;

pub use reads::ReadEvents;

/// Completed read responses waiting to become events. A burst beyond this is dropped (and
/// logged): the HTTP responses themselves are never held back.
const READ_QUEUE: usize = 1024;

/// The reverse proxy. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    forward: Arc<forward::Forwarder>,
    routes: Arc<reads::Routes>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("upstream", &self.forward.upstream())
            .finish()
    }
}

impl Proxy {
    /// A proxy to `cfg.upstream`, and the stream of read events its GETs produce (hand them to
    /// the Socket.IO stage). `content_types` says which types' reads emit; a response larger
    /// than `max_event_bytes` emits nothing; the catalog and access handles are read live.
    pub fn new(
        cfg: &ProxyConfig,
        content_types: ContentTypesConfig,
        max_event_bytes: usize,
        catalog: CatalogHandle,
        access: AccessHandle,
    ) -> (Proxy, ReadEvents) {
        let (tx, rx) = mpsc::channel(READ_QUEUE);
        let proxy = Proxy {
            forward: Arc::new(forward::Forwarder::new(&cfg.upstream)),
            routes: Arc::new(reads::Routes::new(
                cfg.api_prefix.clone(),
                content_types,
                catalog,
                tx,
                max_event_bytes,
            )),
        };
        (proxy, ReadEvents::new(rx, access))
    }

    /// Forwards one request to Strapi and returns its response.
    pub async fn handle(&self, req: Request) -> Response {
        let read = self.routes.classify(req.method(), req.uri().path());
        self.forward.forward(req, read).await
    }
}

/// The bridge's own routes: never forwarded, even when turned off (`[metrics] access = "off"`).
const BRIDGE_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The router's fallback with the proxy on: Socket.IO's path goes to `socket_io`, `/io/*` and
/// the bridge's own paths answer 404 (their routes, when on, are matched before the fallback),
/// and everything else goes to Strapi.
pub fn mount(proxy: Proxy, socket_io: Router, io_path: &str) -> Router {
    let io_path: Arc<str> = Arc::from(io_path.trim_end_matches('/'));
    Router::new().fallback(move |req: Request| {
        let proxy = proxy.clone();
        let socket_io = socket_io.clone();
        let io_path = io_path.clone();
        async move {
            let path = req.uri().path();
            if is_under(path, &io_path) {
                return match socket_io.oneshot(req).await {
                    Ok(res) => res,
                    Err(never) => match never {},
                };
            }
            if is_under(path, "/io") || BRIDGE_PATHS.contains(&path) {
                return StatusCode::NOT_FOUND.into_response();
            }
            proxy.handle(req).await
        }
    })
}

/// `path` is `prefix` or below it (`/socket.io`, `/socket.io/`, `/socket.io/x`, not
/// `/socket.iox`).
fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}
