//! Forwarding one request to Strapi with hyper's pooled client: headers rewritten for a proxy,
//! bodies streamed both ways, WebSocket (and any other HTTP/1.1) upgrades tunnelled.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tracing::{debug, warn};

use super::reads::Capture;

/// How long connecting to Strapi may take before the client gets 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle keep-alive connections to Strapi are closed after this.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1); never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The upstream and a connection pool to it.
pub(super) struct Forwarder {
    client: Client<HttpConnector, Body>,
    /// `host:port`, also the `Host` header Strapi sees.
    authority: String,
    /// A path the upstream URL had (`/strapi`), prepended to every forwarded path; usually
    /// empty.
    base_path: String,
}

impl Forwarder {
    /// A forwarder to `upstream`, an `http://host:port[/path]` URL checked by the
    /// configuration.
    pub(super) fn new(upstream: &str) -> Forwarder {
        let rest = upstream.strip_prefix("http://").unwrap_or(upstream);
        let (authority, base_path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Forwarder {
            client,
            authority: authority.to_owned(),
            base_path: base_path.to_owned(),
        }
    }

    /// `http://host:port/path`, for logs.
    pub(super) fn upstream(&self) -> String {
        format!("http://{}{}", self.authority, self.base_path)
    }

    /// Sends `req` to Strapi and returns Strapi's response; 502 when Strapi cannot be reached.
    /// With `capture`, a successful JSON response is also copied for a read event.
    pub(super) async fn forward(&self, mut req: Request, capture: Option<Capture>) -> Response {
        let upgrade = wants_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let upstream_uri = format!(
            "http://{}{}{path_and_query}",
            self.authority, self.base_path
        );
        let Ok(uri) = upstream_uri.parse::<Uri>() else {
            return (StatusCode::BAD_REQUEST, "bad request path\n").into_response();
        };
        let (mut parts, body) = req.into_parts();
        let upgrade_to = upgrade
            .as_ref()
            .and_then(|_| parts.headers.get(header::UPGRADE).cloned());
        strip_hop_by_hop(&mut parts.headers);
        // This server already answers `Expect: 100-continue` (by reading the body); the
        // upstream gets the body without waiting.
        parts.headers.remove(header::EXPECT);
        if let Some(protocol) = upgrade_to {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol);
        }
        forwarded_headers(&mut parts.headers, peer);
        if let Ok(host) = HeaderValue::from_str(&self.authority) {
            parts.headers.insert(header::HOST, host);
        }
        parts.uri = uri;
        // Extensions hold this server's per-connection state (the upgrade handle, the peer);
        // none of it is for the upstream connection.
        parts.extensions = Default::default();
        let method = parts.method.clone();
        let mut res = match self.client.request(Request::from_parts(parts, body)).await {
            Ok(res) => res,
            Err(e) => {
                warn!(
                    upstream = %self.upstream(),
                    %method,
                    path = %path_and_query,
                    error = %error_chain(&e),
                    "proxy: Strapi did not answer"
                );
                return (StatusCode::BAD_GATEWAY, "Strapi did not answer\n").into_response();
            }
        };
        if res.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_side) = upgrade else {
                warn!("proxy: Strapi switched protocols without being asked to");
                return (StatusCode::BAD_GATEWAY, "unexpected protocol switch\n").into_response();
            };
            let upstream_side = hyper::upgrade::on(&mut res);
            tokio::spawn(tunnel(client_side, upstream_side));
            let (parts, _) = res.into_parts();
            return Response::from_parts(parts, Body::empty());
        }
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = match capture {
            Some(capture) if parts.status.is_success() && is_plain_json(&parts.headers) => {
                Body::new(capture.wrap(body))
            }
            _ => Body::new(body),
        };
        Response::from_parts(parts, body)
    }
}

/// Copies bytes both ways between the client's and Strapi's upgraded connections until
/// either side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                debug!(error = %e, "proxy: upgraded connection ended with an error");
            }
        }
        Err(e) => debug!(error = %e, "proxy: upgrade failed"),
    }
}

/// The request asks to switch protocols (`Connection: upgrade` with an `Upgrade` header).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Drops hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// `X-Forwarded-For` gets the client's address appended; `X-Forwarded-Host` and
/// `X-Forwarded-Proto` are set from this hop unless a proxy in front already set them.
fn forwarded_headers(headers: &mut HeaderMap, peer: Option<std::net::IpAddr>) {
    if let Some(ip) = peer {
        let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(before) if !before.trim().is_empty() => format!("{before}, {ip}"),
            _ => ip.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = headers.get(header::HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
}

/// `Content-Type: application/json` (any parameters) and no `Content-Encoding` other than
/// `identity`: a body the read event can parse as it is.
fn is_plain_json(headers: &HeaderMap) -> bool {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    let plain = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim().eq_ignore_ascii_case("identity"));
    json && plain
}

/// An error and its sources, `a: b: c` (hyper's own text hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-private-hop"),
            ("keep-alive", "timeout=5"),
            ("x-private-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["authorization", "content-type"]);
    }

    #[test]
    fn forwarded_headers_append_the_peer_and_keep_what_a_front_proxy_set() {
        let peer = Some("10.0.0.7".parse().unwrap());
        let mut h = headers(&[("host", "example.com")]);
        forwarded_headers(&mut h, peer);
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["x-forwarded-proto"], "http");

        let mut h = headers(&[
            ("host", "bridge:1338"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-host", "example.com"),
            ("x-forwarded-proto", "https"),
        ]);
        forwarded_headers(&mut h, peer);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.7");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn upgrades_and_json_bodies_are_recognised() {
        assert!(wants_upgrade(&headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!wants_upgrade(&headers(&[("upgrade", "websocket")])));
        assert!(is_plain_json(&headers(&[(
            "content-type",
            "application/json; charset=utf-8"
        )])));
        assert!(!is_plain_json(&headers(&[
            ("content-type", "application/json"),
            ("content-encoding", "gzip")
        ])));
        assert!(!is_plain_json(&headers(&[("content-type", "text/html")])));
    }
}
