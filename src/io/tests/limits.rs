//! Limits on what clients and anyone reaching the port can make the bridge do: WebSocket
//! message sizes, the emit API's token check before its body, `/metrics` access, signed and
//! bounded webhooks, and each socket's allowance of client events.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use futures::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use super::*;
use crate::config::{IoLimits, MetricsAccess};
use crate::io::events::{SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};

const WEBHOOK_SECRET: &str = "test-webhook-secret-0123456789";

fn with_limits(f: impl FnOnce(&mut IoLimits)) -> IoOptions {
    let mut opts = options();
    f(&mut opts.limits);
    opts
}

// ---------------------------------------------------------------------------------------------
// WebSocket sizes
// ---------------------------------------------------------------------------------------------

/// The next text frame that is not an engine.io ping; `None` once the server closed.
async fn next_text<S>(ws: &mut S) -> Option<String>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("nothing from the server within {WAIT:?}"));
        match msg {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {}
            Some(Ok(Message::Text(t))) => return Some(t.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_websocket_message_over_the_limit_closes_the_connection() {
    let server = serve_snapshot(with_limits(|l| {
        l.ws_max_message_bytes = 1024;
        l.ws_max_frame_bytes = 1024;
    }))
    .await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("websocket: {e}"));
    let open = next_text(&mut ws).await.unwrap_or_default();
    assert!(open.starts_with('0'), "engine.io open packet: {open}");
    ws.send(Message::text("40"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let connect = next_text(&mut ws).await.unwrap_or_default();
    assert!(connect.starts_with("40"), "socket.io connect: {connect}");

    // Just under the limit: handled (no handler, so ignored), and the connection stays.
    let small = format!("42[\"nothing\",\"{}\"]", "x".repeat(1000));
    assert!(small.len() < 1024);
    ws.send(Message::text(small))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    server.marker(1).await;
    // The marker, with its offset as the last argument.
    let marker = next_text(&mut ws).await.unwrap_or_default();
    assert!(
        marker.starts_with("42[\"marker\",1,\"") && marker.ends_with("\"]"),
        "{marker}"
    );

    let big = format!("42[\"nothing\",\"{}\"]", "x".repeat(2000));
    ws.send(Message::text(big))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        next_text(&mut ws).await,
        None,
        "a 2 KB message with a 1 KB limit must close the connection"
    );
}

// ---------------------------------------------------------------------------------------------
// The emit API: token before body, bounded body
// ---------------------------------------------------------------------------------------------

/// Sends `head` (and `body`) over a raw TCP connection and returns the status line.
async fn raw_http(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tcp.write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tcp.write_all(body).await.unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no answer within {WAIT:?} to {head:?}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_emit_api_refuses_a_request_without_the_token_before_reading_its_body() {
    let mut opts = with_limits(|l| l.http_max_body_bytes = 1024);
    opts.admin_token = Some(Secret::new(ADMIN_TOKEN));
    let server = serve_snapshot(opts).await;
    server.health.set_access_loaded(true);

    // Announces a body and never sends it: the answer cannot wait for the body.
    for path in ["/io/emit", "/io/raw"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n\
             Content-Length: 900\r\n\r\n"
        );
        let status = raw_http(server.addr, &head, b"").await;
        assert!(status.starts_with("HTTP/1.1 401"), "{path}: {status}");
    }

    // With the token, a body over io.max_payload_bytes is refused, one under it accepted.
    let body = format!(r#"{{"raw":"hello","data":"{}"}}"#, "x".repeat(2000));
    let res = http()
        .post(server.url("/io/raw"))
        .bearer_auth(ADMIN_TOKEN)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let res = http()
        .post(server.url("/io/raw"))
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"raw":"hello","data":1}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

// ---------------------------------------------------------------------------------------------
// /metrics access
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_can_be_put_behind_the_admin_token_or_turned_off() {
    let get = |server: &TestServer, token: Option<&'static str>| {
        let mut req = http().get(server.url("/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap_or_else(|e| panic!("{e}")) }
    };

    let mut opts = with_limits(|l| l.metrics = MetricsAccess::Admin);
    opts.admin_token = Some(Secret::new(ADMIN_TOKEN));
    let admin = serve_snapshot(opts).await;
    assert_eq!(get(&admin, None).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&admin, Some("wrong")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let res = get(&admin, Some(ADMIN_TOKEN)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap_or_default();
    assert!(text.contains("strapi_io_sockets_connected 0"), "{text}");

    let off = serve_snapshot(with_limits(|l| l.metrics = MetricsAccess::Off)).await;
    assert_eq!(get(&off, None).await.status(), StatusCode::NOT_FOUND);
    // The probes stay.
    let res = http()
        .get(off.url("/healthz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::OK);

    let public = serve_snapshot(options()).await;
    assert_eq!(get(&public, None).await.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

#[test]
fn the_signature_is_the_hmac_sha256_of_timestamp_dot_body() {
    // printf '1700000000.<body>' | openssl dgst -sha256 -hmac "test-webhook-secret-0123456789"
    let body = br#"{"event":"order:place","args":[],"socket":{"id":"s1","role":"Authenticated","userId":42}}"#;
    assert_eq!(
        signature(WEBHOOK_SECRET, "1700000000", body),
        "sha256=d4ad44630531b2bc61edd3f055bc888bb303b3601b29fc98d84a73e9ac4ca9d1"
    );
}

/// `/signed` answers with the signature headers and the raw body it got; `/redirect` sends
/// to `/signed`; `/big` and `/big-chunked` answer 4 KB (with and without Content-Length);
/// `/slow` reports each call on the channel and never answers.
async fn limited_target() -> (SocketAddr, JoinHandle<()>, mpsc::UnboundedReceiver<()>) {
    use axum::routing::post;
    let (tx, rx) = mpsc::unbounded_channel();
    let big = format!("\"{}\"", "x".repeat(4096));
    let big_chunks = big.clone();
    let app = Router::new()
        .route(
            "/signed",
            post(|headers: HeaderMap, body: Bytes| async move {
                let h = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                axum::Json(json!({
                    "timestamp": h(TIMESTAMP_HEADER),
                    "signature": h(SIGNATURE_HEADER),
                    "body": String::from_utf8_lossy(&body),
                }))
            }),
        )
        .route(
            "/redirect",
            post(|| async {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, "/signed")],
                )
            }),
        )
        .route("/big", post(move || async move { big }))
        .route(
            "/big-chunked",
            post(move || async move {
                let chunks: Vec<Result<String, std::io::Error>> = big_chunks
                    .as_bytes()
                    .chunks(512)
                    .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
                    .collect();
                Body::from_stream(futures::stream::iter(chunks))
            }),
        )
        .route(
            "/slow",
            post(move || {
                let _ = tx.send(());
                std::future::pending::<&'static str>()
            }),
        );
    let (addr, task) = serve_router(app).await;
    (addr, task, rx)
}

fn hook(name: &str, url: String) -> EventConfig {
    EventConfig {
        name: name.to_owned(),
        handler: EventHandler::Webhook {
            url,
            timeout: Duration::from_secs(5),
        },
    }
}

fn ack_error(ack: &[Value]) -> String {
    match ack {
        [v] => v["error"].as_str().unwrap_or_default().to_owned(),
        _ => panic!("unexpected ack {ack:?}"),
    }
}

#[tokio::test]
async fn webhooks_are_signed_follow_no_redirect_and_read_a_bounded_answer() {
    let (target, _task, _slow) = limited_target().await;
    let mut opts = with_limits(|l| {
        l.webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
        l.webhook_max_response_bytes = 1024;
    });
    opts.events = vec![
        hook("signed", format!("http://{target}/signed")),
        hook("redirect", format!("http://{target}/redirect")),
        hook("big", format!("http://{target}/big")),
        hook("big-chunked", format!("http://{target}/big-chunked")),
    ];
    let server = serve_snapshot(opts).await;
    let alice = connected(server.addr, json!({ "token": jwt(ALICE) })).await;
    let sid = server.sid_of(&Identity::User { id: ALICE });

    let ack = alice.ask("signed", vec![json!({"n": 1})]).await;
    let [got] = ack.as_slice() else {
        panic!("unexpected ack {ack:?}")
    };
    let timestamp = got["timestamp"].as_str().unwrap_or_default();
    let body = got["body"].as_str().unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let sent: u64 = timestamp
        .parse()
        .unwrap_or_else(|e| panic!("timestamp {timestamp:?}: {e}"));
    assert!(now.abs_diff(sent) < 600, "timestamp {sent}, now {now}");
    // Recomputed here over the bytes the target received.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(got["signature"].as_str(), Some(want.as_str()));
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        body,
        json!({
            "event": "signed",
            "args": [{"n": 1}],
            "socket": {"id": sid, "role": "Authenticated", "userId": ALICE},
        })
    );

    let e = ack_error(&alice.ask("redirect", vec![json!(1)]).await);
    assert!(e.contains("307"), "a redirect is not followed: {e}");
    for event in ["big", "big-chunked"] {
        let e = ack_error(&alice.ask(event, vec![json!(1)]).await);
        assert!(e.contains("larger than 1024 bytes"), "{event}: {e}");
    }
}

#[tokio::test]
async fn webhook_calls_in_flight_are_capped_over_all_sockets() {
    let (target, _task, mut slow_calls) = limited_target().await;
    let mut opts = with_limits(|l| {
        l.webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
        l.webhook_max_in_flight = 1;
    });
    opts.events = vec![
        hook("slow", format!("http://{target}/slow")),
        hook("signed", format!("http://{target}/signed")),
    ];
    let server = serve_snapshot(opts).await;
    let alice = connected(server.addr, json!({ "token": jwt(ALICE) })).await;
    let public = connected(server.addr, json!({})).await;

    // Alice's call holds the only slot (the target never answers).
    alice
        .client
        .emit("slow", json!(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::timeout(WAIT, slow_calls.recv())
        .await
        .unwrap_or_else(|_| panic!("the slow webhook was not called within {WAIT:?}"));
    let e = ack_error(&public.ask("signed", vec![json!(1)]).await);
    assert!(e.contains("too many webhook calls in flight"), "{e}");
    let res = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = res.text().await.unwrap_or_default();
    assert!(
        text.contains("strapi_io_client_events_dropped_total{reason=\"webhooks_busy\"} 1"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Per-socket allowance
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_events_over_a_sockets_allowance_are_dropped_counted_and_acked() {
    let (target, _task, _slow) = limited_target().await;
    let mut opts = with_limits(|l| {
        l.webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
        l.client_events_per_second = 1;
        l.client_events_burst = 3;
    });
    opts.events = vec![
        hook("ask", format!("http://{target}/signed")),
        EventConfig {
            name: "chat".to_owned(),
            handler: EventHandler::Relay { rooms: None },
        },
    ];
    let server = serve_snapshot(opts).await;
    let token = jwt(ALICE);
    let mut alice = connected(server.addr, json!({ "token": token })).await;
    let alice2 = connected(server.addr, json!({ "token": token })).await;

    const SENT: u64 = 10;
    let started = Instant::now();
    let (mut answered, mut limited) = (0u64, 0u64);
    for i in 0..SENT {
        let ack = alice.ask("ask", vec![json!(i)]).await;
        match ack.as_slice() {
            [v] if v.get("body").is_some() => answered += 1,
            [v] if v["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("rate limited")) =>
            {
                limited += 1;
            }
            _ => panic!("unexpected ack {ack:?}"),
        }
    }
    let elapsed = started.elapsed().as_secs();
    assert_eq!(answered + limited, SENT);
    // The burst, plus at most one more per second that passed while asking.
    assert!(answered >= 3, "answered {answered}");
    assert!(
        answered <= 3 + elapsed + 1,
        "answered {answered} in {elapsed} s with burst 3 and 1/s"
    );
    assert!(limited > 0, "nothing limited in {elapsed} s");

    // Another socket has its own allowance; relays draw on the sender's.
    let res = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = res.text().await.unwrap_or_default();
    let needle =
        format!("strapi_io_client_events_dropped_total{{reason=\"rate_limited\"}} {limited}");
    assert!(text.contains(&needle), "{needle} missing from\n{text}");
    alice2
        .client
        .emit("chat", json!("from alice2"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A relay that would end with a string ends with `null`, so it is never taken for an offset.
    assert_eq!(
        alice.event("chat").await,
        vec![json!("from alice2"), Value::Null]
    );
    server.marker(1).await;
    alice.marker(1).await;
}
