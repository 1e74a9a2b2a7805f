//! The reverse proxy (`[proxy] upstream`) in front of a small local stand-in for Strapi's REST
//! API: responses equal to direct ones, bodies streamed both ways, WebSocket upgrades, the
//! `X-Forwarded-*` headers, and the `find`/`findOne` events of successful reads, to the roles
//! holding that permission only. Real Strapi is in `tests/e2e` (strapi-e2e.test.mjs).

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sha2::Digest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::bridge::{ALICE, Bridge, EDDIE, StrapiDb, jwt};
use crate::support::client::{SioClient, marker};

/// What the stand-in answers to `GET /api/messages`: a populated relation and component, and
/// a private attribute a custom controller let through.
fn message_list() -> Value {
    json!({
        "data": [{
            "id": 1,
            "attributes": {
                "text": "Hello",
                "likes": 3,
                "secret": "not for sockets",
                "chat": {"data": {"id": 1, "attributes": {"name": "general"}}},
                "seo": {"id": 1, "metaTitle": "SEO"},
                "image": {"data": null},
                "createdAt": "2024-01-01T10:00:00.000Z",
                "publishedAt": "2024-01-01T10:00:00.000Z"
            }
        }],
        "meta": {"pagination": {"page": 1, "pageSize": 25, "pageCount": 1, "total": 1}}
    })
}

fn message_one() -> Value {
    json!({
        "data": {"id": 1, "attributes": {"text": "Hello", "chat": {"data": null}}},
        "meta": {}
    })
}

fn homepage() -> Value {
    json!({"data": {"id": 1, "attributes": {"title": "Welcome"}}, "meta": {}})
}

fn chats() -> Value {
    json!({
        "data": [{"id": 1, "attributes": {"name": "general"}}],
        "meta": {"pagination": {"page": 1, "pageSize": 25, "pageCount": 1, "total": 1}}
    })
}

/// A JSON answer the way Strapi (koa) sends one, with headers a proxy must keep.
fn strapi_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (
                header::HeaderName::from_static("x-powered-by"),
                "Strapi <strapi.io>",
            ),
            (header::SET_COOKIE, "koa.sess=abc; path=/; httponly"),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn one(Path(id): Path<String>) -> Response {
    match id.as_str() {
        "404" => strapi_json(
            StatusCode::NOT_FOUND,
            &json!({"data": null, "error": {"status": 404, "name": "NotFoundError", "message": "Not Found", "details": {}}}),
        ),
        "99" => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html>not json</html>",
        )
            .into_response(),
        _ => strapi_json(StatusCode::OK, &message_one()),
    }
}

/// Hashes the body as it streams in: `{"len", "sha256"}`.
async fn upload(body: Body) -> Response {
    let mut stream = body.into_data_stream();
    let mut hash = sha2::Sha256::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        len += chunk.len();
        hash.update(&chunk);
    }
    strapi_json(
        StatusCode::OK,
        &json!({"len": len, "sha256": hex::encode(hash.finalize())}),
    )
}

const LARGE_CHUNKS: usize = 48;
const CHUNK: usize = 64 * 1024;

fn large_bytes() -> Vec<u8> {
    (0..LARGE_CHUNKS * CHUNK).map(|i| (i % 251) as u8).collect()
}

/// A 3 MB body in chunks, without a length (chunked transfer).
async fn large() -> Response {
    let data = large_bytes();
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = data
        .chunks(CHUNK)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response()
}

async fn echo_headers(headers: HeaderMap) -> Response {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    strapi_json(
        StatusCode::OK,
        &json!({
            "host": get("host"),
            "x-forwarded-for": get("x-forwarded-for"),
            "x-forwarded-host": get("x-forwarded-host"),
            "x-forwarded-proto": get("x-forwarded-proto"),
            "authorization": get("authorization"),
            "x-hop": get("x-hop"),
        }),
    )
}

/// How many bytes of `Cookie` arrived.
async fn cookie_length(headers: HeaderMap) -> Response {
    let len = headers.get(header::COOKIE).map_or(0, |v| v.len());
    strapi_json(StatusCode::OK, &json!({ "cookie": len }))
}

/// A WebSocket echo server on `/ws`.
async fn ws_echo(mut req: Request) -> Response {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = on_upgrade.await.unwrap();
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            "sec-websocket-accept",
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key),
        )
        .body(Body::empty())
        .unwrap()
}

/// The stand-in for Strapi, on a random port.
async fn upstream() -> SocketAddr {
    let app = Router::new()
        .route(
            "/api/messages",
            get(|| async { strapi_json(StatusCode::OK, &message_list()) }),
        )
        .route("/api/messages/{id}", get(one))
        .route(
            "/api/homepage",
            get(|| async { strapi_json(StatusCode::OK, &homepage()) }),
        )
        .route(
            "/api/chats",
            get(|| async { strapi_json(StatusCode::OK, &chats()) }),
        )
        .route("/api/upload", post(upload))
        .route("/large", get(large))
        .route("/headers", get(echo_headers))
        .route("/cookie", get(cookie_length))
        .route("/ws", get(ws_echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn the_bridges_own_paths_are_never_forwarded() {
    let db = StrapiDb::new("").await;
    let strapi = upstream().await;
    let cfg = format!("{}[metrics]\naccess = \"off\"\n", config(strapi));
    let bridge = Bridge::start(db.config(&cfg)).await;
    assert_eq!(fetch(client().get(bridge.url("/metrics"))).await.0, 404);
    assert_eq!(
        fetch(client().get(bridge.url("/api/messages"))).await.0,
        200
    );
    bridge.stop().await.unwrap();
}

fn config(upstream: SocketAddr) -> String {
    format!("content_types = \"*\"\n[proxy]\nupstream = \"http://{upstream}\"\n")
}

fn client() -> reqwest::Client {
    crate::support::bridge::http_client().unwrap()
}

/// `(status, headers that matter, body)`.
async fn fetch(req: reqwest::RequestBuilder) -> (u16, Vec<(String, String)>, bytes::Bytes) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = [
        "content-type",
        "content-length",
        "x-powered-by",
        "set-cookie",
    ]
    .iter()
    .filter_map(|h| {
        res.headers()
            .get(*h)
            .map(|v| (h.to_string(), v.to_str().unwrap().to_owned()))
    })
    .collect();
    (status, headers, res.bytes().await.unwrap())
}

#[tokio::test]
async fn proxied_responses_equal_direct_ones_and_stream_both_ways() {
    let db = StrapiDb::new("").await;
    let strapi = upstream().await;
    let bridge = Bridge::start(db.config(&config(strapi))).await;
    let http = client();

    for path in [
        "/api/messages",
        "/api/messages/1",
        "/api/messages/404",
        "/api/messages/99",
        "/api/homepage?populate=*",
        "/nowhere",
        "/large",
    ] {
        let direct = fetch(http.get(format!("http://{strapi}{path}"))).await;
        let proxied = fetch(http.get(bridge.url(path))).await;
        assert_eq!(proxied, direct, "GET {path}");
    }
    assert_eq!(
        fetch(http.get(bridge.url("/large"))).await.2,
        large_bytes(),
        "the chunked body arrives whole"
    );

    // An upload larger than any buffer, streamed through.
    let upload: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    let (status, _, body) = fetch(
        http.post(bridge.url("/api/upload"))
            .header("expect", "100-continue")
            .body(upload.clone()),
    )
    .await;
    assert_eq!(status, 200);
    let got: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(got["len"], upload.len());
    assert_eq!(got["sha256"], hex::encode(sha2::Sha256::digest(&upload)));

    // Forwarded headers: the client's own kept, hop-by-hop ones dropped, X-Forwarded-* set.
    let (_, _, body) = fetch(
        http.get(bridge.url("/headers"))
            .header("authorization", "Bearer t")
            .header("connection", "x-hop")
            .header("x-hop", "1"),
    )
    .await;
    let got: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(got["host"], strapi.to_string());
    assert_eq!(got["authorization"], "Bearer t");
    assert_eq!(got["x-hop"], Value::Null);
    assert_eq!(got["x-forwarded-for"], "127.0.0.1");
    assert_eq!(got["x-forwarded-host"], bridge.addr.to_string());
    assert_eq!(got["x-forwarded-proto"], "http");

    // The bridge's own routes are not forwarded.
    let (status, _, body) = fetch(http.get(bridge.url("/healthz"))).await;
    assert_eq!((status, &body[..]), (200, &b"ok\n"[..]));
    assert_eq!(fetch(http.post(bridge.url("/io/emit"))).await.0, 404);
    assert_eq!(fetch(http.get(bridge.url("/io/anything"))).await.0, 404);

    // A WebSocket on another path is tunnelled to Strapi.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", bridge.addr))
        .await
        .unwrap();
    ws.send(Message::text("hello through the proxy"))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(crate::support::client::WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("hello through the proxy"));

    // Socket.IO still answers on its path, next to the proxy.
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    marker(&db, 1).await;
    public.marker(1).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn successful_reads_through_the_proxy_emit_find_events_to_roles_holding_the_action() {
    let db = StrapiDb::new("").await;
    let strapi = upstream().await;
    let bridge = Bridge::start(db.config(&config(strapi))).await;
    let http = client();
    // Public: find/findOne on message, find on homepage. Authenticated: the same and chat
    // find. Editor: chat find only.
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    let mut alice = SioClient::connected(bridge.addr, json!({ "token": jwt(ALICE, false) })).await;
    let mut eddie = SioClient::connected(bridge.addr, json!({ "token": jwt(EDDIE, false) })).await;
    let get = |path: &str| {
        let req = http.get(bridge.url(path));
        async move {
            let res = req.send().await.unwrap();
            res.bytes().await.unwrap();
        }
    };

    // Straight to Strapi: the bridge sees nothing. Errors and non-JSON bodies emit nothing.
    http.get(format!("http://{strapi}/api/messages"))
        .send()
        .await
        .unwrap();
    get("/api/messages/404").await;
    get("/api/messages/99").await;
    get("/api/messages").await;
    let list = json!({
        "data": [{
            "id": 1,
            "attributes": {
                "text": "Hello",
                "likes": 3,
                "createdAt": "2024-01-01T10:00:00.000Z",
                "publishedAt": "2024-01-01T10:00:00.000Z"
            }
        }],
        "meta": {"pagination": {"page": 1, "pageSize": 25, "pageCount": 1, "total": 1}}
    });
    // Read events leave in request order, so the first event each client sees is the list.
    public.expect("message:find", list.clone()).await;
    alice.expect("message:find", list).await;

    get("/api/messages/1").await;
    let one = json!({"data": {"id": 1, "attributes": {"text": "Hello"}}, "meta": {}});
    public.expect("message:findOne", one.clone()).await;
    alice.expect("message:findOne", one).await;

    get("/api/chats").await;
    get("/api/homepage").await;
    // Public may not find chats: its next event is the homepage.
    public.expect("homepage:find", homepage()).await;
    alice.expect("chat:find", chats()).await;
    alice.expect("homepage:find", homepage()).await;
    // Editor holds only chat find: no message or homepage events.
    eddie.expect("chat:find", chats()).await;

    marker(&db, 1).await;
    public.marker(1).await;
    alice.marker(1).await;
    eddie.marker(1).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn reads_emit_only_for_content_types_configured_with_find_or_find_one() {
    let db = StrapiDb::new("").await;
    let strapi = upstream().await;
    let cfg = format!(
        "[content_types]\nmessage = [\"findOne\", \"create\"]\nhomepage = \"*\"\n\
         [proxy]\nupstream = \"http://{strapi}\"\n"
    );
    let bridge = Bridge::start(db.config(&cfg)).await;
    let http = client();
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    for path in ["/api/messages", "/api/messages/1", "/api/homepage"] {
        http.get(bridge.url(path)).send().await.unwrap();
    }
    public.event("message:findOne").await;
    public.event("homepage:find").await;
    marker(&db, 1).await;
    public.marker(1).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_strapi_is_a_bad_gateway() {
    let db = StrapiDb::new("").await;
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let bridge = Bridge::start(db.config(&config(closed))).await;
    let (status, _, _) = fetch(client().get(bridge.url("/api/messages"))).await;
    assert_eq!(status, 502);
    bridge.stop().await.unwrap();
}

/// A cookie of `len` bytes, as a browser on a Strapi site sends several (the admin's JWT and
/// session among them).
fn big_cookie(len: usize) -> String {
    let mut cookie = String::from("jwtToken=");
    while cookie.len() < len {
        cookie.push_str("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9");
    }
    cookie.truncate(len);
    cookie
}

/// Request heads up to Node's default limit (16 KiB) pass: to Strapi through the proxy, and to
/// Socket.IO on the same origin; a larger head is refused with 431, as Strapi would.
#[tokio::test]
async fn requests_with_large_headers_pass_through_the_proxy() {
    let db = StrapiDb::new("").await;
    let strapi = upstream().await;
    let bridge = Bridge::start(db.config(&config(strapi))).await;
    let http = client();
    let cookie = big_cookie(12 * 1024);

    let (status, _, body) = fetch(
        http.get(bridge.url("/cookie"))
            .header(header::COOKIE, &cookie)
            .header("x-other", "x".repeat(1024)),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let got: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(got["cookie"], cookie.len());

    // The same browser's Socket.IO handshake carries the same cookies.
    let res = http
        .get(bridge.url("/socket.io/?EIO=4&transport=polling"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.text().await.unwrap().contains("\"sid\""));

    // More than 16 KiB of headers: refused, not forwarded.
    let res = http
        .get(bridge.url("/cookie"))
        .header(header::COOKIE, big_cookie(20 * 1024))
        .send()
        .await;
    match res {
        Ok(res) => assert_eq!(res.status().as_u16(), 431),
        // hyper answers 431 and closes; the client may see the close first.
        Err(e) => assert!(e.is_request() || e.is_connect(), "{e}"),
    }
    bridge.stop().await.unwrap();
}
